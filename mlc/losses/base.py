"""The contract every mlc loss follows, and the hooks the trainer calls.

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
- the loss's ``state_dict`` (persistent buffers and parameters) is saved in checkpoints and restored
  on resume. A loss with such per-instance state runs in one process only (the trainer refuses DDP).
Buffers that are derived from the statistics (class weights) should be ``persistent=False``.

The trainer puts the loss in ``train()`` mode for training steps and ``eval()`` mode when it computes
a validation/test loss (one call over the whole split, with *that* split's indices): a stateful loss
must then leave its training-set state alone and use its stateless form.
"""

from __future__ import annotations

import torch
from torch import nn

from mlc.errors import require

REDUCTIONS = ("labels", "instances", "mean", "sum")


class MultiLabelLoss(nn.Module):
    """Base class: shape checks, the epoch hook and the instance-index flag."""

    needs_indices: bool = False
    optimizer_options: dict = {}
    detached_terms: str = ""
    cost_note: str = ""

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        """Called by the trainer at the start of every epoch (0-based). Stateless losses ignore it."""

    @staticmethod
    def check_inputs(logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None) -> None:
        if logits.ndim != 2 or logits.shape != targets.shape:
            raise ValueError(f"expected logits and targets of the same shape (B, C); got "
                             f"{tuple(logits.shape)} and {tuple(targets.shape)}")
        if num_classes is not None and logits.shape[1] != num_classes:
            raise ValueError(f"the loss was built for {num_classes} classes (class_counts) but got "
                             f"logits with {logits.shape[1]}")


def check_reduction(reduction: str) -> None:
    require(reduction in REDUCTIONS, "reduction", reduction, f"must be one of {', '.join(REDUCTIONS)}")


def reduce_instances(weighted: torch.Tensor, targets: torch.Tensor, positive: torch.Tensor,
                     reduction: str) -> torch.Tensor:
    """Reduce per-instance losses ``weighted`` (B,) to a scalar.

    - ``labels`` (reference of seed 000/001): Σ / (#positive labels + #negative instances);
    - ``instances``: Σ / B;  ``mean``: Σ / (B·C);  ``sum``: Σ.
    """
    total = weighted.sum()
    if reduction == "labels":
        return total / (targets.sum() + (~positive).sum())
    if reduction == "instances":
        return total / targets.shape[0]
    if reduction == "mean":
        return total / targets.numel()
    return total
