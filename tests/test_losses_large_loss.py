"""LL-R, LL-Ct, LL-Cp (Kim et al., CVPR 2022) against a float64 derivation from the paper and reference code.

The reference below works one element at a time with Python floats: AN's BCE (softplus(z) for an
unobserved label, softplus(−z) for an observed positive), the batch's B·C losses ranked with the observed
positives' counted as 0, the threshold = the k-th largest, and every unobserved entry at or above it
rejected (loss 0) or corrected (softplus(−z)); mean over B·C. The schedule is the reference's loop:
``clean_rate`` starts at 1 and loses Δ = delta_rel/100 after every epoch; k = ⌈B·C·(1 − clean_rate)⌉
(LL-R, LL-Ct) or ⌈B·C·Δ⌉ (LL-Cp), none while clean_rate = 1.
Targets: 1 = observed positive, 0 = unobserved.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlc.engine import checkpoint
from mlc.errors import ConfigError
from mlc.losses.large_loss import LargeLossModification, PermanentLargeLossCorrection
from tests.conftest import mlflow_runs, run_cli

C = 5
COUNTS = [150.0, 60.0, 25.0, 8.0, 3.0]
N = 40


# -- float64 reference -------------------------------------------------------------------------------

def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def reference_clean_rate(epoch: int, delta_rel: float) -> float:
    """The reference's P['clean_rate'] during 0-based ``epoch``: 1, minus Δ after each finished epoch."""
    clean_rate, delta = 1.0, delta_rel / 100
    for _ in range(epoch):
        clean_rate -= delta
    return clean_rate


def reference_k(b: int, c: int, epoch: int, delta_rel: float, permanent: bool = False) -> int:
    clean_rate = reference_clean_rate(epoch, delta_rel)
    if clean_rate == 1:
        return 0
    return math.ceil(b * c * (delta_rel / 100 if permanent else 1 - clean_rate))


def ref_chosen(z: np.ndarray, y: np.ndarray, k: int) -> set:
    """The unobserved (i, j) whose AN loss is at or above the k-th largest of the B·C ranked losses."""
    if k == 0:
        return set()
    ranked = sorted((softplus(z[i, j]) if y[i, j] == 0 else 0.0 for i, j in np.ndindex(z.shape)), reverse=True)
    threshold = ranked[k - 1]
    return {(i, j) for i, j in np.ndindex(z.shape) if y[i, j] == 0 and softplus(z[i, j]) >= threshold}


def ref_above(z: np.ndarray, y: np.ndarray, k: int) -> set:
    """Of ``ref_chosen``, those strictly above the threshold (what the reference LL-Cp keeps)."""
    chosen = ref_chosen(z, y, k)
    lowest = min((softplus(z[i, j]) for i, j in chosen), default=None)
    return {(i, j) for i, j in chosen if softplus(z[i, j]) > lowest}


def ref_loss(z: np.ndarray, y: np.ndarray, k: int, scheme: str) -> float:
    chosen = ref_chosen(z, y, k)
    total = 0.0
    for i, j in np.ndindex(z.shape):
        if y[i, j] == 1:
            total += softplus(-z[i, j])
        elif (i, j) in chosen:
            total += softplus(-z[i, j]) if scheme == "correct" else 0.0
        else:
            total += softplus(z[i, j])
    return total / z.size


# -- helpers -----------------------------------------------------------------------------------------

