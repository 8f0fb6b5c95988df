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
- softplus itself is ``elementwise.softplus_value`` (``sigmoid`` and ``log``, no ``log1p``; see there why).

Targets must be binary (0/1), as everywhere in the any-class paper: y_a = min(n_i, 1), the instance weight
as a lerp by y_a and focal's softplus((1 − 2y)·z) all assume it. ``AnyClassPresenceLoss`` guards the kernel
(``binary_targets``: an error on CPU, NaN on an accelerator); ``implementation: autograd`` takes soft
targets. Double backward is not supported (use ``implementation: autograd`` for that).
``tests/test_losses_any_class.py`` checks both implementations against an independent float64 derivation,
and this one against finite differences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlc.losses.base import reduction_denominator
from mlc.losses.elementwise import softplus_value


def _row_any(z_a: torch.Tensor, y_a: torch.Tensor, gamma: float, focal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓ(z_a, y_a) of the any-class logit and ∂ℓ/∂z_a, per row: (B,) tensors, so plain ops do."""
    if not focal:
        return torch.addcmul(F.softplus(z_a), y_a, z_a, value=-1.0), torch.sigmoid(z_a).sub_(y_a)
    sign = 1.0 - 2.0 * y_a
    u = sign * z_a
    r = F.softplus(-u)                   # −log σ(u)
    soft, q, mod = u + r, torch.sigmoid(u), torch.exp(-gamma * r)
    return mod * soft, sign * mod * (gamma * (1.0 - q) * soft + q)


class FusedAnyClassLoss(torch.autograd.Function):
    """J = Σ_i s_i [Σ_c ℓ(z_ic, y_ic) + α ℓ(z_a,i, y_a,i)] / D with a hand-written backward.

    Per row, with n_i positives and w_i = (1 − λ)·y_a,i (so λ_i = 1 − w_i):
    Σ_c v = C + w_i (n_i − C) and Σ_c v z = Σ_c z + w_i (Σ_c y z − Σ_c z).
    The gradient is a_i·g_ic + p_i + q_i·y_ic with per-row a = s/D, k = α·g_a/Σv, p = a·k·λ_i and
    q = a·(k·w_i − 1) for BCE (g = σ(z) − y: its −y goes into q), q = a·k·w_i for focal; the forward
    keeps (a, p, q) as one (3, B) tensor, so the backward is two passes over (B, C) after g.
    Why so few (B,)-sized ops, and none with a Python scalar where avoidable (those add a conversion):
    at C = 80 each op costs 2–4 µs, about what a pass over the (B, C) logits costs.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None,
                negative_weight: torch.Tensor | None, lam: float, alpha: float, gamma: float, focal: bool,
                reduction: str) -> torch.Tensor:
        b, c = z.shape
        npos = y.sum(1)
        y_a = npos.clamp(max=1.0)                               # 1 if the row has a class (binary targets)
        u = soft = mod = None
        if focal:
            u = torch.addcmul(z, y, z, value=-2.0)              # (1 − 2y)·z
            r = softplus_value(-u)                              # −log σ(u)
            mod = torch.mul(r, -gamma).exp_()                   # σ(u)^γ
            soft = r.add_(u)                                    # softplus(u), in r's storage
            per_instance = torch.linalg.vecdot(mod, soft)
        yz = torch.linalg.vecdot(y, z) if alpha != 0.0 or not focal else None
        if not focal:
            per_instance = torch.sub(softplus_value(z).sum(1), yz)
        s = torch.ones_like(npos) if class_weights is None else \
            torch.lerp(negative_weight.expand(b), torch.mv(y, class_weights), y_a)
        p = q = None
        if alpha != 0.0:
            w = y_a * (1.0 - lam)
            v_sum = torch.lerp(torch.full_like(npos, c), npos, w)
            z_a = torch.lerp(z.sum(1), yz, w).div_(v_sum)
            any_loss, any_grad = _row_any(z_a, y_a, gamma, focal)
            per_instance.add_(any_loss, alpha=alpha)
            sk = any_grad.mul_(s).div_(v_sum).mul_(alpha)       # s·k
            skw = sk * w
            p, q = sk.sub_(skw), (skw.sub_(s) if not focal else skw)
        elif not focal:
            q = -s
        denominator = reduction_denominator(y, reduction, row_sums=npos)
        rows = torch.stack([s if t is None else t for t in (s, p, q)]).div_(denominator)
        ctx.save_for_backward(z, y, rows, u, soft, mod)
        ctx.settings = (gamma, p is not None, q is not None)
        return torch.dot(per_instance, s).div_(denominator)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        z, y, rows, u, soft, mod = ctx.saved_tensors
        gamma, has_p, has_q = ctx.settings
        rows = torch.mul(rows, grad_out).unsqueeze_(2)           # (3, B, 1): a, p, q
        if u is not None:                                        # focal: g = (1 − 2y)·∂ℓ/∂u
            q_u = torch.sigmoid(u)                               # σ(u) = 1 − p_t
            g = torch.addcmul(q_u, torch.sigmoid(-u), soft, value=gamma).mul_(mod)
            g.addcmul_(g, y, value=-2.0)                         # times 1 − 2y
        else:                                                    # BCE: σ(z); its −y is in q
            g = torch.sigmoid(z)
        g = torch.addcmul(rows[1], g, rows[0]) if has_p else g.mul_(rows[0])
        if has_q:
            g.addcmul_(y, rows[2])
        return g, None, None, None, None, None, None, None, None
