"""Fused kernels on soft targets (label smoothing, 0.1/0.9): exact, or refused in one clear line.

Every ``conf/loss/*.yaml`` option whose ``implementation`` is ``fused`` is checked on soft targets against
its own readable form (``implementation=autograd``, which defines the loss for any target in [0, 1]):
either the values and gradients agree to float64 rounding, or (the kernels written for 0/1 targets, see
``mlc/losses/binary_targets.py``) the fused call raises ``NonBinaryTargetsError`` on CPU. On an accelerator
the guard must not synchronise: its no-sync branch (callable on CPU) turns the loss into NaN, records the
flag on the loss, and ``nonfinite_reason()`` gives the same one-line explanation.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hydra.utils import instantiate

from mlc.errors import MlcError
from mlc.losses import binary_targets
from mlc.losses.any_class import AnyClassPresenceLoss
from mlc.losses.binary_targets import NonBinaryTargetsError
from mlc.losses.db import DistributionBalancedLoss
from tests.conftest import ROOT, compose

COUNTS = [150.0, 60.0, 25.0, 8.0, 3.0]
NEGATIVES, N = 400.0, 600
OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml"))
FUSED_OPTIONS = [o for o in OPTIONS if compose([f"loss={o}"]).loss.get("implementation") == "fused"]
# The kernels that assume 0/1 targets (the any-class family's and DB-Focal's); every other fused kernel is exact.
GUARDED = {"bce", "focal", "cb_bce", "cb_focal", "any_bce", "any_focal", "db_focal"}
MESSAGE = r"implementation=fused needs 0/1 targets.*use loss\.implementation=autograd for soft targets"


def build(option: str, implementation: str, dtype=torch.float64):
    cfg = compose([f"loss={option}", f"loss.implementation={implementation}"]).loss
    loss = instantiate(cfg, class_counts=COUNTS, negative_count=NEGATIVES, num_samples=N).to(dtype)
    loss.set_epoch(1, 4)
    return loss


def call(loss, z, y):
    return loss(z, y, **({"indices": torch.arange(len(z))} if loss.needs_indices else {}))


def value_and_grad(loss, z, y):
    x = z.clone().requires_grad_(True)
    out = call(loss, x, y)
    out.backward()
    return out.item(), x.grad


def batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(16, len(COUNTS), generator=g, dtype=torch.float64) * 2.5).to(dtype)
    y = (torch.rand(16, len(COUNTS), generator=g) < 0.35).to(dtype)
    y[0] = 0
    y[1] = 1
    return z, y


def smooth(y: torch.Tensor, ls: float = 0.1) -> torch.Tensor:
    return y * (1 - 2 * ls) + ls  # 1 -> 0.9, 0 -> 0.1


def test_every_fused_option_is_covered():
    assert set(FUSED_OPTIONS) >= GUARDED and len(FUSED_OPTIONS) >= 18


@pytest.mark.parametrize("option", FUSED_OPTIONS)
def test_fused_on_soft_targets_is_exact_or_refused_on_cpu(option):
    z, y = batch()
    soft = smooth(y)
    fused, readable = build(option, "fused"), build(option, "autograd")
    expected_value, expected_grad = value_and_grad(readable, z, soft)
    assert torch.isfinite(expected_grad).all()  # the readable form takes soft targets
    if option in GUARDED:
        with pytest.raises(NonBinaryTargetsError, match=MESSAGE) as err:
            call(fused, z.clone().requires_grad_(True), soft)
        assert isinstance(err.value, MlcError) and "\n" not in str(err.value)
        assert str(err.value).startswith(type(fused).__name__)
    else:
        value, grad = value_and_grad(fused, z, soft)
        assert value == pytest.approx(expected_value, rel=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-14)
    # binary targets: both implementations still agree, and nothing is refused or recorded
    value, grad = value_and_grad(fused, z, y)
    binary_value, binary_grad = value_and_grad(readable, z, y)
    assert value == pytest.approx(binary_value, rel=1e-12)
    torch.testing.assert_close(grad, binary_grad, rtol=1e-10, atol=1e-14)
    assert fused.nonfinite_reason() is None


@pytest.mark.parametrize("option", FUSED_OPTIONS)
def test_fused_on_soft_targets_in_float32(option):
    z, y = batch(torch.float32, seed=1)
    fused, readable = build(option, "fused", torch.float32), build(option, "autograd", torch.float32)
    if option in GUARDED:
        with pytest.raises(NonBinaryTargetsError):
            call(fused, z, smooth(y))
    else:
        assert call(fused, z, smooth(y)).item() == pytest.approx(call(readable, z, smooth(y)).item(), rel=1e-5)


@pytest.mark.parametrize("targets", ["half", "nan", "two", "minus_one"])
def test_any_non_binary_value_is_refused(targets):
    z, y = batch()
    bad = {"half": 0.5, "nan": float("nan"), "two": 2.0, "minus_one": -1.0}[targets]
    y[3, 2] = bad
    with pytest.raises(NonBinaryTargetsError, match=MESSAGE):
        AnyClassPresenceLoss(COUNTS, NEGATIVES)(z, y)


def test_guard_follows_the_kernel_not_the_class():
    """DB with BCE base is exact on soft targets (no guard); DB-Focal's kernel needs 0/1 targets."""
    z, y = batch()
    assert not DistributionBalancedLoss(COUNTS, N, base="bce").fused_binary_only
    assert DistributionBalancedLoss(COUNTS, N, base="focal").fused_binary_only
    assert not DistributionBalancedLoss(COUNTS, N, base="focal", implementation="autograd").fused_binary_only
    assert torch.isfinite(DistributionBalancedLoss(COUNTS, N, base="bce")(z, smooth(y)))


