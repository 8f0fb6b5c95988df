"""A fused forward/backward for the any-class loss family: same values and gradients, fewer passes.

Why: the loss is per-row algebra on top of element-wise terms, so autograd through the readable form
(``AnyClassPresenceLoss(implementation="autograd")``) makes ~20 passes over the (B, C) logits and keeps
their intermediates. Written out, everything reduces to a few row sums and one closed-form gradient:

- the absent-class weight of row i is a scalar λ_i (λ for a positive instance, 1 for a negative one),
  so v = λ_i + (1 − λ_i)·y, Σ_c v = C·λ_i + (1 − λ_i)·n_i and Σ_c v z = λ_i Σ_c z + (1 − λ_i) Σ_c y z;
- with the element loss ℓ and g = ∂ℓ/∂z, the gradient of J = Σ_i s_i L_i / D is
      ∂J/∂z_ic = (s_i / D)·[g(z_ic, y_ic) + α·g(z_a,i, y_a,i)·v_ic / Σ_c v_ic].
  For BCE, g = σ(z) − y, so the whole (B, C) gradient is a·σ(z) + c·y + d with per-row a, c, d.
- Focal, ℓ = σ(u)^γ·softplus(u) with u = (1 − 2y)·z (σ(u) = 1 − p_t): g = (1 − 2y)·σ(u)^γ·[γ(1 − σ(u))·softplus(u) + σ(u)].

Targets must be binary (0/1), as everywhere in the any-class paper. Double backward is not supported
(use ``implementation: autograd`` for that). ``tests/test_losses_any_class.py`` checks both
implementations against an independent float64 derivation, and this one against finite differences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTION_CODES = {"labels": 0, "instances": 1, "mean": 2, "sum": 3}


def _row_focal(u: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row focal loss of u = (1 − 2y)·z and its derivative with respect to u (small tensors)."""
    log_q = F.logsigmoid(u)              # log σ(u) = log(1 − p_t)
    soft = u - log_q                     # softplus(u) = −log p_t
    q = log_q.exp()
    mod = (gamma * log_q).exp()          # σ(u)^γ
    return mod * soft, mod * (gamma * (1.0 - q) * soft + q)


class FusedAnyClassLoss(torch.autograd.Function):
    """J = Σ_i s_i [Σ_c ℓ(z_ic, y_ic) + α ℓ(z_a,i, y_a,i)] / D with a hand-written backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None,
                negative_weight: torch.Tensor | None, lam: float, alpha: float, gamma: float, focal: bool,
                reduction: int) -> torch.Tensor:
        b, c = z.shape
        npos = y.sum(1)
        positive = npos > 0
        yz = torch.einsum("ic,ic->i", y, z)                     # Σ_c y z, one pass, no (B, C) temporary
        if focal:
            u = torch.addcmul(z, y, z, value=-2.0)              # (1 − 2y)·z
            log_q = F.logsigmoid(u)
            soft = u - log_q
            mod = (gamma * log_q).exp_()
            per_instance = torch.einsum("ic,ic->i", mod, soft)
        else:
            per_instance = F.softplus(z).sum(1) - yz
            u = log_q = soft = mod = None
        if alpha != 0.0:
            lam_i = torch.where(positive, torch.full_like(npos, lam), torch.ones_like(npos))
            v_sum = c * lam_i + (1.0 - lam_i) * npos
            z_a = (lam_i * z.sum(1) + (1.0 - lam_i) * yz) / v_sum
            y_a = positive.to(z.dtype)
            if focal:
                any_loss, any_grad_u = _row_focal(z_a * (1.0 - 2.0 * y_a), gamma)
                any_grad = any_grad_u * (1.0 - 2.0 * y_a)
            else:
                any_loss = F.softplus(z_a) - y_a * z_a
                any_grad = torch.sigmoid(z_a) - y_a
            per_instance = per_instance + alpha * any_loss
        else:
            lam_i = v_sum = any_grad = None
        if class_weights is not None:
            s = torch.where(positive, y @ class_weights, negative_weight)
            per_instance = s * per_instance
        else:
            s = None
        denominator = (npos.sum() + (~positive).sum(), b, b * c, 1)[reduction]
        ctx.save_for_backward(z, y, s, lam_i, v_sum, any_grad, log_q, soft, mod)
        ctx.settings = (alpha, gamma, focal, denominator)
        return per_instance.sum() / denominator

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        z, y, s, lam_i, v_sum, any_grad, log_q, soft, mod = ctx.saved_tensors
        alpha, gamma, focal, denominator = ctx.settings
        a = grad_out / denominator * (s if s is not None else torch.ones_like(z[:, 0]))  # per-row scale
        if focal:
            q = log_q.exp()
            g = torch.addcmul(q, (1.0 - q).mul_(gamma), soft).mul_(mod)   # ∂ℓ/∂u
            g.mul_(torch.addcmul(torch.ones_like(y), y, torch.ones_like(y), value=-2.0))  # ∂u/∂z = 1 − 2y
            g.mul_(a[:, None])
            if alpha != 0.0:
                b = a * alpha * any_grad / v_sum
                g.addcmul_(y, (b * (1.0 - lam_i))[:, None]).add_((b * lam_i)[:, None])
        else:
            g = torch.sigmoid(z).mul_(a[:, None])
            c_row, d_row = -a, None
            if alpha != 0.0:
                b = a * alpha * any_grad / v_sum
                c_row, d_row = b * (1.0 - lam_i) - a, b * lam_i
            g.addcmul_(y, c_row[:, None])
            if d_row is not None:
                g.add_(d_row[:, None])
        return g, None, None, None, None, None, None, None, None
