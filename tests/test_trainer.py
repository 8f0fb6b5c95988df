"""The trainer in-process: gradient clipping, best-checkpoint selection, and the loss hooks."""

from __future__ import annotations

import pytest
import torch

from mlc.data import SPLITS, DigitScenes
from mlc.engine import DistContext, TrainData, Trainer, TrainerSettings, optimizer_steps_per_epoch, standard_callbacks
from mlc.engine import checkpoint as ckpt
from mlc.errors import MlcError
from mlc.losses import AnyClassPresenceLoss, MultiLabelLoss
from mlc.models import create_backbone
from mlc.optim import param_groups, warmup_cosine


def make_trainer(run_dir, loss_fn=None, lr=3e-3, callbacks=None, train_size=96, **settings) -> Trainer:
    source = DigitScenes(train_size=train_size, val_size=40, test_size=40)
    datasets = {s: source.load(s) for s in SPLITS}
    stats = datasets["train"].stats()
    torch.manual_seed(0)
    model = create_backbone("mlc_cnn_small", num_classes=6)
    loss_fn = loss_fn or AnyClassPresenceLoss(stats.class_counts, stats.negative_count)
    s = TrainerSettings(**(dict(max_epochs=2, batch_size=16, eval_batch_size=32, device="cpu") | settings))
    data = TrainData(datasets)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-4), lr=lr)
    loss_params = list(loss_fn.parameters())
    if loss_params:
        optimizer.add_param_group({"params": loss_params, "weight_decay": 0.0, **loss_fn.optimizer_options})
    scheduler = warmup_cosine(optimizer, steps_per_epoch=optimizer_steps_per_epoch(s, data.epoch_length()),
                              max_epochs=s.max_epochs, warmup_epochs=0.5)
    return Trainer(s, model, loss_fn, optimizer, scheduler, data, run_dir,
                   callbacks=standard_callbacks(s) if callbacks is None else callbacks)


def test_gradient_clipping_bounds_the_update_norm(tmp_path):
    trainer = make_trainer(tmp_path, lr=0.5, grad_clip_norm=0.05, max_epochs=1)
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(record)
    trainer.fit()
    assert len(norms) == trainer.steps_per_epoch and max(norms) <= 0.05 * (1 + 1e-5)


def test_best_checkpoint_follows_the_monitor_in_min_mode(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=3, monitor="val/loss", monitor_mode="min", test_after_fit=False)
    result = trainer.fit()
    losses = [h["val/loss"] for h in result.history]
    assert result.best_value == min(losses) and result.best_epoch == losses.index(min(losses)) + 1
    best = ckpt.load(tmp_path / "checkpoints" / "best.pt")
    last = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert best["epoch"] == result.best_epoch and last["epoch"] == 3
    assert {"optimizer", "scheduler", "scaler", "rng", "history"} <= set(last)


class RecordingLoss(MultiLabelLoss):
    """BCE that records the trainer's hooks: the epoch schedule and the instance indices."""

    needs_indices = True

    def __init__(self):
        super().__init__()
        self.epochs, self.seen, self.eval_calls = [], [], 0

    def set_epoch(self, epoch, max_epochs):
        self.epochs.append((epoch, max_epochs))

    def forward(self, logits, targets, indices=None):
        if self.training:
            self.seen.append((indices.clone(), targets.clone()))
        else:
            self.eval_calls += 1
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)


def test_loss_hooks_receive_the_epoch_and_the_instance_indices(tmp_path):
    loss = RecordingLoss()
    trainer = make_trainer(tmp_path, loss_fn=loss, max_epochs=2, test_after_fit=False)
    trainer.fit()
    assert loss.epochs == [(0, 2), (1, 2)]
    train = trainer.data.splits["train"]
    assert loss.eval_calls == 2  # one validation loss per epoch, in eval mode
    train_calls = loss.seen
    for indices, targets in train_calls:  # every row's target is the dataset's target at that index
        assert torch.equal(targets, torch.from_numpy(train.targets[indices.numpy()]).float())
    first_epoch = torch.cat([i for i, _ in train_calls[: trainer.steps_per_epoch]])
    assert sorted(first_epoch.tolist()) == list(range(len(train)))  # a permutation of the training set


class LearnedEstimateLoss(MultiLabelLoss):
    """A stateful loss: learns one label estimate per training instance (like ROLE), counts its epochs."""

    needs_indices = True
    optimizer_options = {"lr": 0.5}

    def __init__(self, num_samples, num_classes):
        super().__init__()
        self.estimates = torch.nn.Parameter(torch.zeros(num_samples, num_classes))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def set_epoch(self, epoch, max_epochs):
        self.epochs_seen.fill_(epoch)

    def forward(self, logits, targets, indices=None):
        if not self.training:  # validation loss: the state belongs to the training split
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        soft = torch.sigmoid(self.estimates[indices])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, soft.detach()) + \
            torch.nn.functional.binary_cross_entropy_with_logits(self.estimates[indices], targets)


def test_stateful_loss_is_optimised_checkpointed_and_restored(tmp_path):
    loss = LearnedEstimateLoss(96, 6)
    trainer = make_trainer(tmp_path, loss_fn=loss, max_epochs=2, test_after_fit=False)
    group = trainer.optimizer.param_groups[-1]
    assert group["initial_lr"] == 0.5 and group["weight_decay"] == 0
    trainer.fit()
    assert loss.estimates.abs().sum() > 0  # learned
    saved = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    torch.testing.assert_close(saved["loss"]["estimates"], loss.estimates.detach())
    assert int(saved["loss"]["epochs_seen"]) == 1
    fresh = make_trainer(tmp_path / "other", loss_fn=LearnedEstimateLoss(96, 6), max_epochs=2)
    fresh.restore(saved)
    torch.testing.assert_close(fresh.loss_fn.estimates, loss.estimates)


def test_stateful_loss_refuses_ddp(tmp_path):
    source = DigitScenes(train_size=96, val_size=40, test_size=40)
    datasets = {s: source.load(s) for s in SPLITS}
    loss = LearnedEstimateLoss(96, 6)
    model = create_backbone("mlc_cnn_small", num_classes=6)
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    with pytest.raises(MlcError, match="per-instance state"):
        Trainer(TrainerSettings(max_epochs=1, batch_size=16, device="cpu"), model, loss, optimizer,
                warmup_cosine(optimizer, steps_per_epoch=6, max_epochs=1), TrainData(datasets), tmp_path,
                dist=DistContext(rank=0, world_size=2), loss_name="role")
