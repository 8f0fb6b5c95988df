"""Any-class presence likelihood loss J_any (Tissera et al., arXiv 2506.05721) and its baselines.

One module covers the six options of the paper's family, by switching pieces off:

=========  =======  =====  ========  ============================================
option     base     α      β         meaning
=========  =======  =====  ========  ============================================
bce        bce      0      None      Σ_c BCE, no class balancing
focal      focal    0      None      Σ_c focal
cb_bce     bce      0      0.9999    J^cb_bce   (the paper's baseline)
cb_focal   focal    0      0.9999    J^cb_focal
any_bce    bce      1      0.9999    J^cb_any|bce   (λ = 0.02)
any_focal  focal    1      0.9999    J^cb_any|focal
=========  =======  =====  ========  ============================================

Per instance i (LOSSES.md §1), with ℓ the base element loss:

    L_i = Σ_c ℓ(z_ic, y_ic) + α · ℓ(z_a,i, y_a,i)
    z_a = Σ_c v_c z_c / Σ_c v_c,   v_c = 1 (present) | λ (absent) | 1 (every class of a negative)
    y_a = 1 if any class is present else 0

σ(z_a) is exactly the normalised weighted geometric mean Π p^w / (Π p^w + Π (1−p)^w), w = v/Σv,
which is why it is computed as a mean of logits: stable for any logit. The instance weight s_i is the
sum of the class-balanced weights of the present classes (w_neg, of the "negative" pseudo-class, for
an instance with no class), and the reference reduction divides Σ_i s_i L_i by the number of
positive labels plus negative instances in the batch. Nothing is detached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mlc.errors import is_real, require
from mlc.losses.any_class_fused import FusedAnyClassLoss
from mlc.losses.base import ImplementationSwitch, MultiLabelLoss, check_reduction, reduce_instances
from mlc.losses.elementwise import bce_with_logits, focal_with_logits
from mlc.losses.weights import class_balanced_weights


class AnyClassPresenceLoss(ImplementationSwitch, MultiLabelLoss):
    """J^cb_any with BCE or focal base; α = 0 gives the (class-balanced) BCE/focal baselines.

    Args:
        class_counts: per-class positive counts of the training set (filled in by the trainer).
        negative_count: number of training instances with no class (filled in by the trainer).
        base: ``"bce"`` or ``"focal"``, the element loss of both terms.
        lam: λ ∈ [0, 1], weight of absent classes in the any-class logit of a positive instance (config key
            ``loss.lam``, the λ that sweeps, reports and the ``mlc.lam`` tag name; no other loss has a ``lam``).
        alpha: α ≥ 0, weight of the any-class term (0 switches it off).
        beta: β ∈ [0, 1) for class-balanced instance weights with the negative pseudo-class, or
            ``None`` for unweighted instances (s_i = 1).
        gamma: γ ≥ 0, the focal exponent (ignored for ``base="bce"``).
        reduction: ``labels`` (reference), ``instances``, ``mean`` or ``sum``.
        implementation: ``fused`` (default: closed-form backward, ``any_class_fused``; 0/1 targets only, see
            ``binary_targets``) or ``autograd`` (the readable form below; double backward, soft targets).
    """

    def __init__(self, class_counts: Sequence[float], negative_count: float, base: str = "bce",
                 lam: float = 0.02, alpha: float = 1.0, beta: float | None = 0.9999, gamma: float = 2.0,
                 reduction: str = "labels", implementation: str = "fused", **unused_stats: object):
        super().__init__()
        require(base in ("bce", "focal"), "base", base, "must be 'bce' or 'focal'")
        require(is_real(lam) and 0.0 <= lam <= 1.0, "lam", lam, "λ must be in [0, 1]")
        require(is_real(alpha) and alpha >= 0.0, "alpha", alpha, "α must be >= 0")
        require(beta is None or (is_real(beta) and 0.0 <= beta < 1.0), "beta", beta,
                "β must be in [0, 1), or null for no class balancing")
        require(is_real(gamma) and gamma >= 0.0, "gamma", gamma, "γ must be >= 0")
        require(is_real(negative_count) and negative_count >= 0, "negative_count", negative_count,
                "must be >= 0")
        check_reduction(reduction)
        self.select_implementation(implementation, binary_only=True)
        self.base, self.lam, self.alpha, self.beta, self.gamma = base, float(lam), float(alpha), beta, float(gamma)
        self.reduction = reduction
        self.num_classes = len(class_counts)
        if beta is None:
            weights = torch.ones(self.num_classes + 1, dtype=torch.float64)
            self.balanced = False
        else:
            counts = [*list(class_counts), negative_count]
            weights = torch.from_numpy(class_balanced_weights(counts, float(beta)))
            self.balanced = True
        # Last entry: the negative pseudo-class. Kept in float64; cast to the logits' dtype per call.
        self.register_buffer("class_weights", weights[:-1].clone(), persistent=False)
        self.register_buffer("negative_weight", weights[-1:].clone(), persistent=False)

    def element_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.base == "bce":
            return bce_with_logits(logits, targets)
        return focal_with_logits(logits, targets, self.gamma)

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weights = (self.class_weights.to(y.dtype), self.negative_weight.to(y.dtype)[0]) if self.balanced \
            else (None, None)
        return FusedAnyClassLoss.apply(logits, y, *weights, self.lam, self.alpha, self.gamma,
                                       self.base == "focal" and self.gamma != 0, self.reduction)

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        row_sums = y.sum(dim=1)
        positive = row_sums > 0
        per_instance = self.element_loss(logits, y).sum(dim=1)
        if self.alpha != 0.0:
            any_logit = self.any_class_logit(logits, y, positive)
            per_instance = per_instance + self.alpha * self.element_loss(any_logit, positive.to(y.dtype))
        if self.balanced:
            class_w = self.class_weights.to(y.dtype)
            instance_w = torch.where(positive, y @ class_w, self.negative_weight.to(y.dtype))
            per_instance = instance_w * per_instance
        return reduce_instances(per_instance, y, self.reduction, row_sums)

    def any_class_logit(self, logits: torch.Tensor, y: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """z_a: the v-weighted mean logit (v = 1 present / λ absent; all 1 for a negative instance)."""
        v = torch.where(positive.unsqueeze(1), y + self.lam * (1.0 - y), torch.ones_like(y))
        return (v * logits).sum(dim=1) / v.sum(dim=1)

    def extra_repr(self) -> str:
        return (f"base={self.base}, lam={self.lam}, alpha={self.alpha}, beta={self.beta}, "
                f"gamma={self.gamma}, reduction={self.reduction}, implementation={self.implementation}")