def batch(seed: int = 0, b: int = 10, c: int = C, scale: float = 3.0):
    """Logits, and single-positive targets with two all-unobserved rows and a column without positive."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = torch.zeros(b, c, dtype=torch.float64)
    y[torch.arange(2, b), torch.randint(0, c - 1, (b - 2,), generator=g)] = 1.0  # no positive in column c − 1
    y[3, (int(y[3].argmax()) + 1) % (c - 1)] = 1.0  # one row with two positives
    return z, y


def ll(scheme: str = "reject", classes: int = C, **kwargs) -> LargeLossModification:
    return LargeLossModification(COUNTS[:classes], scheme=scheme, **kwargs)


def cp(**kwargs) -> PermanentLargeLossCorrection:
    return PermanentLargeLossCorrection(COUNTS, num_samples=N, **kwargs)


def at(loss, epoch: int, max_epochs: int = 20):
    loss.set_epoch(epoch, max_epochs)
    return loss


def grad(loss, z, y, **kwargs) -> np.ndarray:
    x = z.clone().requires_grad_(True)
    loss(x, y, **kwargs).backward()
    return x.grad.numpy()


def as_set(mask: torch.Tensor) -> set:
    return {tuple(ij) for ij in mask.nonzero().tolist()}


# -- values and the selection ------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["reject", "correct"])
@pytest.mark.parametrize("epoch", [0, 1, 3, 7])
@pytest.mark.parametrize("delta_rel", [0.2, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_ll_r_and_ll_ct_match_reference(scheme, epoch, delta_rel, seed):
    z, y = batch(seed)
    k = reference_k(10, C, epoch, delta_rel)
    expected = ref_loss(z.numpy(), y.numpy(), k, scheme)
    assert at(ll(scheme, delta_rel=delta_rel), epoch)(z, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("epoch", [0, 1, 4])
@pytest.mark.parametrize("seed", [2, 3])
def test_ll_cp_step_matches_reference(epoch, seed):
    """One step (nothing kept yet): LL-Ct at k = ⌈B·C·Δ⌉ from epoch 1 on, whatever the epoch."""
    z, y = batch(seed)
    k = reference_k(10, C, epoch, 5.0, permanent=True)
    assert k == (0 if epoch == 0 else 3)
    loss = at(cp(delta_rel=5.0), epoch)
    assert loss(z, y, indices=torch.arange(10)).item() == pytest.approx(ref_loss(z.numpy(), y.numpy(), k, "correct"),
                                                                        rel=1e-12)


def hand_batch():
    """Known order of the unobserved losses softplus(z): z = 4 > 3 > 2 > 1 > …; the observed positive at
    z = −6 has the largest AN loss of all (softplus(6)) and must never be touched."""
    z = torch.tensor([[-6.0, 4.0, -3.0], [1.0, 3.0, -2.0], [2.0, -1.0, -4.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return z, y


@pytest.mark.parametrize("delta_rel,epoch,expected", [
    (10.0, 1, {(0, 1)}),                  # k = ⌈9·0.1⌉ = 1
    (10.0, 2, {(0, 1), (1, 1)}),          # k = ⌈9·0.2⌉ = 2
    (10.0, 3, {(0, 1), (1, 1), (2, 0)}),  # k = ⌈9·0.3⌉ = 3
    (10.0, 0, set()),                     # the first epoch: nothing
])
def test_the_largest_unobserved_losses_are_rejected_or_corrected(delta_rel, epoch, expected):
    z, y = hand_batch()
    p = 1 / (1 + np.exp(-z.numpy()))
    assert ref_chosen(z.numpy(), y.numpy(), reference_k(3, 3, epoch, delta_rel)) == expected
    rejected = grad(at(ll("reject", 3, delta_rel=delta_rel), epoch), z, y)
    corrected = grad(at(ll("correct", 3, delta_rel=delta_rel), epoch), z, y)
    for i, j in np.ndindex(3, 3):
        if y[i, j] == 1:  # the observed positive keeps −log p, in both schemes
            assert rejected[i, j] == corrected[i, j] == pytest.approx(-(1 - p[i, j]) / 9)
        elif (i, j) in expected:
            assert rejected[i, j] == 0.0 and corrected[i, j] == pytest.approx(-(1 - p[i, j]) / 9)
        else:
            assert rejected[i, j] == corrected[i, j] == pytest.approx(p[i, j] / 9)


def test_ties_at_the_threshold_are_all_modified():
    z = torch.tensor([[2.0, 2.0, -1.0, 5.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    loss = at(ll("reject", 4, delta_rel=25.0), 1)  # k = ⌈4·0.25⌉ = 1, but two entries share the top loss
    assert loss(z, y).item() == pytest.approx((softplus(-1.0) + softplus(-5.0)) / 4, rel=1e-12)  # both 2s: 0


def test_observed_positives_are_never_candidates_even_when_k_exceeds_the_unobserved():
    """k = ⌈6·0.5⌉ = 3 with 2 unobserved entries: the threshold is a 0 (an observed positive's rank value).
    The reference would then modify every entry, positives included; here only the unobserved ones."""
    z = torch.tensor([[-2.0, 1.0, 3.0], [0.5, -1.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    positives = softplus(2.0) + softplus(-3.0) + softplus(-0.5) + softplus(-2.0)
    assert at(ll("reject", 3, delta_rel=50.0), 1)(z, y).item() == pytest.approx(positives / 6, rel=1e-12)
    corrected = positives + softplus(-1.0) + softplus(1.0)
    assert at(ll("correct", 3, delta_rel=50.0), 1)(z, y).item() == pytest.approx(corrected / 6, rel=1e-12)
    x = z.clone().requires_grad_(True)
    at(ll("reject", 3, delta_rel=50.0), 1)(x, y).backward()
    assert (x.grad[y == 1] < 0).all()  # the positives still pull up


# -- the schedule --------------------------------------------------------------------------------------

@pytest.mark.parametrize("delta_rel", [0.1, 0.2, 0.3, 0.5, 5.0])
def test_schedule_is_the_reference_loop(delta_rel):
    loss, permanent = ll(delta_rel=delta_rel), cp(delta_rel=delta_rel)
    for b, c in ((16, 20), (16, 80), (10, 5), (1024, 17)):
        for epoch in range(12):
            loss.set_epoch(epoch, 12)
            permanent.set_epoch(epoch, 12)
            assert loss.clean_rate == reference_clean_rate(epoch, delta_rel)  # bit for bit
            assert loss.modified_count(b * c) == reference_k(b, c, epoch, delta_rel), (b, c, epoch)
            assert permanent.modified_count(b * c) == reference_k(b, c, epoch, delta_rel, permanent=True)


def test_schedule_cap_and_zero_delta():
    loss = ll(delta_rel=10.0, max_rate=0.25)
    for epoch, k in ((0, 0), (1, 5), (2, 10), (3, 13), (30, 13)):  # 50 entries: ⌈50·min(e·0.1, 0.25)⌉
        assert at(loss, epoch).modified_count(50) == k
    assert at(ll(delta_rel=10.0), 30).modified_count(50) == 50  # no cap: the whole batch, never more
    never = ll(delta_rel=0.0)
    assert all(at(never, e).modified_count(50) == 0 for e in range(5))
    assert all(at(cp(delta_rel=0.0), e).modified_count(50) == 0 for e in range(5))
    assert ll().modified_count(50) == 0  # before any set_epoch: the first epoch


# -- LL-Cp's memory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", ["above_threshold", "selected"])
def test_ll_cp_keeps_the_corrected_labels_of_the_step(keep):
    z, y = hand_batch()
    loss = PermanentLargeLossCorrection([1.0] * 3, num_samples=6, delta_rel=30.0, keep=keep)  # k = ⌈9·0.3⌉ = 3
    indices = torch.tensor([4, 0, 2])
    at(loss, 1)(z, y, indices=indices)
    chosen = {(0, 1), (1, 1), (2, 0)}
    kept = ref_above(z.numpy(), y.numpy(), 3) if keep == "above_threshold" else chosen
    assert kept == ({(0, 1), (1, 1)} if keep == "above_threshold" else chosen)
    assert as_set(loss.pending) == {(int(indices[i]), j) for i, j in kept}
    assert not loss.flipped.any()  # they become positives at the next epoch


def test_ll_cp_with_k_1_keeps_nothing_by_reference():
    z, y = hand_batch()
    loss = PermanentLargeLossCorrection([1.0] * 3, num_samples=6, delta_rel=10.0)  # k = 1: nothing strictly above
    at(loss, 1)(z, y, indices=torch.arange(3))
    assert not loss.pending.any()
    selected = PermanentLargeLossCorrection([1.0] * 3, num_samples=6, delta_rel=10.0, keep="selected")
    at(selected, 1)(z, y, indices=torch.arange(3))
    assert as_set(selected.pending) == {(0, 1)}


def test_ll_cp_flips_persist_for_the_same_examples_and_not_for_others():
    """Two blocks of ten examples with the same data. ``labels`` is the reference's label matrix of each block:
    the entries a step corrects become 1 there, seen by the loss from the next epoch on."""
    z, y = batch(5)
    loss = cp(delta_rel=5.0, keep="selected")  # k = ⌈50·0.05⌉ = 3 per step
    labels = {10: y.clone(), 20: y.clone()}

    def step(block: int, logits: torch.Tensor) -> set:
        value = loss(logits, y, indices=torch.arange(block, block + 10)).item()
        assert value == pytest.approx(ref_loss(logits.numpy(), labels[block].numpy(), 3, "correct"), rel=1e-12)
        return ref_chosen(logits.numpy(), labels[block].numpy(), 3)

    loss.set_epoch(1, 10)
    new = {10: step(10, z), 20: set()}  # block 20 is not seen in epoch 1
    assert len(new[10]) == 3 and as_set(loss.pending) == {(10 + i, j) for i, j in new[10]}
    assert step(10, z) == new[10]  # the same epoch again: not yet positives (pure within an epoch)
    first = new[10]
    z_later = z - 2.0  # the model moved: other entries have the largest losses now
    for epoch in (2, 3, 6):
        before = loss.flipped.clone()
        loss.set_epoch(epoch, 10)
        for block, flips in new.items():
            for i, j in flips:
                labels[block][i, j] = 1.0
        new = {block: step(block, z_later) for block in (10, 20)}
        assert (loss.flipped >= before).all()  # never undone
    kept = {(block + i, j) for block, m in labels.items() for i, j in as_set((m == 1) & (y == 0))}
    assert as_set(loss.flipped) == kept
    assert {(10 + i, j) for i, j in first} <= kept and not {(20 + i, j) for i, j in first} & kept - {
        (20 + i, j) for i, j in as_set((labels[20] == 1) & (y == 0))}
    assert not loss.flipped[:10].any() and not loss.flipped[30:].any()
    assert not (loss.flipped[10:30] & (y.repeat(2, 1) == 1)).any()  # only unobserved entries are ever flipped


def test_ll_cp_never_flips_an_observed_positive():
    z, y = hand_batch()
    loss = PermanentLargeLossCorrection([1.0] * 3, num_samples=3, delta_rel=100.0, keep="selected")  # k = B·C
    at(loss, 1)(z, y, indices=torch.arange(3))
    assert as_set(loss.pending) == {(i, j) for i, j in np.ndindex(3, 3) if y[i, j] == 0}


def test_ll_cp_resume_eval_state_and_indices():
    z, y = batch(6)
    loss = cp(delta_rel=5.0, keep="selected")
    at(loss, 1)(z, y, indices=torch.arange(10))
    pending = loss.pending.clone()
    loss.set_epoch(1, 20)  # resumed mid-epoch: the partial record stays
    assert torch.equal(loss.pending, pending) and not loss.flipped.any()
    loss.set_epoch(2, 20)
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    assert set(state) == {"flipped", "pending", "current_epoch"}
    assert torch.equal(state["flipped"], pending) and not state["pending"].any()
    loss.eval()  # validation loss: the step's correction, no memory read or written
    out = loss(z, y, indices=torch.arange(10))
    assert out.item() == pytest.approx(ref_loss(z.numpy(), y.numpy(), 3, "correct"), rel=1e-12)
    for key, tensor in loss.state_dict().items():
        assert torch.equal(tensor, state[key])
    fresh = cp(delta_rel=5.0, keep="selected")
    fresh.load_state_dict(state)  # checkpoint round trip
    assert torch.equal(fresh.flipped, loss.flipped) and int(fresh.current_epoch) == 2
    loss.train()
    with pytest.raises(ValueError, match="indices"):
        loss(z, y)
    assert PermanentLargeLossCorrection.needs_indices and PermanentLargeLossCorrection.cost_note
    assert not LargeLossModification.needs_indices and not ll().state_dict()  # LL-R/LL-Ct: DDP-safe, stateless


# -- finiteness ----------------------------------------------------------------------------------------

def all_three():
    return [("ll_r", at(ll("reject", delta_rel=5.0), 3)), ("ll_ct", at(ll("correct", delta_rel=5.0), 3)),
            ("ll_cp", at(cp(delta_rel=5.0, keep="selected"), 3))]


def call(name, loss, z, y):
    return loss(z, y, indices=torch.arange(len(z))) if name == "ll_cp" else loss(z, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_at_extreme_logits_and_on_all_negative_batches(dtype):
    z, y = batch(7)
    g = torch.Generator().manual_seed(8)
    extreme = torch.where(torch.rand(z.shape, generator=g) < 0.5, 100.0, -100.0)
    for name, loss in all_three():
        for logits, targets in ((extreme, y), (z, torch.zeros_like(y)), (extreme, torch.zeros_like(y))):
            x = logits.to(dtype).requires_grad_(True)
            out = call(name, loss, x, targets.to(dtype))
            out.backward()
            assert torch.isfinite(out) and torch.isfinite(x.grad).all(), name


def test_all_negative_batch_matches_reference():
    z, _ = batch(9)
    y = torch.zeros_like(z)
    for name, loss in all_three():
        k = 3 if name == "ll_cp" else reference_k(10, C, 3, 5.0)
        scheme = "reject" if name == "ll_r" else "correct"
        assert call(name, loss, z, y).item() == pytest.approx(ref_loss(z.numpy(), y.numpy(), k, scheme), rel=1e-12)


# -- settings ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build,key", [
    (lambda: ll("drop"), "scheme"), (lambda: ll(delta_rel=-0.1), "delta_rel"), (lambda: ll(delta_rel=101), "delta_rel"),
    (lambda: ll(max_rate=1.5), "max_rate"), (lambda: ll(reduction="median"), "reduction"),
    (lambda: cp(keep="all"), "keep"), (lambda: PermanentLargeLossCorrection(COUNTS, num_samples=0), "num_samples"),
])
def test_bad_settings_are_refused(build, key):
    with pytest.raises(ConfigError, match=key):
        build()


# -- end to end ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ll_cp_trains_two_epochs_through_the_cli(tmp_path, data_cache):
    """The real trainer: indices reach LL-Cp, the second epoch corrects and records labels, and the memory is
    in the checkpoint. (Every option's one-epoch run is in tests/test_losses_train.py; one epoch is AN only.)"""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    tiny = ["dataset.train_size=64", "dataset.val_size=32", "dataset.test_size=32", "trainer.batch_size=16"]
    result = run_cli(["loss=ll_cp", "loss.delta_rel=2", "trainer.max_epochs=2", *tiny], outputs, data_cache)
    (run,) = mlflow_runs(outputs)
    assert run.info.status == "FINISHED", f"{run.data.tags.get('mlc.error')}\n{result.stderr[-2000:]}"
    assert math.isfinite(run.data.metrics["train/loss"])
    (last,) = outputs.glob("runs/*/*/checkpoints/last.pt")
    state = checkpoint.load(last)["loss"]  # k = ⌈16·C·0.02⌉ > 1: the reference keeps some labels
    assert state["pending"].any() and not state["flipped"].any() and int(state["current_epoch"]) == 1
