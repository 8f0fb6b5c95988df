"""Distribution-Balanced loss, DB (Wu et al., "Distribution-Balanced Loss for Multi-Label Classification
in Long-Tailed Datasets", ECCV 2020, arXiv 2007.09654).

Two pieces on top of BCE (or focal):

- Re-balanced weighting. Class-aware re-sampling (``sampler=class_aware``) draws instance i once per
  present class, so its sampling frequency is Σ_{j present in i} 1/n_j against 1/n_k for the class k
  the sampler meant: r_ik = (1/n_k) / Σ_{j present in i} (1/n_j), the same for every column k of i,
  smoothed to r̂_ik = a + σ(b·(r_ik − μ)).
- Negative-tolerant regularisation (NTR). A class bias v_k = −(κ/λ)·log(N/n_k − 1) (κ/λ times the
  logit of the prior n_k/N) shifts the logit, z' = z + v, and negatives get a sharper, λ-scaled logit
  (λ = ``neg_scale``, the reference code's name; not the any-class loss's ``lam``):

      positive:  r̂ · softplus(−z')
      negative:  (r̂/λ) · softplus(λ·z')

  i.e. r̂·w·BCE(s·z', y) with s = 1 | λ and w = 1 | 1/λ for positives | negatives. The focal variant
  (DB-Focal, the reference configs' "DB") multiplies by ``balance``·(1 − p_t)^γ computed on the
  regularised, scaled logit s·z'.

Reduction (reference): the mean over all B·C elements. The reference adds the bias to the caller's
logits in place; here nothing is modified. ``implementation``: ``fused`` (default, ``db_fused``: the
same values and gradients with a closed-form backward; DB-Focal's kernel needs 0/1 targets and is guarded,
see ``binary_targets``, DB's is exact for soft targets too) or ``autograd`` (the readable form below;
double backward, soft targets).

Edge cases the reference does not meet (its datasets have no negative instance and no empty class):
- a negative instance (no class present) has no sampling frequency to correct; its weight is the
  limit of r → ∞, r̂ = a + 1, which is also what the reference arithmetic (1/0 = inf) yields;
- counts are clamped to [1, N − 1] for the weights and the bias, so that a class with no training
  instance, or present in every one, keeps a finite weight and bias. Exact otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from mlc.errors import is_real, require
from mlc.losses.base import ImplementationSwitch, MultiLabelLoss, check_reduction, reduce_instances
from mlc.losses.db_fused import FusedDistributionBalancedLoss
from mlc.losses.elementwise import bce_with_logits, focal_with_logits

log = logging.getLogger(__name__)


class DistributionBalancedLoss(ImplementationSwitch, MultiLabelLoss):
    """DB / DB-Focal: re-balanced weights and negative-tolerant regularisation.

    Args:
        class_counts: per-class positive counts n_k of the training set (filled in by the trainer).
        num_samples: training-set size N (filled in by the trainer).
        base: ``"bce"`` (DB) or ``"focal"`` (DB-Focal).
        a, b, mu: the smoothing r̂ = a + σ(b·(r − μ)) (reference a = 0.1, b = 10; μ = 0.3 VOC, 0.2 COCO).
        kappa: κ ≥ 0, scale of the class bias (reference 0.05; 0 switches the bias off).
        neg_scale: λ > 0, the negatives' logit scale (the reference's ``neg_scale``: 5 VOC, 2 COCO; 1 switches
            it off). Named apart from the any-class loss's ``lam``, so that a ``loss.lam`` sweep cannot reach it.
        gamma: γ ≥ 0, focal exponent (focal base only; reference 2).
        balance: the focal term's constant factor (focal base only; reference 2).
        reduction: ``mean`` (÷B·C, reference), ``sum``, ``instances`` (÷B) or ``labels``.
        implementation: ``fused`` (closed-form backward, ``db_fused``; DB-Focal: 0/1 targets only) or ``autograd``.
    """

    def __init__(self, class_counts: Sequence[float], num_samples: int, base: str = "focal", a: float = 0.1,
                 b: float = 10.0, mu: float = 0.2, kappa: float = 0.05, neg_scale: float = 2.0, gamma: float = 2.0,
                 balance: float = 2.0, reduction: str = "mean", implementation: str = "fused",
                 **unused_stats: object):
        super().__init__()
        require(base in ("bce", "focal"), "base", base, "must be 'bce' or 'focal'")
        for key, value in (("a", a), ("b", b), ("kappa", kappa), ("gamma", gamma)):
            require(is_real(value) and value >= 0, key, value, "must be >= 0")
        require(is_real(mu), "mu", mu, "must be a finite number")
        require(is_real(neg_scale) and neg_scale > 0, "neg_scale", neg_scale, "λ must be > 0")
        require(is_real(balance) and balance > 0, "balance", balance, "must be > 0")
        require(is_real(num_samples) and num_samples >= 2, "num_samples", num_samples, "must be >= 2")
        check_reduction(reduction)
        self.select_implementation(implementation, binary_only=base == "focal")  # focal's kernel: 0/1 targets
        self.base, self.a, self.b, self.mu = base, float(a), float(b), float(mu)
        self.kappa, self.neg_scale = float(kappa), float(neg_scale)
        self.gamma, self.balance = float(gamma), float(balance)
        self.reduction = reduction
        self.num_classes = len(class_counts)
        counts = torch.tensor(list(class_counts), dtype=torch.float64)
        require(counts.numel() > 0 and bool(torch.isfinite(counts).all() and (counts >= 0).all()), "class_counts",
                list(class_counts), "must be a non-empty list of counts >= 0")
        clamped = counts.clamp(1.0, float(num_samples) - 1.0)
        if not torch.equal(clamped, counts):
            log.warning("DB loss: %d class count(s) outside [1, N − 1] clamped for the weights and the bias",
                        int((clamped != counts).sum()))
        # Kept in float64, derived from the statistics: cast to the logits' dtype per call, not saved.
        self.register_buffer("inverse_counts", 1.0 / clamped, persistent=False)
        self.register_buffer("bias", -(self.kappa / self.neg_scale) * torch.log(num_samples / clamped - 1.0),
                             persistent=False)

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma if self.base == "focal" else None
        balance = self.balance if self.base == "focal" else 1.0
        return FusedDistributionBalancedLoss.apply(logits, y, self.rebalanced_weights(y, y.sum(dim=1) > 0),
                                                   self.bias.to(y.dtype), self.neg_scale, gamma, balance,
                                                   self.reduction)

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        positive = y.sum(dim=1) > 0
        scale = y + self.neg_scale * (1.0 - y)     # 1 for positives, λ for negatives
        scaled = (logits + self.bias.to(y.dtype)) * scale
        if self.base == "bce":
            element = bce_with_logits(scaled, y)
        else:
            element = self.balance * focal_with_logits(scaled, y, self.gamma)
        loss = self.rebalanced_weights(y, positive) / scale * element
        return reduce_instances(loss.sum(dim=1), y, self.reduction)

    def rebalanced_weights(self, y: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """r̂_ik = a + σ(b·(r_ik − μ)), r_ik = (1/n_k) / Σ_{j present in i} 1/n_j; a + 1 for a negative instance."""
        inverse = self.inverse_counts.to(y.dtype)
        slope = torch.where(positive, y @ inverse, 1.0).reciprocal_().mul_(self.b)   # b / Σ_j 1/n_j
        smoothed = torch.outer(slope, inverse).sub_(self.b * self.mu).sigmoid_().add_(self.a)
        return smoothed.masked_fill_(~positive.unsqueeze(1), self.a + 1.0)

    def extra_repr(self) -> str:
        return (f"base={self.base}, a={self.a}, b={self.b}, mu={self.mu}, kappa={self.kappa}, "
                f"neg_scale={self.neg_scale}, gamma={self.gamma}, balance={self.balance}, reduction={self.reduction}, "
                f"implementation={self.implementation}")
