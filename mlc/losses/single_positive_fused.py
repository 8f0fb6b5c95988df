"""Fused value-and-gradient kernels for the single-positive losses (``implementation: fused``).

Why: each SPML loss is a sum of element-wise terms, but autograd through the readable forms in
``single_positive`` makes one pass over the (B, C) logits per op in the forward, keeps every
intermediate and makes one or more passes per op again in the backward (GR: ~60 passes). Written out,
the gradient of each element term has a short closed form in p = σ(z) and q = σ(−z), so a kernel
computes the element values and their gradient in one forward, sharing the intermediates; the
backward is one multiplication. The kernels only use ``sigmoid``, ``exp``, ``log`` and arithmetic
(no ``log1p``/``expm1``, slow on the benchmark machine: see ``elementwise``) and no boolean masks
(``torch.where``/``masked_fill`` run at ~3–10 ns per element on CPU, against ~0.4 ns for ``lerp``).

Every kernel ``kernel(z, y, need_grad, *settings)`` returns ``(Σ element losses, ∂/∂z of that sum or
None)``; ``FusedSinglePositiveLoss`` divides by the reduction's denominator (``base.reduction_denominator``).
Each kernel blends its positive and unknown terms by y (``lerp``), as the readable forms do (y·A + (1 − y)·U),
so soft targets give the readable forms' values and gradients too. The kernels mirror the
element forms of the autograd implementation term by term (same ε placement, same detached factors),
with 1 − p taken as σ(−z) throughout (the autograd form takes 1 − p literally in a few places: equal
up to rounding). Double backward is not supported (``once_differentiable`` raises): use
``implementation: autograd`` for that. ``tests/test_losses_single_positive.py`` checks each kernel
against the autograd form (values and gradients, float64) and against finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from mlc.losses.base import reduction_denominator
from mlc.losses.elementwise import softplus_value
from mlc.losses.shared_fused import softplus_pair

Kernel = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


class FusedSinglePositiveLoss(torch.autograd.Function):
    """Σ element losses / D with the gradient computed by ``kernel`` in the forward (see the module doc)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, kernel: Kernel, settings: tuple, reduction: str,
                need_grad: bool) -> torch.Tensor:
        total, grad = kernel(z, y, need_grad, *settings)
        denominator = reduction_denominator(y, reduction)
        ctx.save_for_backward(grad)
        ctx.denominator = denominator
        return total / denominator

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * (grad_out / ctx.denominator), None, None, None, None, None


def fused_loss(kernel: Kernel, logits: torch.Tensor, y: torch.Tensor, settings: tuple, reduction: str):
    """Apply ``kernel``; the gradient is only computed when autograd will ask for it."""
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    return FusedSinglePositiveLoss.apply(logits, y, kernel, settings, reduction, need_grad)


# -- shared element pieces ---------------------------------------------------------------------------

def log_sigmoid_value(z: torch.Tensor) -> torch.Tensor:
    """log σ(z) = −softplus(−z), finite for any finite z."""
    return z.clamp(max=0.0).add_(z.abs().sigmoid_().log_())   # min(z, 0) + log σ(|z|): two temporaries


