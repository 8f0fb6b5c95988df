"""Element-wise binary losses computed from logits.

Everything is expressed with ``softplus``/``logsigmoid`` so that logits of ±100 give finite values
and gradients (``log(sigmoid(z))`` underflows to ``-inf`` at z = -100 in float32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_with_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ℓ(z, y) = softplus(z) − y·z, element-wise."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def focal_with_logits(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Focal loss without α-balancing: (1 − p_t)^γ · BCE, element-wise (Lin et al. 2017).

    1 − p_t is σ(z) for y = 0 and σ(−z) for y = 1, i.e. σ((1 − 2y)·z); raising it to γ through
    ``exp(γ·logsigmoid(·))`` keeps the gradient finite even for γ < 1 at saturated logits, where
    ``(1 − p)^γ`` with p rounded to 1.0 would give 0^(γ−1) = inf. For binary targets this equals
    ``torchvision.ops.sigmoid_focal_loss(alpha=-1)``, which the reference implementation calls.
    """
    ce = bce_with_logits(logits, targets)
    if gamma == 0:
        return ce
    modulator = torch.exp(gamma * F.logsigmoid(logits * (1.0 - 2.0 * targets)))
    return modulator * ce
