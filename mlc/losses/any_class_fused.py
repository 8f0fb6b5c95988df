"""A fused forward/backward for the any-class loss family: same values and gradients, fewer passes.

Why: the loss is per-row algebra on top of element-wise terms, so autograd through the readable form
(``AnyClassPresenceLoss(implementation="autograd")``) makes ~20 passes over the (B, C) logits and keeps
their intermediates. Written out, everything reduces to a few row sums and one closed-form gradient:

- the absent-class weight of row i is a scalar λ_i (λ for a positive instance, 1 for a negative one),
  so v = λ_i + (1 − λ_i)·y, Σ_c v = C·λ_i + (1 − λ_i)·n_i and Σ_c v z = λ_i Σ_c z + (1 − λ_i) Σ_c y z;
- with the element loss ℓ and g = ∂ℓ/∂z, the gradient of J = Σ_i s_i L_i / D is
      ∂J/∂z_ic = (s_i / D)·[g(z_ic, y_ic) + α·g(z_a,i, y_a,i)·v_ic / Σ_c v_ic].
  For BCE, g = σ(z) − y, so the whole (B, C) gradient is a·σ(z) + c·y + d with per-row a, c, d.
- Focal, ℓ = σ(u)^γ·softplus(u) with u = (1 − 2y)·z (σ(u) = 1 − p_t):
      g = (1 − 2y)·σ(u)^γ·[γ(1 − σ(u))·softplus(u) + σ(u)].
  Both factors come from one r = softplus(−u) = −log σ(u): softplus(u) = u + r and σ(u)^γ = e^(−γr).
- softplus itself is ``elementwise.softplus_value`` (``exp`` and ``log``, no ``log1p``; see there why).

Targets must be binary (0/1), as everywhere in the any-class paper. Double backward is not supported
(use ``implementation: autograd`` for that). ``tests/test_losses_any_class.py`` checks both
implementations against an independent float64 derivation, and this one against finite differences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlc.losses.elementwise import softplus_value

REDUCTION_CODES = {"labels": 0, "instances": 1, "mean": 2, "sum": 3}


def _row_any(z_a: torch.Tensor, y_a: torch.Tensor, gamma: float, focal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓ(z_a, y_a) of the any-class logit and ∂ℓ/∂z_a, per row: (B,) tensors, so plain ops do."""
    if not focal:
        return F.softplus(z_a) - y_a * z_a, torch.sigmoid(z_a) - y_a
    sign = 1.0 - 2.0 * y_a
    u = sign * z_a
    r = F.softplus(-u)                   # −log σ(u)
    soft, q, mod = u + r, torch.sigmoid(u), torch.exp(-gamma * r)
    return mod * soft, sign * mod * (gamma * (1.0 - q) * soft + q)


class FusedAnyClassLoss(torch.autograd.Function):
    """J = Σ_i s_i [Σ_c ℓ(z_ic, y_ic) + α ℓ(z_a,i, y_a,i)] / D with a hand-written backward.

    Per row, with w_i = (1 − λ)·[row i positive] (so λ_i = 1 − w_i):
    Σ_c v = C + w_i (n_i − C) and Σ_c v z = Σ_c z + w_i (Σ_c y z − Σ_c z).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None,
                negative_weight: torch.Tensor | None, lam: float, alpha: float, gamma: float, focal: bool,
                reduction: int) -> torch.Tensor:
        b, c = z.shape
        npos = y.sum(1)
        positive = npos > 0
        if focal:
            u = torch.addcmul(z, y, z, value=-2.0)              # (1 − 2y)·z
            r = softplus_value(-u)                              # −log σ(u)
            mod = torch.mul(r, -gamma).exp_()                   # σ(u)^γ
            soft = r.add_(u)                                    # softplus(u), in r's storage
            per_instance = (mod * soft).sum(1)
        else:
            u = soft = mod = None
        yz = torch.linalg.vecdot(y, z) if alpha != 0.0 or not focal else None
        if not focal:
            per_instance = softplus_value(z).sum(1).sub_(yz)
        w = v_sum = any_grad = None
        if alpha != 0.0:
            y_a = positive.to(z.dtype)
            w = y_a * (1.0 - lam)
            v_sum = (npos - c).mul_(w).add_(c)
            z_a = torch.lerp(z.sum(1), yz, w).div_(v_sum)
            any_loss, any_grad = _row_any(z_a, y_a, gamma, focal)
            per_instance.add_(any_loss, alpha=alpha)
        s = None
        if class_weights is not None:
            s = torch.where(positive, torch.mv(y, class_weights), negative_weight)
            per_instance.mul_(s)
        denominator = (npos.sum() + (b - positive.sum()), b, b * c, 1)[reduction]
        ctx.save_for_backward(z, y, s, w, v_sum, any_grad, u, soft, mod)
        ctx.settings = (alpha, gamma, focal, denominator)
        return per_instance.sum() / denominator

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        z, y, s, w, v_sum, any_grad, u, soft, mod = ctx.saved_tensors
        alpha, gamma, focal, denominator = ctx.settings
        scale = grad_out / denominator
        a = s * scale if s is not None else scale.expand(z.shape[0])   # per-row factor s_i / D
        if focal:
            q = torch.sigmoid(u)                                         # σ(u) = 1 − p_t
            g = torch.addcmul(q, q.neg().add_(1.0).mul_(gamma), soft).mul_(mod)  # ∂ℓ/∂u
            g.mul_(y.mul(-2.0).add_(1.0)).mul_(a[:, None])                # ∂u/∂z = 1 − 2y; row scale
            y_row = None
        else:
            g = torch.sigmoid(z).mul_(a[:, None])                        # a·σ(z) ...
            y_row = -a                                                   # ... − a·y
        if alpha != 0.0:
            # + a·α·g_a·v / Σv with v = λ_i + w_i·y = (1 − w_i) + w_i·y
            d_row = a * any_grad * alpha / v_sum
            y_row = d_row * w if y_row is None else y_row.addcmul_(d_row, w)
            g.add_((d_row - d_row * w)[:, None])
        if y_row is not None:
            g.addcmul_(y, y_row[:, None])
        return g, None, None, None, None, None, None, None, None
