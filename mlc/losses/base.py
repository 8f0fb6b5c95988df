"""The contract every mlc loss follows, the hooks the trainer calls, and the pieces the losses share.

A loss is a ``torch.nn.Module`` built from config with ``hydra.utils.instantiate``. The trainer adds
the training-set statistics as keyword arguments (``class_counts``: per-class positive counts,
``negative_count``: number of instances with no class, ``num_samples``: training-set size); a loss
takes those it needs and ignores the rest through ``**unused_stats``.

``forward(logits, targets)`` returns a scalar. Optional hooks cover losses that need more:
- ``set_epoch(epoch, max_epochs)`` is called by the trainer before every epoch (schedules);
- ``needs_indices = True`` makes the trainer pass ``indices=`` (dataset row of each instance);
- learnable ``nn.Parameter``s of the loss (ROLE's label estimates) are optimised with the model, in
  their own parameter group (no weight decay; ``optimizer_options``, e.g. ``{"lr": 0.1}``, overrides);
- ``detached_terms = "<which>"`` declares factors computed without gradient on purpose (a reference
  "no-grad" focusing weight): the generic finite-difference gradient check skips such a loss, whose
  own tests then compare autograd with a closed form that holds those factors constant;
- ``nonfinite_reason()`` is for the trainer to call once it has seen a non-finite loss: a one-line
  explanation when the loss itself knows why (a fused kernel given soft targets on CUDA, see
  ``binary_targets``), else ``None``. It may synchronise with the device;
- the loss's ``state_dict`` (persistent buffers and parameters) is saved in checkpoints and restored
  on resume. A loss with such per-instance state runs in one process only (the trainer refuses DDP).
Buffers that are derived from the statistics (class weights) should be ``persistent=False``.

The trainer puts the loss in ``train()`` mode for training steps and ``eval()`` mode when it computes
a validation/test loss (one call over the whole split, with *that* split's indices): a stateful loss
must then leave its training-set state alone and use its stateless form.

Shared here: the one reduction rule (``reduction_denominator``, ``reduce_instances``; the fused kernels
divide their sums by the same denominator) and the one ``implementation`` switch of the losses that
have a fused kernel (``ImplementationSwitch``).
"""

from __future__ import annotations

import torch
from torch import nn

from mlc.errors import require
from mlc.losses import binary_targets

REDUCTIONS = ("labels", "instances", "mean", "sum")
IMPLEMENTATIONS = ("fused", "autograd")


class MultiLabelLoss(nn.Module):
    """Base class: shape checks, the epoch hook, the instance-index flag and the non-finite hook."""

    needs_indices: bool = False
    optimizer_options: dict = {}
    detached_terms: str = ""
    cost_note: str = ""

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        """Called by the trainer at the start of every epoch (0-based). Stateless losses ignore it."""

    def nonfinite_reason(self) -> str | None:
        """Why the loss became non-finite, when the loss knows (see the module docstring); else None."""
        return None

    @staticmethod
    def check_inputs(logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None) -> None:
        if logits.ndim != 2 or logits.shape != targets.shape:
            raise ValueError(f"expected logits and targets of the same shape (B, C); got "
                             f"{tuple(logits.shape)} and {tuple(targets.shape)}")
        if num_classes is not None and logits.shape[1] != num_classes:
            raise ValueError(f"the loss was built for {num_classes} classes (class_counts) but got "
                             f"logits with {logits.shape[1]}")


class ImplementationSwitch:
    """Mixin (before the ``MultiLabelLoss`` base) of a loss with two implementations of the same math.

    ``fused``: a ``torch.autograd.Function`` with a closed-form backward (fast, no double backward);
    ``autograd``: the readable form (double backward, the reference the fused kernel is tested against).
    The loss calls ``select_implementation`` in its constructor and defines ``fused_forward(logits, y, *extra)``
    and ``autograd_forward(logits, y, *extra)``; ``forward`` (or the loss's own, through ``dispatch``) runs one.

    A kernel written for 0/1 targets only (``binary_only=True``) is guarded by ``binary_targets.guard``:
    non-binary targets raise at once on CPU and make the loss NaN on an accelerator (no host-device
    sync), and ``nonfinite_reason`` then says why.
    """

    implementation: str = "autograd"
    fused_binary_only: bool = False
    nonbinary_seen: torch.Tensor | None = None  # accelerator only: a device flag, OR-ed over calls

    def select_implementation(self, implementation: str, binary_only: bool = False) -> None:
        require(implementation in IMPLEMENTATIONS, "implementation", implementation,
                f"must be one of {', '.join(IMPLEMENTATIONS)}")
        self.implementation = implementation
        self.fused_binary_only = binary_only and implementation == "fused"
        self.nonbinary_seen = None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_inputs(logits, targets, getattr(self, "num_classes", None))
        return self.dispatch(logits, targets.to(logits.dtype))

    def dispatch(self, logits: torch.Tensor, y: torch.Tensor, *extra) -> torch.Tensor:
        """The loss through the selected implementation (``y``: the targets in the logits' dtype)."""
        if self.implementation != "fused":
            return self.autograd_forward(logits, y, *extra)
        value = self.fused_forward(logits, y, *extra)
        return binary_targets.guard(self, value, y) if self.fused_binary_only else value

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor, *extra) -> torch.Tensor:
        raise NotImplementedError

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor, *extra) -> torch.Tensor:
        raise NotImplementedError

    def nonfinite_reason(self) -> str | None:
        """The one-line explanation if non-binary targets reached the binary-only fused kernel (syncs)."""
        return binary_targets.reason(self)


def check_reduction(reduction: str) -> None:
    require(reduction in REDUCTIONS, "reduction", reduction, f"must be one of {', '.join(REDUCTIONS)}")


def reduction_denominator(targets: torch.Tensor, reduction: str,
                          row_sums: torch.Tensor | None = None) -> torch.Tensor | int:
    """The divisor of the sum of all (weighted) element losses, for every loss and both implementations.

    - ``labels`` (reference of seed 000/001): #positive labels + #negative instances = Σ_i (n_i if n_i > 0
      else 1), n_i = Σ_c y_ic (``row_sums``, if the caller has them already);
    - ``instances``: B;  ``mean``: B·C;  ``sum``: 1.
    """
    if reduction == "labels":
        rows = targets.sum(dim=1) if row_sums is None else row_sums
        return torch.where(rows > 0, rows, 1.0).sum()
    if reduction == "instances":
        return targets.shape[0]
    if reduction == "mean":
        return targets.numel()
    return 1


def reduce_instances(per_instance: torch.Tensor, targets: torch.Tensor, reduction: str,
                     row_sums: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i of the per-instance losses (B,) divided by ``reduction_denominator``."""
    return per_instance.sum() / reduction_denominator(targets, reduction, row_sums)
