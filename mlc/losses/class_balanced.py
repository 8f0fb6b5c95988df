"""Class-balanced loss (Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR
2019, arXiv 1901.05555) in its two multi-label forms.

Class weights w_c = (1 − β)/(1 − β^{n_c}), normalised to sum to C (``class_balanced_weights``), on a
BCE or focal element loss ℓ; focal is ``balance``·(1 − p_t)^γ·BCE, the constant factor of the DB paper's
code, which runs its CB-focal baseline with ``balance_param`` 2 (default 1: plain focal). The single-label
paper weights an instance by its class; multi-label data has no single official variant, so two are offered:

- ``ClassBalancedPerClassLoss`` (``cb_per_class``): column weights, L_i = Σ_c w_c ℓ(z_ic, y_ic) —
  every entry of class c, positive or negative, is weighted by w_c.
- ``ClassBalancedPerInstanceLoss`` (``cb_per_instance``): instance weights, L_i = s_i Σ_c ℓ(z_ic, y_ic)
  with s_i the mean (or the sum) of w_c over the classes present in i. The formula gives a negative
  instance (no class present) no weight at all; here it gets ``negative_weight`` (default 1, the mean
  class weight; 0 reproduces "ignore negatives").

Both differ from mlc's ``cb_bce``/``cb_focal`` (the any-class paper's variant), which add a negative
pseudo-class with its own effective number n_neg to the normalisation and give negative instances
its weight: here the weights are normalised over the C real classes only and n_neg plays no part.
Reduction (default, as mlc's J): Σ_i L_i / (#positive labels + #negative instances in the batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mlc.errors import is_real, require
from mlc.losses.base import MultiLabelLoss, check_reduction, reduce_instances
from mlc.losses.elementwise import bce_with_logits, focal_with_logits
from mlc.losses.weights import class_balanced_weights


class _ClassBalancedLoss(MultiLabelLoss):
    """Shared pieces: validation, the class weights (float64, cast per call) and the element loss.

    Args (of both forms):
        class_counts: per-class positive counts of the training set (filled in by the trainer).
        base: ``"bce"`` or ``"focal"``.
        beta: β ∈ [0, 1) (reference 0.9999; 0 gives uniform weights).
        gamma: γ ≥ 0, focal exponent (focal base only).
        balance: constant factor > 0 of the focal loss (focal base only; 1 = plain focal, the DB paper's
            code uses 2 for its CB-focal baseline).
        reduction: ``labels`` (default), ``instances`` (÷B), ``mean`` (÷B·C) or ``sum``.
    """

    def __init__(self, class_counts: Sequence[float], base: str, beta: float, gamma: float, balance: float,
                 reduction: str):
        super().__init__()
        require(base in ("bce", "focal"), "base", base, "must be 'bce' or 'focal'")
        require(is_real(beta) and 0.0 <= beta < 1.0, "beta", beta, "β must be in [0, 1)")
        require(is_real(gamma) and gamma >= 0.0, "gamma", gamma, "γ must be >= 0")
        require(is_real(balance) and balance > 0.0, "balance", balance, "must be > 0")
        check_reduction(reduction)
        self.base, self.beta, self.gamma, self.reduction = base, float(beta), float(gamma), reduction
        self.balance = float(balance)
        weights = torch.from_numpy(class_balanced_weights(list(class_counts), float(beta)))
        self.num_classes = len(weights)
        self.register_buffer("class_weights", weights, persistent=False)

    def element_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.base == "bce":
            return bce_with_logits(logits, y)
        focal = focal_with_logits(logits, y, self.gamma)
        return focal if self.balance == 1.0 else self.balance * focal

    def extra_repr(self) -> str:
        return (f"base={self.base}, beta={self.beta}, gamma={self.gamma}, balance={self.balance}, "
                f"reduction={self.reduction}")


class ClassBalancedPerClassLoss(_ClassBalancedLoss):
    """L_i = Σ_c w_c ℓ(z_ic, y_ic): class-balanced column weights (arguments: see ``_ClassBalancedLoss``)."""

    def __init__(self, class_counts: Sequence[float], base: str = "bce", beta: float = 0.9999, gamma: float = 2.0,
                 balance: float = 1.0, reduction: str = "labels", **unused_stats: object):
        super().__init__(class_counts, base, beta, gamma, balance, reduction)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_inputs(logits, targets, self.num_classes)
        y = targets.to(logits.dtype)
        per_instance = self.element_loss(logits, y) @ self.class_weights.to(y.dtype)
        return reduce_instances(per_instance, y, self.reduction)


class ClassBalancedPerInstanceLoss(_ClassBalancedLoss):
    """L_i = s_i Σ_c ℓ(z_ic, y_ic), s_i = mean or sum of w_c over the present classes.

    Args (besides those of ``_ClassBalancedLoss``):
        instance_weight: ``"mean"`` or ``"sum"`` of the present classes' weights.
        negative_weight: s_i ≥ 0 of an instance with no class (1 = the mean class weight).
    """

    def __init__(self, class_counts: Sequence[float], base: str = "bce", beta: float = 0.9999, gamma: float = 2.0,
                 balance: float = 1.0, instance_weight: str = "mean", negative_weight: float = 1.0,
                 reduction: str = "labels", **unused_stats: object):
        super().__init__(class_counts, base, beta, gamma, balance, reduction)
        require(instance_weight in ("mean", "sum"), "instance_weight", instance_weight, "must be 'mean' or 'sum'")
        require(is_real(negative_weight) and negative_weight >= 0, "negative_weight", negative_weight,
                "must be >= 0")
        self.instance_weight, self.negative_weight = instance_weight, float(negative_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_inputs(logits, targets, self.num_classes)
        y = targets.to(logits.dtype)
        present = y.sum(dim=1)
        positive = present > 0
        weight = y @ self.class_weights.to(y.dtype)
        if self.instance_weight == "mean":
            weight = weight / present.clamp(min=1.0)
        weight = torch.where(positive, weight, self.negative_weight)
        return reduce_instances(weight * self.element_loss(logits, y).sum(dim=1), y, self.reduction, present)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, instance_weight={self.instance_weight}, "
                f"negative_weight={self.negative_weight}")
