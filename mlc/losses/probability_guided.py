"""Probability guided (PG) loss family: PR, APR, APAF and PG (Dekun Lin, "Probability Guided Loss for
Long-Tailed Multi-Label Image Classification", AAAI 2023; seed 002, LOSSES.md §3). No public code exists;
everything below is derived from the paper, equation numbers are the paper's.

One module covers the four options by switching pieces on:

======  ===============  ==========================  ==========================================
option  PR factors       adaptive (APR)              focal modulation
======  ===============  ==========================  ==========================================
pr      per group        none                        none              (eq. 5)
apr     per group        λ1⁻  (Table 4's best)       none
apaf    all 1, κ = 0     none                        APAF              (eq. 6-9)
pg      per group        λ1⁻                         APAF              (eq. 10; Table 2 "Ours")
======  ===============  ==========================  ==========================================

Per element, with s = +1 for a negative label and −1 for a positive one, z' = z + b the logit shifted by
the NTR class bias b (below), λ1/λ2 the PR factors of the label's sign and γ the focal exponent:

    ℓ = (1/λ2) · m · softplus(s · λ1 · z'),   m = σ(s·z)^γ  (= p^γ⁻ for negatives, (1 − p)^γ⁺ for positives)

- **PR** (eq. 5): m = 1. λ1⁻ = λ2⁻ = λ, λ1⁺ = λ2⁺ = 1 is NTR of the DB loss (eq. 3). Each factor is a
  number, a ``{head, medium, tail}`` mapping (the paper raises factors for one group only) or a list with
  one value per class. Groups come from the training counts (``mlc.data.groups.class_groups``: head > 100,
  medium 20-100, tail < 20, the paper's split).
- **NTR bias**: b_k = −(κ/λ)·log(N/n_k − 1), the DB loss's reference code (``logits + init_bias``), with N
  the training-set size and λ = ``bias_lambda`` (DB's ``neg_scale``). The paper writes z − v with the DB
  paper's v; the PG paper says it re-ran DB's code, whose bias is the one used here (v = −b). n_k is
  clipped into [½, N − ½] so that a class with no instance or one present in every instance gets a
  finite bias (half an instance from either end).
- **APAF** (eq. 6-9): per class, p̄⁺ and p̄⁻ are the means of p = σ(z) over the batch's positive and
  negative labels (eq. 6; instances with no class are negatives of every class). A class without
  positives in the batch takes the mean p̄⁺ of the classes of its group that have some (eq. 7 — it
  writes 1/|C_tail|, but only classes with a p̄⁺ can enter a mean); if none of its group has, p̄⁺ = p̄⁻.
  The same rule fills a missing p̄⁻ (a class positive in every instance; the paper is silent). Then
  γ⁺ = λ0·p̄⁺/p̄⁻ and γ⁻ = λ0·p̄⁻/p̄⁺ (eq. 8). The ratio is clamped to [1/max_ratio, max_ratio], so a
  class whose p̄ → 0 (or underflows) cannot give an infinite or NaN exponent.
- **APR** (§"APR", Table 4): a PR factor named in ``adaptive`` is scaled "in the same probability-aware
  way" as eq. 8: a positive-label factor by p̄⁺/p̄⁻, a negative-label one by p̄⁻/p̄⁺ (the fixed value
  plays the role of λ0). The paper gives no formula beyond this analogy; this is our reading.
- **PG** (eq. 10): PR × APAF. Eq. 10 as printed flips the signs inside the logs relative to eq. 5
  (log(1 + e^{−λ1⁻(z−v)}) for negatives), which would reward confident errors; it is read with eq. 5's
  signs, and eq. 9 with the minus sign it drops.

The exponents γ± and the adaptive factors are "gradient scaling factors" (the paper's words) computed
from batch statistics: they are detached, as in focal-loss practice where the modulating factor's own
p keeps its gradient but the exponent is a constant (``detached_terms``). p in m and in p̄ is σ(z) of the
raw logit — the paper's "predicted probability" — not of the shifted or scaled one.

``implementation``: ``fused`` (default) computes the same values and gradients in one
``torch.autograd.Function`` with a closed-form backward (``mlc/losses/probability_guided_fused.py``; every
per-label choice is a lerp by y, as the readable form's, so soft targets are exact too); ``autograd`` is the
readable form (``autograd_forward``), which also supports double backward.

Reduction: eq. 1 sums over the training set (an objective, not a batch rule); the paper trains with
the DB loss's code, which averages over B·C, so ``mean`` is the default. The batch statistics p̄± are
per process under DDP; the validation loss (one call over a split) uses that split's means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mlc.data.groups import GROUPS, class_groups
from mlc.errors import is_real, require
from mlc.losses.base import ImplementationSwitch, MultiLabelLoss, check_reduction, reduce_instances
from mlc.losses.elementwise import bce_with_logits
from mlc.losses.probability_guided_fused import FusedProbabilityGuidedLoss

FACTORS = ("lambda1_neg", "lambda2_neg", "lambda1_pos", "lambda2_pos")
FOCAL = ("none", "fixed", "apaf")
# Sign of the probability-aware scaling of each factor: positive-label factors follow p̄⁺/p̄⁻ (eq. 8's λ⁺),
# negative-label ones p̄⁻/p̄⁺ (λ⁻).
_ADAPTIVE_SIGN = {"lambda1_neg": -1.0, "lambda2_neg": -1.0, "lambda1_pos": 1.0, "lambda2_pos": 1.0}


class ProbabilityGuidedLoss(ImplementationSwitch, MultiLabelLoss):
    """PR / APR / APAF / PG (eq. 5, Table 4, eq. 9, eq. 10) — see the module docstring for the math.

    Args:
        class_counts: per-class positive counts of the training set (filled in by the trainer).
        num_samples: training-set size N (filled in by the trainer), for the NTR bias.
        lambda1_neg, lambda2_neg, lambda1_pos, lambda2_pos: PR's gradient scaling factors λ1⁻, λ2⁻, λ1⁺,
            λ2⁺ (> 0): a number, a ``{head, medium, tail}`` mapping, or one value per class.
        kappa: κ ≥ 0 of the NTR bias b = −(κ/λ)·log(N/n − 1); 0 switches the bias off.
        bias_lambda: λ > 0 of the NTR bias (the DB loss's negative scale).
        adaptive: names of the PR factors made probability-aware (APR); empty for PR.
        focal: ``none`` (PR-BCE), ``fixed`` (focal exponent λ0 for both signs) or ``apaf`` (eq. 8).
        lambda0: λ0 ≥ 0, the initial (APAF) or fixed focal exponent.
        max_ratio: bound ≥ 1 on p̄⁺/p̄⁻ and its inverse (so γ± ≤ λ0·max_ratio).
        reduction: ``mean`` (÷B·C, default), ``sum``, ``instances`` (÷B) or ``labels``.
        implementation: ``fused`` (closed-form backward, ``probability_guided_fused``) or ``autograd``.
    """

    def __init__(self, class_counts: Sequence[float], num_samples: float,
                 lambda1_neg: object = 5.0, lambda2_neg: object = 5.0, lambda1_pos: object = 1.0,
                 lambda2_pos: object = 1.0, kappa: float = 0.05, bias_lambda: float = 5.0,
                 adaptive: Sequence[str] = (), focal: str = "none", lambda0: float = 2.0,
                 max_ratio: float = 100.0, reduction: str = "mean", implementation: str = "fused",
                 **unused_stats: object):
        super().__init__()
        counts = np.asarray(class_counts, dtype=np.float64)
        require(counts.ndim == 1 and counts.size > 0 and bool(np.all(np.isfinite(counts) & (counts >= 0))),
                "class_counts", list(class_counts), "must be a non-empty list of counts >= 0")
        require(is_real(num_samples) and num_samples >= 1, "num_samples", num_samples, "must be >= 1")
        require(is_real(kappa) and kappa >= 0, "kappa", kappa, "κ must be >= 0")
        require(is_real(bias_lambda) and bias_lambda > 0, "bias_lambda", bias_lambda, "λ must be > 0")
        require(isinstance(adaptive, Sequence) and not isinstance(adaptive, str)
                and all(name in FACTORS for name in adaptive), "adaptive", adaptive,
                f"must be a list of factor names among {', '.join(FACTORS)}")
        require(focal in FOCAL, "focal", focal, f"must be one of {', '.join(FOCAL)}")
        require(is_real(lambda0) and lambda0 >= 0, "lambda0", lambda0, "λ0 must be >= 0")
        require(is_real(max_ratio) and max_ratio >= 1, "max_ratio", max_ratio, "must be >= 1")
        check_reduction(reduction)
        self.select_implementation(implementation)  # the kernel is exact for soft targets (module docstring)
        groups = class_groups(counts.tolist())
        specs = dict(zip(FACTORS, (lambda1_neg, lambda2_neg, lambda1_pos, lambda2_pos), strict=True))
        factors = [resolve_factor(name, spec, groups) for name, spec in specs.items()]

        self.num_classes = counts.size
        self.kappa, self.bias_lambda, self.focal = float(kappa), float(bias_lambda), focal
        self.adaptive = [str(name) for name in adaptive]
        self.lambda0, self.max_ratio, self.reduction = float(lambda0), float(max_ratio), reduction
        # Which of λ1 (the logit scale) and λ2 (the divisor) are 1 for every class and label (fused path skips them).
        self._unit = [all(v == 1.0 for v in factors[i] + factors[i + 2]) and not {FACTORS[i], FACTORS[i + 2]}
                      & set(self.adaptive) for i in (0, 1)]
        detached = (["APAF exponents γ±"] if focal == "apaf" else []) + [f"APR {n}" for n in self.adaptive]
        self.detached_terms = ", ".join(detached)  # batch-statistic factors, see the module docstring
        # Derived from the statistics, float64, cast to the logits' dtype per call.
        self.register_buffer("factors", torch.tensor(factors, dtype=torch.float64), persistent=False)
        self.register_buffer("adaptive_sign", torch.tensor(
            [_ADAPTIVE_SIGN[n] if n in self.adaptive else 0.0 for n in FACTORS], dtype=torch.float64),
            persistent=False)
        self.register_buffer("bias", torch.from_numpy(ntr_bias(counts, float(num_samples), self.kappa,
                                                               self.bias_lambda)), persistent=False)
        # The fused path's per-class constants, rows (negative, positive label) of λ1, 1/λ2 and γ, and the power of
        # p̄⁺/p̄⁻ that scales each (APR, APAF): all of them in a handful of small ops per call.
        gammas = [[self.lambda0] * counts.size] * 2 if focal != "none" else []
        self.register_buffer("fused_constants", torch.tensor(
            [factors[0], factors[2], [1.0 / v for v in factors[1]], [1.0 / v for v in factors[3]]] + gammas,
            dtype=torch.float64), persistent=False)
        sign = [_ADAPTIVE_SIGN[n] if n in self.adaptive else 0.0 for n in FACTORS]  # λ1⁻ λ2⁻ λ1⁺ λ2⁺
        powers = [sign[0], sign[2], -sign[1], -sign[3]] + ([-1.0, 1.0] if focal == "apaf" else [0.0] * len(gammas))
        self.register_buffer("fused_powers", torch.tensor(powers, dtype=torch.float64).unsqueeze(1), persistent=False)
        group_index = torch.tensor([GROUPS.index(g) for g in groups])
        self.register_buffer("group_members", group_index == torch.arange(len(GROUPS)).unsqueeze(1),
                             persistent=False)
        self.register_buffer("group_index", group_index, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_inputs(logits, targets, self.num_classes)
        y = targets.to(logits.dtype)
        needs_ratio = self.focal == "apaf" or bool(self.adaptive)
        return self.dispatch(logits, y, self.log_ratio(logits, y) if needs_ratio else None)

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor, log_ratio: torch.Tensor | None) -> torch.Tensor:
        lambda1_neg, lambda2_neg, lambda1_pos, lambda2_pos = self.pr_factors(log_ratio, logits.dtype)
        scale = y * lambda1_pos + (1.0 - y) * lambda1_neg
        # softplus(s·λ1·z') = BCE(λ1·z', y) for binary y, s = 1 − 2y.
        loss = (y / lambda2_pos + (1.0 - y) / lambda2_neg) * bce_with_logits(
            scale * (logits + self.bias.to(logits.dtype)), y)
        if self.focal != "none":
            gamma_pos, gamma_neg = self.focal_exponents(log_ratio, logits.dtype)
            gamma = y * gamma_pos + (1.0 - y) * gamma_neg
            # σ(s·z)^γ through exp(γ·logsigmoid): finite value and gradient for any γ >= 0 and logit.
            loss = torch.exp(gamma * F.logsigmoid((1.0 - 2.0 * y) * logits)) * loss
        return reduce_instances(loss.sum(dim=1), y, self.reduction)

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor, log_ratio: torch.Tensor | None) -> torch.Tensor:
        """The same loss through ``FusedProbabilityGuidedLoss``: per-class constants, None where trivial."""
        dtype = logits.dtype
        constants = self.fused_constants.to(dtype)  # rows λ1⁻ λ1⁺ 1/λ2⁻ 1/λ2⁺ [γ⁻ γ⁺], × (p̄⁺/p̄⁻)^power
        if log_ratio is not None:
            constants = constants * torch.exp(self.fused_powers.to(dtype) * log_ratio)
        negative, difference = constants[0::2], constants[1::2] - constants[0::2]
        pairs = [(negative[k], difference[k]) for k in range(len(negative))] + [(None, None)]
        scale = (None, None) if self._unit[0] else pairs[0]
        weight = (None, None) if self._unit[1] else pairs[1]
        gamma = pairs[2] if self.focal != "none" else (None, None)
        bias = self.bias.to(dtype) if self.kappa != 0 else None  # b = −0 for κ = 0: z + b = z
        return FusedProbabilityGuidedLoss.apply(logits, y, bias, *scale, *weight, *gamma, self.reduction)

    def pr_factors(self, log_ratio: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """λ1⁻, λ2⁻, λ1⁺, λ2⁺ per class (4, C); adaptive ones scaled by (p̄⁺/p̄⁻)^{±1} (APR)."""
        factors = self.factors.to(dtype)
        if self.adaptive:
            factors = factors * torch.exp(self.adaptive_sign.to(dtype).unsqueeze(1) * log_ratio)
        return factors

    def focal_exponents(self, log_ratio: torch.Tensor | None, dtype: torch.dtype) -> tuple:
        """γ⁺, γ⁻ per class: λ0·(p̄⁺/p̄⁻)^{±1} for APAF (eq. 8), λ0 for the fixed focal form."""
        if self.focal == "fixed":
            return self.lambda0, self.lambda0
        return self.lambda0 * torch.exp(log_ratio), self.lambda0 * torch.exp(-log_ratio)

    def log_ratio(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log(p̄⁺/p̄⁻) per class (eq. 6-7), without gradient, clamped to ±log(max_ratio).

        0 (p̄⁺ = p̄⁻) for a class whose p̄⁺ or p̄⁻ stays unknown after the group fill. A mean that
        underflows to 0 counts as the dtype's smallest normal number: the clamp then decides, and the
        ratio is 1 only if both underflow (float32: every logit of the class below about −87).
        """
        p = torch.sigmoid(logits.detach())
        positive = torch.gt(y.detach(), 0.5, out=torch.empty_like(p))  # 1.0 / 0.0 (a bool mask is slow here)
        count_pos = positive.sum(dim=0)
        sum_pos = positive.mul_(p).sum(dim=0)                          # Σ p over positive labels ...
        sum_neg = p.sub_(positive).sum(dim=0)                          # ... and the rest: p − p·[y > ½], exact
        count = torch.stack((count_pos, y.shape[0] - count_pos))
        mean, known = self._group_filled_mean(torch.stack((sum_pos, sum_neg)), count)  # p̄⁺, p̄⁻: (2, C)
        tiny = torch.finfo(p.dtype).tiny
        log_mean = mean.clamp_min(tiny).log()
        bound = math.log(self.max_ratio)
        return torch.where(known[0] & known[1], log_mean[0] - log_mean[1], 0.0).clamp(-bound, bound)

    def _group_filled_mean(self, total: torch.Tensor, count: torch.Tensor) -> tuple:
        """Per-class means total / count (eq. 6) of the label sets in the rows of ``total`` and ``count`` (K, C);
        a class with no label of a set takes the mean of its group's classes that have one (eq. 7). Returns
        (mean, known), both (K, C). (Two (B, C) passes fewer than one mean per set: see ``log_ratio``.)"""
        known = count > 0
        mean = total / count.clamp_min(1)
        members = (self.group_members & known.unsqueeze(1)).to(total.dtype)  # (K, groups, C): classes with a mean
        group_count = members.sum(dim=2)
        group_mean = (members @ mean.unsqueeze(2)).squeeze(2) / group_count.clamp_min(1)
        filled = torch.where(known, mean, group_mean[:, self.group_index])
        return filled, known | (group_count > 0)[:, self.group_index]

    def extra_repr(self) -> str:
        return (f"kappa={self.kappa}, bias_lambda={self.bias_lambda}, adaptive={self.adaptive}, "
                f"focal={self.focal}, lambda0={self.lambda0}, max_ratio={self.max_ratio}, "
                f"reduction={self.reduction}, implementation={self.implementation}")


def resolve_factor(name: str, spec: object, groups: Sequence[str]) -> list[float]:
    """One value per class from a number, a ``{head, medium, tail}`` mapping or a per-class list."""
    if isinstance(spec, Mapping):
        require(set(spec) == set(GROUPS), name, spec, "a per-group factor needs exactly the keys head, medium, tail")
        values = [spec[g] for g in groups]
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        require(len(spec) == len(groups), name, spec, f"a per-class factor needs one value per class "
                                                       f"({len(groups)})")
        values = list(spec)
    else:
        values = [spec] * len(groups)
    require(all(is_real(v) and v > 0 for v in values), name, spec, "scaling factors must be numbers > 0")
    return [float(v) for v in values]


def ntr_bias(counts: np.ndarray, num_samples: float, kappa: float, bias_lambda: float) -> np.ndarray:
    """b_k = −(κ/λ)·log(N/n_k − 1) (DB loss reference code, λ its ``neg_scale``), n_k clipped into [½, N − ½]
    (float64)."""
    n = np.clip(counts, 0.5, num_samples - 0.5)
    return -(kappa / bias_lambda) * np.log(num_samples / n - 1.0)
