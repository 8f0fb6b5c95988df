"""The trainer's GPU-grade options, each trained end to end on CPU: health checks instead of a host sync
per step, gradient accumulation, weight EMA, mid-epoch checkpoints with exact resume, compile,
channels_last and the matmul precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlc.data import SPLITS, DigitScenes
from mlc.engine import (
    Callback,
    Checkpointer,
    TrainData,
    Trainer,
    TrainerSettings,
    optimizer_steps_per_epoch,
    standard_callbacks,
)
from mlc.engine import checkpoint as ckpt
from mlc.engine.ema import WeightEma
from mlc.errors import ConfigError, NonFiniteLossError
from mlc.losses import MultiLabelLoss
from mlc.optim import constant

DATA = DigitScenes(train_size=96, val_size=40, test_size=40)
SPLIT_DATA = {s: DATA.load(s) for s in SPLITS}


class TinyConvNet(nn.Module):
    """Small enough to compile in seconds; no BatchNorm, so accumulated micro-batches equal one batch."""

    def __init__(self, num_classes: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class MeanBce(MultiLabelLoss):
    def forward(self, logits, targets):
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)


class Recorder(Callback):
    def __init__(self, stop_at_step: int | None = None):
        self.checks, self.stop_at_step = [], stop_at_step

    def on_health_check(self, trainer, window):
        self.checks.append((trainer.epoch, trainer.step_in_epoch, trainer.global_step, window))
        if trainer.global_step == self.stop_at_step:
            raise RuntimeError("simulated crash")


def make(run_dir, model=None, loss=None, callbacks=None, lr=0.05, **settings) -> Trainer:
    torch.manual_seed(0)
    model = model or TinyConvNet()
    s = TrainerSettings(**(dict(max_epochs=2, batch_size=16, eval_batch_size=40, device="cpu",
                                tune_thresholds=None) | settings))
    data = TrainData(SPLIT_DATA)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = constant(optimizer, steps_per_epoch=optimizer_steps_per_epoch(s, data.epoch_length()),
                         max_epochs=s.max_epochs)
    return Trainer(s, model, loss or MeanBce(), optimizer, scheduler, data, run_dir,
                   callbacks=standard_callbacks(s) if callbacks is None else callbacks)


def weights(trainer):
    return {k: v.clone() for k, v in trainer.module.state_dict().items()}


def test_the_loss_is_read_on_the_host_only_at_health_checks(tmp_path, monkeypatch):
    recorder = Recorder()
    trainer = make(tmp_path, callbacks=[recorder], log_every_n_steps=4, test_after_fit=False)
    checks = []
    real = Trainer._health_check
    monkeypatch.setattr(Trainer, "_health_check", lambda self: checks.append(self.step_in_epoch) or real(self))
    history = trainer.fit().history
    assert checks == [4, 6, 2, 6]  # 6 batches per epoch: every 4th optimizer step and at the end of each epoch
    assert [c[:3] for c in recorder.checks] == [(0, 4, 4), (1, 2, 8)]  # the hook runs for checks inside epochs
    # The epoch's train loss is still the exact mean over all of its samples.
    assert history[0]["train/loss"] > 0 and all(0 < c[3] < 1 for c in recorder.checks)


class NanAfter(MultiLabelLoss):
    """BCE, then NaN from the given call on; says why (as a fused kernel given soft targets does)."""

    def __init__(self, calls: int, reason: str | None = None):
        super().__init__()
        self.calls, self.left, self.reason = calls, calls, reason

    def forward(self, logits, targets):
        self.left -= 1
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return loss * float("nan") if self.left < 0 else loss

    def nonfinite_reason(self):
        return self.reason


def test_a_nan_loss_stops_at_the_next_check_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make(tmp_path, loss=NanAfter(8), log_every_n_steps=4)
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 2, step 1-2 \(checked every 4") as err:
        trainer.fit()
    assert "last good checkpoint" in str(err.value)
    assert ckpt.load(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1  # epoch 1's, untouched
    trainer = make(tmp_path / "b", loss=NanAfter(2, "targets were not binary"), log_every_n_steps=50)
    with pytest.raises(NonFiniteLossError, match="step 1-6 .*: no checkpoint was written; targets were not binary"):
        trainer.fit()


def test_accumulated_micro_batches_equal_one_large_batch(tmp_path):
    big = make(tmp_path / "big", callbacks=[], batch_size=16, max_epochs=1, test_after_fit=False)
    small = make(tmp_path / "small", callbacks=[], batch_size=8, accumulate_grad_batches=2, max_epochs=1,
                 test_after_fit=False)
    steps = []
    small.optimizer.register_step_post_hook(lambda *_: steps.append(1))
    big.fit()
    small.fit()
    assert small.steps_per_epoch == big.steps_per_epoch == 6 and len(steps) == 6 and small.global_step == 6
    # float32 sums of 8 + 8 against 16 differ in their last bits, and 6 SGD-with-momentum steps carry that to
    # ~2e-6 with one torch thread; an accumulation mistake (a sum instead of a mean: 2x the step) moves the
    # weights by 2e-2 and more (measured), far outside this tolerance.
    for (name, a), b in zip(weights(big).items(), weights(small).values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def test_a_shorter_last_accumulation_group_is_a_mean_over_its_batches(tmp_path):
    trainer = make(tmp_path, callbacks=[], batch_size=16, accumulate_grad_batches=4, max_epochs=1,
                   test_after_fit=False)
    steps = []
    trainer.optimizer.register_step_post_hook(lambda *_: steps.append(trainer.step_in_epoch))
    trainer.fit()
    assert steps == [4, 6] and trainer.steps_per_epoch == 2  # 6 batches: a group of 4, then one of 2


def test_weight_ema_follows_the_warmup_formula():
    live = nn.Linear(3, 2)
    ema = WeightEma(live, decay=0.99)
    expected = {k: v.clone() for k, v in live.state_dict().items()}
    for t in range(1, 6):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        d = min(0.99, t / (9 + t))  # (1 + updates) / (10 + updates), updates = t - 1 before this one
        for k, v in live.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-7)


def test_ema_weights_are_evaluated_checkpointed_and_picked_by_the_monitor(tmp_path):
    trainer = make(tmp_path, ema_decay=0.9, monitor="val_ema/map")
    result = trainer.fit()
    assert all("val_ema/map" in h and "val_ema/loss" in h for h in result.history)
    assert result.best_value == max(h["val_ema/map"] for h in result.history)
    best = ckpt.load(tmp_path / "checkpoints" / "best.pt")
    assert best["eval_weights"] == "ema" and best["ema"]["updates"] == 6 * best["epoch"]
    assert ckpt.eval_weights(best) is best["ema"]["weights"]
    assert not torch.equal(best["ema"]["weights"]["head.weight"], best["model"]["head.weight"])
    # The test metrics are the best EMA weights' own: scoring them afresh gives the same numbers.
    fresh = make(tmp_path / "again", ema_decay=0.9, monitor="val_ema/map")
    fresh.module.load_state_dict(best["ema"]["weights"])
    assert fresh.evaluate("test")["map"] == pytest.approx(result.test_metrics["map"], abs=1e-12)


@pytest.mark.parametrize("options", [{}, {"ema_decay": 0.9, "accumulate_grad_batches": 2}])
def test_mid_epoch_checkpoints_resume_bit_exactly(tmp_path, options):
    straight = make(tmp_path / "straight", test_after_fit=False, **options)
    straight.fit()
    crashed = make(tmp_path / "crashed", callbacks=[Checkpointer(every_n_steps=2), Recorder(stop_at_step=4)],
                   checkpoint_every_n_steps=2, log_every_n_steps=50, test_after_fit=False, **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    state = ckpt.load(tmp_path / "crashed" / "checkpoints" / "last.pt")
    per_step = options.get("accumulate_grad_batches", 1)
    epoch_steps = 6 // per_step
    assert (state["epoch"], state["global_step"]) == (4 // epoch_steps, 4)
    assert state["step_in_epoch"] == (4 % epoch_steps) * per_step  # mid-epoch (or at an epoch's start)
    resumed = make(tmp_path / "resumed", test_after_fit=False, **options)
    resumed.restore(state)
    resumed.fit()
    for (name, a), b in zip(weights(straight).items(), weights(resumed).values(), strict=True):
        assert torch.equal(a, b), name
    if "ema_decay" in options:
        for a, b in zip(straight.ema.module.state_dict().values(), resumed.ema.module.state_dict().values(),
                        strict=True):
            assert torch.equal(a, b)
    assert [h["train/loss"] for h in straight.history] == [h["train/loss"] for h in resumed.history]
    assert [h["val/map"] for h in straight.history] == [h["val/map"] for h in resumed.history]


def test_compile_trains_and_writes_plain_checkpoints(tmp_path):
    trainer = make(tmp_path, compile=True, max_epochs=1, tune_thresholds="f1")
    result = trainer.fit()
    assert result.test_metrics["map"] > 0
    state = ckpt.load(tmp_path / "checkpoints" / "best.pt")
    assert not any("_orig_mod" in k for k in state["model"])
    TinyConvNet().load_state_dict(state["model"])  # loads into the plain model


def test_channels_last_trains_to_the_same_weights(tmp_path):
    plain = make(tmp_path / "plain", max_epochs=1, test_after_fit=False, callbacks=[])
    nhwc = make(tmp_path / "nhwc", max_epochs=1, test_after_fit=False, callbacks=[], channels_last=True)
    assert nhwc.module.conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain.fit()
    nhwc.fit()
    for a, b in zip(weights(plain).values(), weights(nhwc).values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert nhwc.history[0]["val/map"] == pytest.approx(plain.history[0]["val/map"], abs=1e-3)


def test_matmul_precision_is_applied(tmp_path):
    before = torch.get_float32_matmul_precision()
    try:
        make(tmp_path, matmul_precision="high")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("monitor", "val_ema/map", "needs trainer.ema_decay"),
    ("ema_decay", 1.0, "must be in"),
    ("log_every_n_steps", 0, "must be an integer >= 1"),
    ("accumulate_grad_batches", 0, "must be an integer >= 1"),
    ("checkpoint_every_n_steps", -1, "must be an integer >= 0"),
    ("matmul_precision", "low", "highest, high, medium"),
    ("compile", "yes", "true or false"),
    ("channels_last", 1, "true or false"),
])
def test_bad_option_values_name_their_field(field, value, message):
    with pytest.raises(ConfigError, match=rf"{field}.*{message}"):
        TrainerSettings(**{field: value})


def test_resuming_with_ema_needs_a_checkpoint_with_ema(tmp_path):
    make(tmp_path / "a", max_epochs=1, test_after_fit=False).fit()
    state = ckpt.load(tmp_path / "a" / "checkpoints" / "last.pt")
    with pytest.raises(Exception, match="trained without EMA"):
        make(tmp_path / "b", ema_decay=0.9).restore(state)