def one_minus_exp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 − e^x, e^x) for x ≤ 0, the first accurate to a few ulp relative even for tiny |x| (= −expm1(x)).

    1 − E alone (E = e^x rounded) loses all digits of 1 − e^x ≈ −x when |x| is near the rounding of E;
    with d = x − log E (the error of E, in log space) e^x = E·e^d ≈ E(1 + d), so 1 − e^x = (1 − E) − E·d,
    where 1 − E is exact. ``x`` (a fresh temporary: it is overwritten) is clamped at log(smallest
    normal) so that E and log E stay finite; what that changes is below the smallest normal number.
    """
    x = x.clamp_(min=math.log(torch.finfo(x.dtype).tiny))
    e = x.exp()
    d = e.log().neg_().add_(x)
    return torch.neg(e, out=x).add_(1.0).addcmul_(e, d, value=-1.0), e   # in x's storage: one temporary fewer


def neg_log_and_grad(p: torch.Tensor, q: torch.Tensor, pq: torch.Tensor | None, eps: float,
                     log_p: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """−log(p + ε) and its derivative −pq/(p + ε) w.r.t. z (ε = 0: −log σ(z) = −log_p and −q).

    ``log_p`` (log σ(z)) is needed for ε = 0; ``pq`` = p·q only when the gradient is.
    """
    if eps == 0.0:
        return log_p.neg(), (q.neg() if pq is not None else None)
    shifted = p + eps
    value = shifted.log().neg_()
    return value, (torch.div(pq, shifted, out=shifted).neg_() if pq is not None else None)


# -- GR -------------------------------------------------------------------------------------------------

def gr_kernel(z: torch.Tensor, y: torch.Tensor, need_grad: bool, w: float, b: float, mu: float, sigma: float,
              q2: float, q3: float, detach_k: bool, eps: float):
    """Positive −log(p + ε); unknown v·[k̂·L2 + (1 − k̂)·L3] (``GeneralizedRobustLoss``).

    L2 = (1 − p^q2)/q2 = −expm1(q2·log σ(z))/q2 and L3 = −expm1(q3·log σ(−z))/q3, with
    ∂L2/∂z = −p^q2·q and ∂L3/∂z = p·q^q3 (q = 1 − p = σ(−z)); for an exponent of 1 they are q and p.
    ∂U/∂z = v·[k̂·∂L2 + (1 − k̂)·∂L3] (+ v·(L2 − L3)·k̂(1 − k̂)·w·pq when k̂ is not detached).
    """
    p, q = torch.sigmoid(z), z.neg().sigmoid_()
    log_p = log_q = None                                      # log σ(z), log σ(−z)
    if q3 != 1.0:
        log_q, log_p = softplus_pair(z)
        log_q, log_p = log_q.neg_(), log_p.neg_()
    elif q2 != 1.0 or eps == 0.0:
        log_p = log_sigmoid_value(z)
    if q2 == 1.0:
        l2, pow2 = q, p
    else:
        l2, pow2 = one_minus_exp(log_p * q2)
        l2.div_(q2)
    if q3 == 1.0:
        l3, pow3 = p, q
    else:
        l3, pow3 = one_minus_exp(log_q.mul_(q3))
        l3.div_(q3)
    k = torch.mul(p, w).add_(b).sigmoid_()
    v = torch.sub(p, mu).square_().mul_(-0.5 / sigma**2).exp_()
    unknown = torch.lerp(l3, l2, k).mul_(v)
    pq = p * q if need_grad else None
    positive, d_positive = neg_log_and_grad(p, q, pq, eps, log_p)
    total = unknown.lerp_(positive, y).sum()
    if not need_grad:
        return total, None
    # In place where a temporary is free again: at C = 1000 every fresh (B, C) tensor costs page faults
    # (see the loss benchmark), as much as the arithmetic.
    d_l2 = pow2.mul_(q).neg_() if q2 != 1.0 else torch.mul(pow2, q).neg_()
    d_l3 = pq if q3 == 1.0 else pow3.mul_(p)
    d_unknown = torch.lerp(d_l3, d_l2, k, out=d_l2)
    if not detach_k:  # + (L2 − L3)·k̂(1 − k̂)·w·pq
        d_unknown.add_(torch.sub(l2, l3).mul_(k).mul_(1.0 - k).mul_(pq), alpha=w)
    d_unknown.mul_(v)
    return total, torch.lerp(d_unknown, d_positive, y, out=d_unknown)


# -- EM -------------------------------------------------------------------------------------------------

def em_kernel(z: torch.Tensor, y: torch.Tensor, need_grad: bool, alpha: float, eps: float,
              pseudo_weight: torch.Tensor | None = None, pseudo_target: torch.Tensor | None = None,
              beta: float = 0.0):
    """Positive A = −log(p + ε); unknown −α·H, H = p·A + q·B with B = −log(q + ε) (``EntropyMaximizationLoss``).

    ∂A = −pq/(p + ε), ∂B = pq/(q + ε), ∂H = pq·(A − B) + p·∂A + q·∂B (the target p of H carries
    gradient). With ``pseudo_weight`` (1 where an unknown is pseudo-labelled, else 0; APL) such an
    element is β·[s·A + (1 − s)·B] with s = ``pseudo_target`` instead.
    """
    p, q = torch.sigmoid(z), torch.sigmoid(z.neg())
    pq = p * q if need_grad else None
    if eps == 0.0:
        b, a = softplus_pair(z)                              # −log σ(−z), −log σ(z)
        d_a, d_b = (q.neg(), p) if need_grad else (None, None)
    else:
        a, d_a = neg_log_and_grad(p, q, pq, eps)
        b, d_b = neg_log_and_grad(q, p, pq, eps)
        if need_grad:
            d_b = d_b.neg_()                                 # ∂B/∂z = +pq/(q + ε)
    entropy = torch.lerp(b, a, p)                            # p·A + (1 − p)·B
    unknown = entropy.mul_(-alpha)
    if pseudo_weight is not None:
        pseudo = torch.lerp(b, a, pseudo_target).mul_(beta)
        unknown = torch.lerp(unknown, pseudo, pseudo_weight)
    total = torch.lerp(unknown, a, y).sum()
    if not need_grad:
        return total, None
    # ∂H = pq·(A − B) + p·∂A + q·∂B
    d_entropy = torch.sub(a, b).mul_(pq).addcmul_(p, d_a).addcmul_(q, d_b)
    d_unknown = d_entropy.mul_(-alpha)
    if pseudo_weight is not None:
        d_pseudo = torch.lerp(d_b, d_a, pseudo_target).mul_(beta)
        d_unknown = torch.lerp(d_unknown, d_pseudo, pseudo_weight)
    return total, torch.lerp(d_unknown, d_a, y)


# -- Hill, SPLC (focal on a margin logit) ------------------------------------------------------------

def _focal_power(s: torch.Tensor, log_s: Callable[[], torch.Tensor], gamma: float) -> torch.Tensor:
    """s^γ for s = σ(u): s·s for γ = 2 (and s, 1 for γ = 1, 0), else e^(γ·log s) (= exp(γ·logsigmoid(u)))."""
    if gamma == 2.0:
        return s * s
    if gamma == 1.0:
        return s.clone()
    if gamma == 0.0:
        return torch.ones_like(s)
    return log_s().mul_(gamma).exp_()


def hill_kernel(z: torch.Tensor, y: torch.Tensor, need_grad: bool, hill_lambda: float, margin: float, gamma: float):
    """Positive focal σ(−x)^γ·softplus(−x) on x = z − m; unknown (λ − p)·p² (``HillLoss``).

    ∂positive/∂z = −σ(−x)^γ·[γ·σ(x)·softplus(−x) + σ(−x)]; ∂unknown/∂z = p(2λ − 3p)·pq.
    """
    p = torch.sigmoid(z)
    unknown = torch.rsub(p, hill_lambda).mul_(p).mul_(p)
    x = z - margin if margin else z
    minus_x = x.neg()
    q_x = torch.sigmoid(minus_x)                                  # σ(−x) = 1 − p_t
    ce = softplus_value(minus_x)                                  # softplus(−x) = −log σ(x)
    mod = _focal_power(q_x, lambda: log_sigmoid_value(minus_x), gamma)
    total = torch.lerp(unknown, mod * ce, y).sum()
    if not need_grad:
        return total, None
    pq = p * torch.sigmoid(z.neg())
    d_unknown = torch.mul(p, -3.0).add_(2.0 * hill_lambda).mul_(p).mul_(pq)
    d_positive = torch.sigmoid(x).mul_(ce).mul_(gamma).add_(q_x).mul_(mod).neg_()
    return total, torch.lerp(d_unknown, d_positive, y)


def splc_kernel(z: torch.Tensor, y: torch.Tensor, need_grad: bool, tau: float, margin: float, gamma: float,
                correct: bool):
    """Focal with targets c on x = z − m·y, c = 1 where σ(z) > τ (batch constant) else y (``SPLCLoss``).

    As ``elementwise.focal_with_logits``: ce = softplus(x) − c·x, mod = σ(u)^γ with u = (1 − 2c)·x;
    ∂/∂x = mod·[(σ(x) − c) + γ·ce·σ(−u)·(1 − 2c)].
    """
    x = torch.add(z, y, alpha=-margin) if margin else z
    c = y
    if correct:  # where(σ(z) > τ, 1, y) without a boolean mask: heaviside(σ(z) − τ) ∈ {0, 1} as lerp weight
        confident = torch.heaviside(torch.sigmoid(z).sub_(tau), z.new_zeros(()))
        c = torch.lerp(y, z.new_ones(()), confident)
    sign = torch.mul(c, -2.0).add_(1.0)                           # 1 − 2c
    u = x * sign
    s_u = torch.sigmoid(u)
    ce = softplus_value(x).addcmul_(c, x, value=-1.0)            # softplus(x) − c·x
    mod = _focal_power(s_u, lambda: log_sigmoid_value(u), gamma)
    total = torch.mul(mod, ce).sum()
    if not need_grad:
        return total, None
    d_mod = u.neg_().sigmoid_().mul_(sign).mul_(ce).mul_(gamma)   # γ·ce·σ(−u)·(1 − 2c)
    return total, torch.sigmoid(x).sub_(c).add_(d_mod).mul_(mod)
