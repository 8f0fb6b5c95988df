"""A fused forward/backward for DB and DB-Focal (``DistributionBalancedLoss(implementation="fused")``).

Why: autograd through the readable form (``implementation="autograd"``) makes ~25 passes over the (B, C)
logits and keeps their intermediates; DB-Focal was the slowest non-stateful loss of the benchmark. Per
element, with s = 1 (y = 1) | λ (y = 0) (λ = ``neg_scale``), x = s·(z + v) and the re-balanced weight r̂ (all constants
with respect to z), the element loss is (r̂/s)·β·f(x, y) and

    ∂ℓ/∂z = r̂·β·∂f/∂x          (the 1/s of the weight cancels the s of x = s·(z + v))

with β = ``balance`` for focal, 1 for BCE. For BCE, f = softplus(x) − y·x and ∂f/∂x = σ(x) − y. For
focal, with u = (1 − 2y)·x (so σ(u) = 1 − p_t), r = −log σ(u), m = σ(u)^γ = e^(−γr) and
softplus(u) = u + r: f = m·softplus(u) and ∂f/∂x = (1 − 2y)·m·[γ·σ(−u)·softplus(u) + σ(u)].
softplus is ``elementwise.softplus_value`` (``sigmoid`` and ``log``, no ``log1p``).

BCE's f is affine in y, as in the readable form, so DB is exact for soft targets too. Focal's f = m·softplus(u)
equals m·BCE only for y ∈ {0, 1}: DB-Focal's targets must be binary, which ``DistributionBalancedLoss``
guards (``binary_targets``). Double backward is not supported (use ``implementation: autograd``).
``tests/test_losses_baselines.py`` checks this against the autograd form, the scalar reference and
finite differences.
"""

from __future__ import annotations

import torch

from mlc.losses.base import reduction_denominator
from mlc.losses.elementwise import softplus_value


class FusedDistributionBalancedLoss(torch.autograd.Function):
    """Σ_ic (r̂/s)·β·f(x, y) / D with the closed-form backward of the module docstring.

    ``r_hat`` is the (B, C) re-balanced weight, ``bias`` the (C,) class bias v, ``gamma`` None for BCE.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, r_hat: torch.Tensor, bias: torch.Tensor,
                neg_scale: float, gamma: float | None, balance: float, reduction: str) -> torch.Tensor:
        s = torch.mul(y, 1.0 - neg_scale).add_(neg_scale)         # 1 for positives, λ for negatives
        x = torch.add(z, bias).mul_(s)
        if gamma is None:
            f = softplus_value(x).addcmul_(y, x, value=-1.0)      # softplus(x) − y·x
            saved = (x,)
        else:
            u = torch.addcmul(x, y, x, value=-2.0)                # (1 − 2y)·x
            soft = softplus_value(u.neg())                        # r = −log σ(u), then softplus(u) = u + r
            m = torch.mul(soft, -gamma).exp_() if gamma != 0 else None
            soft.add_(u)
            f = soft if m is None else m * soft
            saved = (u, soft, m)
        total = torch.dot(r_hat.div(s).reshape(-1), f.reshape(-1))
        ctx.save_for_backward(y, r_hat, *saved)
        ctx.settings = (gamma, balance / reduction_denominator(y, reduction))
        return total * ctx.settings[1]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        y, r_hat, *saved = ctx.saved_tensors
        gamma, factor = ctx.settings
        if gamma is None:
            (x,) = saved
            grad = torch.sigmoid(x).sub_(y)
        else:
            u, soft, m = saved
            grad = torch.addcmul(torch.sigmoid(u), torch.sigmoid(u.neg()), soft, value=gamma)
            if m is not None:
                grad.mul_(m)
            grad.addcmul_(grad, y, value=-2.0)                     # times 1 − 2y
        return grad.mul_(r_hat).mul_(grad_out * factor), None, None, None, None, None, None, None
