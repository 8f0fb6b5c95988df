"""What the trainer expects of the objects it is given, as ``typing.Protocol``s.

A loss, a dataset or a tracker opts into a hook by having the method: these protocols name each hook
once, with its signature, so the trainer asks ``isinstance(loss, EpochScheduledLoss)`` instead of
scattering ``hasattr`` checks, and a type checker can verify a new loss against them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class EpochScheduledLoss(Protocol):
    """A loss whose behaviour follows a schedule over epochs (e.g. EM's warm-up, ROLE, DB's focal ramp)."""

    def set_epoch(self, epoch: int, max_epochs: int) -> None: ...


@runtime_checkable
class EpochSeededDataset(Protocol):
    """A dataset whose augmentation streams are seeded per epoch (exact resume mid-run)."""

    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class ExplainsNonFinite(Protocol):
    """A loss that can say why it returned a non-finite value (e.g. a fused kernel given soft targets).
    Called only after the trainer saw a non-finite loss, so it may synchronise with the device."""

    def nonfinite_reason(self) -> str | None: ...


def needs_indices(loss: object) -> bool:
    """Whether the loss wants each row's dataset index (``indices=``): per-instance state, e.g. ROLE."""
    return bool(getattr(loss, "needs_indices", False))


@runtime_checkable
class Tracker(Protocol):
    """Experiment tracking as the trainer uses it (``mlc.tracking.MLflowTracker``, ``NullTracker``)."""

    run_id: str | None

    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
