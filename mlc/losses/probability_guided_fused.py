"""A fused forward/backward for the PR / APR / APAF / PG losses (``ProbabilityGuidedLoss(implementation="fused")``).

Why: autograd through the readable form (``implementation="autograd"``) makes ~30 passes over the (B, C)
logits, keeps their intermediates and calls ``logsigmoid`` (``log1p``, slow on the benchmark machine; see
``mlc/losses/elementwise.py``). Per element, with the per-class constants interpolated by the label,
a = λ1⁻ + y·(λ1⁺ − λ1⁻), w = 1/λ2⁻ + y·(1/λ2⁺ − 1/λ2⁻), γ = γ⁻ + y·(γ⁺ − γ⁻), and x = a·(z + b):

    ℓ = w·m·[softplus(x) − y·x],   m = e^{−γ·r},  r = softplus(ν) = −log σ((1 − 2y)·z),  ν = (2y − 1)·z,
    ∂ℓ/∂z = w·m·[a·(σ(x) − y) + (1 − 2y)·γ·σ(ν)·(softplus(x) − y·x)]

(the readable form's ``bce_with_logits(scale·z', y)`` and ``exp(γ·logsigmoid((1 − 2y)·z))``; m = 1 without
focal modulation). The factors and exponents are constants here: they come from the training counts or
from detached batch statistics (``detached_terms``), so the closed form holds them fixed exactly as
autograd does. softplus is ``elementwise.softplus_value`` (``sigmoid`` and ``log``, no ``log1p``).

Every per-label choice is a lerp by y and ℓ is affine in y for fixed a, w, γ, exactly as in the readable form, so
soft targets (label smoothing) give the readable form's values and gradients too. Double backward is not
supported (use ``implementation: autograd`` for that).
``tests/test_losses_probability_guided.py`` checks this against the autograd form, the scalar reference
and finite differences.
"""

from __future__ import annotations

import torch

from mlc.losses.base import reduction_denominator
from mlc.losses.elementwise import softplus_value


def _by_label(negative: torch.Tensor | None, difference: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor | None:
    """negative + y·difference per element (a per-class value chosen by the label), None for a constant 1."""
    return None if negative is None else torch.addcmul(negative, y, difference)


class FusedProbabilityGuidedLoss(torch.autograd.Function):
    """Σ_ic ℓ_ic / D with the closed-form backward of the module docstring.

    Per-class (C,) arguments, each None where it is 1 (factors) or 0 (bias) for every class: ``bias`` b,
    ``scale``/``scale_diff`` λ1⁻ and λ1⁺ − λ1⁻, ``weight``/``weight_diff`` 1/λ2⁻ and 1/λ2⁺ − 1/λ2⁻,
    ``gamma``/``gamma_diff`` γ⁻ and γ⁺ − γ⁻ (None: no focal modulation).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, bias, scale, scale_diff, weight, weight_diff, gamma,
                gamma_diff, reduction: str) -> torch.Tensor:
        a = _by_label(scale, scale_diff, y)
        shifted = z if bias is None else z + bias
        x = shifted if a is None else a * shifted
        bce = softplus_value(x).addcmul_(y, x, value=-1.0)          # softplus(x) − y·x
        wm = _by_label(weight, weight_diff, y)
        nu = g = None
        if gamma is not None:
            nu = torch.addcmul(z, y, z, value=-2.0).neg_()           # (2y − 1)·z
            g = _by_label(gamma, gamma_diff, y)
            m = softplus_value(nu).mul_(g).neg_().exp_()             # σ((1 − 2y)·z)^γ
            wm = m if wm is None else m.mul_(wm)
        total = bce.sum() if wm is None else torch.dot(wm.reshape(-1), bce.reshape(-1))
        ctx.save_for_backward(y, a, x, wm, nu, g, bce if gamma is not None else None)
        ctx.denominator = reduction_denominator(y, reduction)
        return total / ctx.denominator

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        y, a, x, wm, nu, g, bce = ctx.saved_tensors
        grad = torch.sigmoid(x).sub_(y)                              # ∂bce/∂x
        if a is not None:
            grad.mul_(a)
        if g is not None:                                            # + (1 − 2y)·γ·σ(ν)·bce
            focal = torch.sigmoid(nu).mul_(g).mul_(bce)
            grad.add_(focal).addcmul_(y, focal, value=-2.0)
        if wm is not None:
            grad.mul_(wm)
        return grad.mul_(grad_out / ctx.denominator), None, None, None, None, None, None, None, None, None