# --- the accelerator branch (no host-device sync), exercised on CPU ---------------------------------------------

def test_no_sync_branch_gives_nan_and_explains_it():
    z, y = batch()
    loss = AnyClassPresenceLoss(COUNTS, NEGATIVES)
    value = loss.fused_forward(z, y)
    assert loss.nonfinite_reason() is None
    same = binary_targets.guard(loss, value, y, sync=False)
    assert torch.equal(same, value) and loss.nonfinite_reason() is None    # binary: untouched, flag clear
    assert loss.nonbinary_seen.dtype == torch.bool and loss.nonbinary_seen.ndim == 0
    poisoned = binary_targets.guard(loss, loss.fused_forward(z, smooth(y)), smooth(y), sync=False)
    assert torch.isnan(poisoned)
    reason = loss.nonfinite_reason()
    assert reason == binary_targets.message(loss) and "\n" not in reason
    assert reason.startswith("AnyClassPresenceLoss(base=bce): implementation=fused needs 0/1 targets")
    binary_targets.guard(loss, value, y, sync=False)                         # later binary batches: still seen
    assert loss.nonfinite_reason() == reason


def test_no_sync_branch_through_the_loss(monkeypatch):
    """The loss as the trainer calls it, with the guard in its accelerator mode: NaN value, no gradient, a reason."""
    monkeypatch.setattr(binary_targets, "guard", functools.partial(binary_targets.guard, sync=False))
    z, y = batch()
    for loss in (AnyClassPresenceLoss(COUNTS, NEGATIVES, base="focal"), DistributionBalancedLoss(COUNTS, N)):
        x = z.clone().requires_grad_(True)
        good = loss(x, y)
        assert torch.isfinite(good) and loss.nonfinite_reason() is None
        bad = loss(x, smooth(y))
        bad.backward()
        assert torch.isnan(bad) and torch.equal(x.grad, torch.zeros_like(x))  # the NaN carries no gradient
        assert loss.nonfinite_reason() == binary_targets.message(loss)
        assert "implementation=autograd" in loss.nonfinite_reason()


def test_losses_without_a_guard_have_no_reason():
    loss = instantiate(compose(["loss=asl"]).loss)
    z, y = batch()
    loss(z, smooth(y))
    assert loss.nonfinite_reason() is None
    assert instantiate(compose(["loss=ldam"]).loss, class_counts=COUNTS).nonfinite_reason() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_guard_does_not_synchronise():
    device = torch.device("cuda")
    z, y = (t.to(device) for t in batch())
    loss = AnyClassPresenceLoss(COUNTS, NEGATIVES, base="focal").to(device)
    x = z.clone().requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync inside the loss raises
    try:
        good = loss(x, y)
        bad = loss(x, smooth(y))
        bad.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(good) and torch.isnan(bad)
    assert loss.nonfinite_reason() == binary_targets.message(loss)
    reference = AnyClassPresenceLoss(COUNTS, NEGATIVES, base="focal", implementation="autograd").to(device)
    assert good.item() == pytest.approx(reference(z, y).item(), rel=1e-12)
