"""The guard of fused kernels that are exact for 0/1 targets only (``ImplementationSwitch(binary_only=True)``).

Which kernels: the any-class family's (``any_class_fused``: the any-class target, the instance weight and
the ``labels`` denominator take "has a class" from the row sum, and focal's ℓ is written as softplus((1 − 2y)·z),
which is BCE only for y ∈ {0, 1}) and DB-Focal's (``db_fused``, the same focal form). The other fused kernels
(ASL, PR/APR/APAF/PG, DB with BCE, EM, EM + APL, Hill, SPLC, GR) are affine in y element by element, exactly
as their readable forms, so they compute soft targets (label smoothing) exactly and need no guard;
``tests/test_losses_soft_targets.py`` checks both claims for every option whose ``implementation`` is fused.

A guarded kernel given non-binary targets (anything but 0 and 1: 0.1/0.9 from label smoothing, NaN)
would return a plausible but wrong loss. Instead:

- on CPU the check costs nothing extra to act on: one cheap pass, y·(y − 1) ≠ 0 anywhere, and
  ``NonBinaryTargetsError`` at once, one line naming the loss and the fix (``implementation=autograd``);
- on an accelerator, reading that flag back would stall the host on every step. So the same flag stays a
  device tensor: the loss is replaced by NaN where it is set (``masked_fill``, no branch, no sync; the NaN
  carries no gradient), and the flag is OR-ed into ``loss.nonbinary_seen`` over calls. The trainer, which
  checks every loss value for finiteness anyway, asks ``loss.nonfinite_reason()`` once it has seen a NaN:
  that syncs, once, and returns the same one-line explanation if non-binary targets were seen.
"""

from __future__ import annotations

import torch

from mlc.errors import MlcError


class NonBinaryTargetsError(MlcError, ValueError):
    """A fused kernel written for 0/1 targets was given other values (soft targets, label smoothing)."""


def loss_name(loss: object) -> str:
    base = getattr(loss, "base", None)
    return type(loss).__name__ + (f"(base={base})" if base is not None else "")


def message(loss: object) -> str:
    return (f"{loss_name(loss)}: implementation=fused needs 0/1 targets, but got other values (soft targets, "
            f"e.g. label smoothing); use loss.implementation=autograd for soft targets")


def nonbinary(y: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor on y's device: some entry of y is neither 0 nor 1 (NaN and ±inf included)."""
    return torch.sub(y, 1.0).mul_(y).any()


def guard(loss: object, value: torch.Tensor, y: torch.Tensor, sync: bool | None = None) -> torch.Tensor:
    """``value`` if ``y`` is binary; else raise (``sync``, default: on CPU) or return NaN and record the flag.

    ``sync=False`` is the accelerator branch (callable on CPU tensors, e.g. in tests): no host-device sync.
    """
    flag = nonbinary(y)
    if sync is None:
        sync = y.device.type == "cpu"
    if sync:
        if bool(flag):
            raise NonBinaryTargetsError(message(loss))
        return value
    seen = getattr(loss, "nonbinary_seen", None)
    loss.nonbinary_seen = flag if seen is None else seen | flag
    return value.masked_fill(flag, float("nan"))


def reason(loss: object) -> str | None:
    """``message(loss)`` if ``guard``'s no-sync branch has seen non-binary targets (syncs once), else None."""
    seen = getattr(loss, "nonbinary_seen", None)
    return message(loss) if seen is not None and bool(seen) else None
