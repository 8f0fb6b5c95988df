"""A fused forward/backward for ASL (``AsymmetricLoss(implementation="fused")``): same values and gradients.

Why: autograd through the readable form (``implementation="autograd"``) makes ~25 passes over the (B, C)
logits, keeps their intermediates, and goes through ``logsigmoid``/``logaddexp`` (``log1p``, slow on the
benchmark machine; see ``mlc/losses/elementwise.py``). Written out, with p = σ(z), q = σ(−z) = 1 − p,
p_m = max(p − m, 0), w+ = q^{γ+}, w− = p_m^{γ−} and, per element, L = y·A + (1 − y)·N:

- positives  A = w+·softplus(−z),                   ∂A/∂z = −w+·[q + γ+·p·softplus(−z)];
- negatives  N = −w−·ℓ, ℓ = min(log(q + m), 0),   ∂N/∂z = w−·p·q·[1/(q + m) − γ−·ℓ/p_m]   (m > 0),
  and for m = 0, ℓ = −softplus(z):                   ∂N/∂z = w−·(p − γ−·q·ℓ).

The γ terms in brackets are the focusing weights' own derivatives: they are dropped when the weights are
detached (``detach_focal_weight``, the reference). Where p ≤ m, w− = 0 and ℓ = 0 (nothing flows); with
γ− = 0 the weight is 1 and the clamp on ℓ stops the gradient there instead. The weights are raised to
their powers by repeated multiplication for small integer exponents and as exp(γ·log x) otherwise (a
large ``tensor ** float`` changes the process's ``log1p`` speed, see ``benchmarks/losses.py``).

Every term is affine in y (y·A + (1 − y)·N), as in the readable form, so soft targets (label smoothing) are
exact too. Double backward is not supported (use ``implementation: autograd`` for that).
``tests/test_losses_baselines.py`` checks this against the autograd form and finite differences.
"""

from __future__ import annotations

import torch

from mlc.losses.base import reduction_denominator
from mlc.losses.shared_fused import power, softplus_pair


class FusedAsymmetricLoss(torch.autograd.Function):
    """Σ_ic [y·A + (1 − y)·N] / D for ASL, with the closed-form backward of the module docstring."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, gamma_pos: float, gamma_neg: float, clip: float,
                detach: bool, reduction: str) -> torch.Tensor:
        sp_z, sp_neg_z = softplus_pair(z)                    # softplus(z), softplus(−z) = −log p
        p, q = torch.sigmoid(z), torch.sigmoid(-z)
        w_pos = torch.mul(sp_z, -gamma_pos).exp_() if gamma_pos != 0 else None   # q^γ+ = e^{−γ+·softplus(z)}
        pos = sp_neg_z if w_pos is None else sp_neg_z.mul(w_pos)                  # A
        if clip > 0:
            q_m = q + clip
            ell = q_m.log().clamp_(max=0.0)                  # log(1 − p_m)
            p_m = (p - clip).clamp_(min=0.0)
        else:
            q_m, ell, p_m = None, sp_z.neg_(), p             # log(1 − p) = −softplus(z)
        w_neg = power(p_m, gamma_neg) if gamma_neg != 0 else None
        neg = ell.neg() if w_neg is None else ell.mul(w_neg).neg_()              # N
        total = torch.dot(y.reshape(-1), pos.reshape(-1)) + torch.addcmul(neg, y, neg, value=-1.0).sum()
        ctx.save_for_backward(y, p, q, q_m, ell, p_m, w_pos, w_neg, pos)
        ctx.settings = (gamma_pos, gamma_neg, clip, detach)
        ctx.denominator = reduction_denominator(y, reduction)
        return total / ctx.denominator

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        y, p, q, q_m, ell, p_m, w_pos, w_neg, pos = ctx.saved_tensors
        gamma_pos, gamma_neg, clip, detach = ctx.settings
        # ∂N/∂z
        if clip > 0:
            g_neg = torch.mul(p, q)
            if gamma_neg == 0:
                g_neg.mul_(q_m <= 1.0).div_(q_m)            # the clamp of ℓ passes no gradient where p < m
            elif detach:
                g_neg.mul_(w_neg).div_(q_m)
            else:                                          # w−·p·q·[1/(q + m) − γ−·ℓ/p_m]; ℓ = w− = 0 at p_m = 0
                bracket = torch.div(ell, p_m.clamp(min=torch.finfo(p_m.dtype).tiny)).mul_(-gamma_neg)
                g_neg.mul_(w_neg).mul_(bracket.add_(q_m.reciprocal()))
        else:
            g_neg = p.clone() if w_neg is None else (
                p * w_neg if detach else torch.addcmul(p, q, ell, value=-gamma_neg).mul_(w_neg))
        # −∂A/∂z
        if w_pos is None:
            g_pos = q
        elif detach:
            g_pos = q * w_pos
        else:                                              # w+·q + γ+·p·A  (A = w+·softplus(−z))
            g_pos = torch.addcmul(q * w_pos, p, pos, value=gamma_pos)
        # (1 − y)·∂N/∂z + y·∂A/∂z = ∂N/∂z − y·(∂N/∂z − ∂A/∂z)
        grad = torch.addcmul(g_neg, y, g_neg + g_pos, value=-1.0).mul_(grad_out / ctx.denominator)
        return grad, None, None, None, None, None, None
