"""Asymmetric Loss, ASL (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021,
arXiv 2009.14119).

Per element, with p = σ(z) and the shifted probability p_m = max(p − m, 0) (m = ``clip``):

    positive:  −(1 − p)^{γ+} · log p
    negative:  −p_m^{γ−}    · log(1 − p_m)

The shift discards easy negatives entirely (p ≤ m gives zero loss and zero gradient) and the
asymmetric focusing (γ− > γ+) down-weights the remaining easy negatives. The reference training
script computes the focusing weights without gradient (``disable_torch_grad_focal_loss=True``); here
that is ``detach_focal_weight`` and uses ``.detach()``, never a grad-mode switch. Reduction
(reference): the sum over all B·C elements.

Everything is computed from logits: log p = logsigmoid(z) and, where p > m,
log(1 − p_m) = log(σ(−z) + m) = logaddexp(logsigmoid(−z), log m), capped at 0 (which is p ≤ m).
The reference clamps probabilities at 1e-8 before the log instead, which caps the loss of a
confidently wrong element at 18.4 and zeroes its gradient; the two agree for |z| < 18.

``implementation``: ``fused`` (default) computes the same values and gradients in one
``torch.autograd.Function`` with a closed-form backward (``mlc/losses/asl_fused.py``; ~1× BCE instead of
~7×); ``autograd`` is the readable form below, which also supports double backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mlc.errors import is_real, require
from mlc.losses.asl_fused import FusedAsymmetricLoss
from mlc.losses.base import ImplementationSwitch, MultiLabelLoss, check_reduction, reduce_instances
from mlc.losses.shared_fused import power


class AsymmetricLoss(ImplementationSwitch, MultiLabelLoss):
    """ASL with positive/negative focusing exponents and probability shift.

    Args:
        gamma_pos: γ+ ≥ 0, focusing exponent of positives (reference 0).
        gamma_neg: γ− ≥ 0, focusing exponent of negatives (reference 4).
        clip: the probability margin m ∈ [0, 1) of negatives (reference 0.05; 0 = no shift).
        detach_focal_weight: compute (1 − p)^{γ+} and p_m^{γ−} without gradient (reference: true).
        reduction: ``sum`` (reference), ``mean`` (÷B·C), ``instances`` (÷B) or ``labels``.
        implementation: ``fused`` (closed-form backward, ``asl_fused``) or ``autograd`` (the readable form).
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 detach_focal_weight: bool = True, reduction: str = "sum", implementation: str = "fused",
                 **unused_stats: object):
        super().__init__()
        require(is_real(gamma_pos) and gamma_pos >= 0, "gamma_pos", gamma_pos, "γ+ must be >= 0")
        require(is_real(gamma_neg) and gamma_neg >= 0, "gamma_neg", gamma_neg, "γ− must be >= 0")
        require(is_real(clip) and 0 <= clip < 1, "clip", clip, "the margin m must be in [0, 1)")
        require(isinstance(detach_focal_weight, bool), "detach_focal_weight", detach_focal_weight,
                "must be true or false")
        check_reduction(reduction)
        self.select_implementation(implementation)  # the kernel is affine in y: exact for soft targets too
        self.gamma_pos, self.gamma_neg, self.clip = float(gamma_pos), float(gamma_neg), float(clip)
        self.detach_focal_weight, self.reduction = detach_focal_weight, reduction
        if detach_focal_weight and (gamma_pos > 0 or gamma_neg > 0):
            self.detached_terms = "the focusing weights (1 − p)^γ+ and p_m^γ−"

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return FusedAsymmetricLoss.apply(logits, y, self.gamma_pos, self.gamma_neg, self.clip,
                                         self.detach_focal_weight, self.reduction)

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight_pos, weight_neg = self.focusing_weights(logits)
        if self.detach_focal_weight:
            weight_pos, weight_neg = weight_pos.detach(), weight_neg.detach()
        loss = -(y * weight_pos * F.logsigmoid(logits) + (1.0 - y) * weight_neg * self.log_one_minus_shifted(logits))
        return reduce_instances(loss.sum(dim=1), y, self.reduction)

    def log_one_minus_shifted(self, logits: torch.Tensor) -> torch.Tensor:
        """log(1 − p_m) = min(log(σ(−z) + m), 0): finite with a finite gradient for any logit."""
        if self.clip == 0:
            return F.logsigmoid(-logits)
        log_margin = torch.full_like(logits, math.log(self.clip))
        return torch.logaddexp(F.logsigmoid(-logits), log_margin).clamp(max=0.0)

    def focusing_weights(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 − p)^{γ+} and p_m^{γ−} (both 1 where the exponent is 0, as torch.pow(0, 0) = 1)."""
        weight_pos = torch.exp(self.gamma_pos * F.logsigmoid(-logits))  # finite gradient for any γ+ >= 0
        if self.gamma_neg == 0:
            return weight_pos, torch.ones_like(logits)
        shifted = (torch.sigmoid(logits) - self.clip).clamp(min=0.0)
        # p_m^γ has an infinite derivative at p_m = 0 when γ < 1: raise a safe stand-in there instead,
        # so that the branch torch.where does not take cannot send NaN back through the clamp. ``power``, not
        # ``** γ``: a large tensor ** float changes how fast log1p runs in the whole process (benchmarks/losses.py).
        above = shifted > 0
        weight_neg = torch.where(above, power(torch.where(above, shifted, 1.0), self.gamma_neg), 0.0)
        return weight_pos, weight_neg

    def extra_repr(self) -> str:
        return (f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, "
                f"detach_focal_weight={self.detach_focal_weight}, reduction={self.reduction}, "
                f"implementation={self.implementation}")
