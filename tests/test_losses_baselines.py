"""Baseline losses (LOSSES.md §2, §4) against independent scalar float64 derivations.

ASL, DB/DB-Focal, LDAM, the two class-balanced forms and sigmoidF1/soft-F1. Each reference below is
written from the paper's formulas with Python floats, one element at a time: probabilities as
1/(1 + e^{−z}), ASL's shift as max(p − m, 0) and log(1 − p_m) taken directly, DB's weights from the
per-instance sums of 1/n, class-balanced weights as (1 − β)/(1 − β^n) normalised to C, and F1 from
tp, fp and fn as the paper defines them (the implementations compute several of these differently).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from mlc.errors import ConfigError
from mlc.losses.asl import AsymmetricLoss
from mlc.losses.class_balanced import ClassBalancedPerClassLoss, ClassBalancedPerInstanceLoss
from mlc.losses.db import DistributionBalancedLoss
from mlc.losses.f1 import SigmoidF1Loss
from mlc.losses.ldam import LDAMLoss
from tests.conftest import compose

COUNTS = [120.0, 35.0, 7.0, 480.0, 1.0]
N = 1500


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def batch(seed: int = 0, b: int = 12, c: int = 5, scale: float = 3.0):
    """Random logits and targets with an all-negative, an all-positive and a single-positive row."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = (torch.rand(b, c, generator=g, dtype=torch.float64) < 0.3).double()
    y[0] = 0.0
    y[1] = 1.0
    y[2] = 0.0
    y[2, c // 2] = 1.0
    return z, y


def elements(z: torch.Tensor, y: torch.Tensor):
    """(i, c, z_ic, y_ic) as Python floats."""
    for i, (zi, yi) in enumerate(zip(z.tolist(), y.tolist(), strict=True)):
        for c, (zc, yc) in enumerate(zip(zi, yi, strict=True)):
            yield i, c, zc, yc


def extreme(z: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """±100 logits, with one row confidently wrong."""
    out = torch.where(torch.rand(z.shape, generator=torch.Generator().manual_seed(1)) < 0.5, 100.0, -100.0)
    out[3] = torch.where(y[3] == 1, -100.0, 100.0)
    return out.to(dtype)


def autograd(loss, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    loss(z, y).backward()
    return z.grad


def assert_invalid(cls, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert err.value.key == key and str(err.value).startswith(f"{key}=")


def labels_denominator(y: torch.Tensor) -> float:
    """#positive labels + #negative instances (mlc's J reduction)."""
    return float(y.sum() + (y.sum(1) == 0).sum())


# --- ASL -------------------------------------------------------------------------------------------------------

def asl_reference(z, y, gamma_pos=0.0, gamma_neg=4.0, clip=0.05) -> float:
    total = 0.0
    for _, _, zc, yc in elements(z, y):
        p, one_minus_p = sigmoid(zc), 1.0 / (1.0 + math.exp(zc))
        if yc == 1:
            total += -(one_minus_p**gamma_pos) * -softplus(-zc)  # log p = −softplus(−z)
        else:
            p_m = max(p - clip, 0.0)
            one_minus_pm = min(one_minus_p + clip, 1.0)           # 1 − max(p − m, 0)
            total += -(p_m**gamma_neg) * math.log(one_minus_pm)
    return total


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kwargs", [dict(), dict(gamma_pos=1.0, gamma_neg=2.0, clip=0.2), dict(clip=0.0),
                                    dict(gamma_pos=0.5, gamma_neg=0.5, clip=0.1), dict(gamma_neg=0.0)])
def test_asl_value_matches_scalar_reference(seed, kwargs):
    z, y = batch(seed)
    for detach in (True, False):
        loss = AsymmetricLoss(**kwargs, detach_focal_weight=detach)
        assert loss(z, y).item() == pytest.approx(asl_reference(z, y, **kwargs), rel=1e-12)


def test_asl_tiny_case_by_hand():
    z = torch.tensor([[0.0, 0.0], [math.log(0.04 / 0.96), 2.0]], dtype=torch.float64)  # p = .5 .5 / .04 .88
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    expected = math.log(2) + 0.45**4 * -math.log(0.55) + 0.0 + softplus(-2.0)  # p = .04 <= m: no loss
    assert AsymmetricLoss()(z, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs", [dict(), dict(gamma_pos=1.0, gamma_neg=2.0, clip=0.2), dict(clip=0.0)])
def test_asl_detached_gradient_is_the_closed_form_with_constant_weights(kwargs):
    """Reference (no-grad weights): ∂/∂z = −w+·(1 − p) for positives; w−·p(1 − p)/(1 − p + m) if p > m else 0."""
    z, y = batch(2)
    loss = AsymmetricLoss(**kwargs)
    assert loss.detached_terms
    gamma_pos, gamma_neg, clip = kwargs.get("gamma_pos", 0.0), kwargs.get("gamma_neg", 4.0), kwargs.get("clip", 0.05)
    expected = torch.zeros_like(z)
    for i, c, zc, yc in elements(z, y):
        p = sigmoid(zc)
        if yc == 1:
            expected[i, c] = -((1 - p) ** gamma_pos) * (1 - p)
        elif p > clip:
            expected[i, c] = (p - clip) ** gamma_neg * p * (1 - p) / (1 - p + clip)
    torch.testing.assert_close(autograd(loss, z, y), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kwargs", [dict(), dict(gamma_pos=1.0, gamma_neg=0.5, clip=0.1), dict(clip=0.0)])
def test_asl_differentiated_weights_pass_gradcheck(kwargs):
    z, y = batch(3, b=6, c=4, scale=2.0)
    loss = AsymmetricLoss(**kwargs, detach_focal_weight=False)
    assert not loss.detached_terms
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-8)


def test_asl_easy_negatives_below_the_margin_give_nothing():
    z = torch.tensor([[-5.0, math.log(0.049 / 0.951)]], dtype=torch.float64)  # p = 0.0067, 0.049 < m
    y = torch.zeros_like(z)
    for detach in (True, False):
        loss = AsymmetricLoss(gamma_neg=0.5, detach_focal_weight=detach)
        assert loss(z, y).item() == 0.0 and torch.equal(autograd(loss, z, y), torch.zeros_like(z))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", [dict(), dict(gamma_pos=0.5, gamma_neg=0.5, detach_focal_weight=False)])
def test_asl_extreme_logits_match_the_reference(dtype, kwargs):
    z, y = batch(4)
    z = extreme(z, y, dtype)
    loss = AsymmetricLoss(**kwargs)
    grad = autograd(loss, z, y.to(dtype))
    reference_kwargs = {k: v for k, v in kwargs.items() if k != "detach_focal_weight"}
    assert torch.isfinite(grad).all()
    assert loss(z, y.to(dtype)).item() == pytest.approx(asl_reference(z.double(), y, **reference_kwargs), rel=1e-5)


@pytest.mark.parametrize("kwargs,key", [
    (dict(gamma_pos=-1), "gamma_pos"), (dict(gamma_neg="4"), "gamma_neg"), (dict(clip=1.0), "clip"),
    (dict(clip=-0.1), "clip"), (dict(detach_focal_weight=1), "detach_focal_weight"),
    (dict(reduction="avg"), "reduction"),
])
def test_asl_invalid_fields_name_the_key(kwargs, key):
    assert_invalid(AsymmetricLoss, kwargs, key)


# --- DB / DB-Focal ---------------------------------------------------------------------------------------------

DB_COCO = dict(a=0.1, b=10.0, mu=0.2, kappa=0.05, neg_scale=2.0)
DB_VOC = dict(a=0.1, b=10.0, mu=0.3, kappa=0.05, neg_scale=5.0)


def db_reference(z, y, counts, num_samples, base="focal", a=0.1, b=10.0, mu=0.2, kappa=0.05, neg_scale=2.0,
                 gamma=2.0, balance=2.0) -> float:
    lam = neg_scale
    counts = [min(max(n, 1.0), num_samples - 1.0) for n in counts]
    bias = [-(kappa / lam) * math.log(num_samples / n - 1.0) for n in counts]
    total = 0.0
    for i, c, zc, yc in elements(z, y):
        repeat = sum(1.0 / n for n, yj in zip(counts, y[i].tolist(), strict=True) if yj == 1)
        weight = a + sigmoid(b * ((1.0 / counts[c]) / repeat - mu)) if repeat > 0 else a + 1.0
        zr = zc + bias[c]
        if yc == 1:
            element, one_minus_pt = weight * softplus(-zr), sigmoid(-zr)
        else:
            element, one_minus_pt = weight / lam * softplus(lam * zr), sigmoid(lam * zr)
        total += element * (balance * one_minus_pt**gamma if base == "focal" else 1.0)
    return total / y.numel()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("base", ["bce", "focal"])
@pytest.mark.parametrize("params", [DB_COCO, DB_VOC, dict(a=0.3, b=4.0, mu=0.5, kappa=0.0, neg_scale=1.0)])
def test_db_value_matches_scalar_reference(seed, base, params):
    z, y = batch(seed)
    loss = DistributionBalancedLoss(COUNTS, N, base=base, **params)
    assert loss(z, y).item() == pytest.approx(db_reference(z, y, COUNTS, N, base, **params), rel=1e-12)


def test_db_tiny_case_by_hand():
    """Two classes, n = (10, 90) of N = 100; one instance with class 0 only, z = 0."""
    loss = DistributionBalancedLoss([10.0, 90.0], 100, base="bce")
    v0, v1 = -0.025 * math.log(9.0), 0.025 * math.log(9.0)            # −(κ/λ)·log(N/n − 1)
    r0, r1 = 0.1 + sigmoid(10 * (1.0 - 0.2)), 0.1 + sigmoid(10 * (1 / 9 - 0.2))  # r = 1 and (1/90)/(1/10)
    expected = (r0 * softplus(-v0) + r1 / 2 * softplus(2 * v1)) / 2
    z, y = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-12)


def test_db_bce_gradient_closed_form():
    """∂/∂z = r̂·(σ(z') − 1) for positives, r̂·σ(λz') for negatives, over B·C."""
    z, y = batch(5)
    loss = DistributionBalancedLoss(COUNTS, N, base="bce", **DB_VOC)
    bias = [-(0.05 / 5.0) * math.log(N / n - 1.0) for n in COUNTS]
    expected = torch.zeros_like(z)
    for i, c, zc, yc in elements(z, y):
        repeat = sum(1.0 / n for n, yj in zip(COUNTS, y[i].tolist(), strict=True) if yj == 1)
        weight = 0.1 + sigmoid(10.0 * ((1.0 / COUNTS[c]) / repeat - 0.3)) if repeat > 0 else 1.1
        zr = zc + bias[c]
        expected[i, c] = weight * (sigmoid(zr) - 1.0 if yc == 1 else sigmoid(5.0 * zr)) / z.numel()
    torch.testing.assert_close(autograd(loss, z, y), expected, rtol=1e-10, atol=1e-14)


def test_db_focal_gradcheck():
    z, y = batch(6, b=6, c=5, scale=2.0)
    loss = DistributionBalancedLoss(COUNTS, N, base="focal", **DB_VOC)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-8)


def test_db_negative_instances_get_the_largest_smoothed_weight():
    loss = DistributionBalancedLoss(COUNTS, N, base="bce", kappa=0.0, neg_scale=1.0)
    z, y = torch.zeros(1, 5, dtype=torch.float64), torch.zeros(1, 5, dtype=torch.float64)
    assert loss(z, y).item() == pytest.approx(1.1 * math.log(2), rel=1e-12)  # r̂ = a + 1


@pytest.mark.parametrize("counts", [[0.0, 50.0, 100.0], [3.0, 100.0, 250.0]])
def test_db_empty_and_ubiquitous_classes_stay_finite(counts):
    loss = DistributionBalancedLoss(counts, 100)
    z, y = batch(7, c=3)
    grad = autograd(loss, z, y)
    assert torch.isfinite(loss(z, y)) and torch.isfinite(grad).all()
    assert loss(z, y).item() == pytest.approx(db_reference(z, y, counts, 100), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("base", ["bce", "focal"])
def test_db_extreme_logits_match_the_reference(dtype, base):
    z, y = batch(8)
    z = extreme(z, y, dtype)
    loss = DistributionBalancedLoss(COUNTS, N, base=base)
    assert torch.isfinite(autograd(loss, z, y.to(dtype))).all()
    assert loss(z, y.to(dtype)).item() == pytest.approx(db_reference(z.double(), y, COUNTS, N, base), rel=1e-5)


@pytest.mark.parametrize("params", [DB_COCO, DB_VOC, dict(a=0.3, b=4.0, mu=0.5, kappa=0.0, neg_scale=1.0),
                                    dict(gamma=0.0, balance=1.5), dict(gamma=0.5, neg_scale=3.0), dict(b=0.0)])
@pytest.mark.parametrize("base", ["bce", "focal"])
@pytest.mark.parametrize("reduction", ["mean", "labels", "instances", "sum"])
def test_db_fused_matches_autograd_values_and_gradients(params, base, reduction):
    z, y = batch(11, b=16, c=5, scale=3.0)
    results = []
    for implementation in ("fused", "autograd"):
        loss = DistributionBalancedLoss(COUNTS, N, base=base, reduction=reduction, implementation=implementation,
                                        **params)
        x = z.clone().requires_grad_(True)
        out = loss(x, y)
        out.backward()
        results.append((out.item(), x.grad))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("base", ["bce", "focal"])
def test_db_fused_gradcheck(base):
    z, y = batch(9, b=6, c=5, scale=2.0)
    loss = DistributionBalancedLoss(COUNTS, N, base=base, gamma=1.5, **DB_VOC)
    assert loss.implementation == "fused"
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("base", ["bce", "focal"])
def test_db_fused_matches_autograd_at_extreme_logits(dtype, base):
    z, y = batch(8)
    z = extreme(z, y, dtype)
    fused, readable = (DistributionBalancedLoss(COUNTS, N, base=base, implementation=i) for i in ("fused", "autograd"))
    assert fused(z, y.to(dtype)).item() == pytest.approx(readable(z, y.to(dtype)).item(), rel=1e-6)
    torch.testing.assert_close(autograd(fused, z, y.to(dtype)), autograd(readable, z, y.to(dtype)))


@pytest.mark.parametrize("kwargs,key", [
    (dict(base="hinge"), "base"), (dict(a=-0.1), "a"), (dict(b=-1), "b"), (dict(mu=float("nan")), "mu"),
    (dict(kappa=-0.05), "kappa"), (dict(neg_scale=0), "neg_scale"), (dict(gamma=-2), "gamma"),
    (dict(balance=0), "balance"),
    (dict(num_samples=1), "num_samples"), (dict(class_counts=[5.0, -1.0]), "class_counts"),
    (dict(class_counts=[]), "class_counts"), (dict(reduction="avg"), "reduction"),
    (dict(implementation="cuda"), "implementation"),
])
def test_db_invalid_fields_name_the_key(kwargs, key):
    assert_invalid(DistributionBalancedLoss, dict(class_counts=COUNTS, num_samples=N) | kwargs, key)


# --- LDAM ------------------------------------------------------------------------------------------------------

def ldam_reference(z, y, counts, max_m=0.5, s=1.0) -> float:
    seen = [n for n in counts if n > 0]
    margins = [max_m * (min(seen) / n) ** 0.25 if n > 0 else max_m for n in counts]
    total = sum(softplus(-s * (zc - margins[c])) if yc == 1 else softplus(s * zc) for _, c, zc, yc in elements(z, y))
    return total / y.numel()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_m,s", [(0.5, 1.0), (0.5, 30.0), (1.0, 0.5)])
def test_ldam_value_matches_scalar_reference(seed, max_m, s):
    z, y = batch(seed)
    loss = LDAMLoss(COUNTS, max_m=max_m, s=s)
    assert loss(z, y).item() == pytest.approx(ldam_reference(z, y, COUNTS, max_m, s), rel=1e-12)


def test_ldam_tiny_case_by_hand():
    loss = LDAMLoss([1.0, 16.0, 0.0])  # margins 0.5, 0.5·(1/16)^{1/4} = 0.25, and max_m for the empty class
    torch.testing.assert_close(loss.margins, torch.tensor([0.5, 0.25, 0.5], dtype=torch.float64))
    z = torch.tensor([[0.5, 0.25, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    assert loss(z, y).item() == pytest.approx(math.log(2), rel=1e-12)  # every element sits at its margin


def test_ldam_gradient_closed_form():
    z, y = batch(3)
    s = 2.0
    loss = LDAMLoss(COUNTS, s=s)
    margins = [0.5 * (1.0 / n) ** 0.25 for n in COUNTS]
    expected = torch.zeros_like(z)
    for i, c, zc, yc in elements(z, y):
        expected[i, c] = s * (sigmoid(s * (zc - yc * margins[c])) - yc) / z.numel()
    torch.testing.assert_close(autograd(loss, z, y), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kwargs,key", [
    (dict(max_m=0), "max_m"), (dict(s=-1.0), "s"), (dict(class_counts=[1.0, float("inf")]), "class_counts"),
    (dict(reduction="avg"), "reduction"),
])
def test_ldam_invalid_fields_name_the_key(kwargs, key):
    assert_invalid(LDAMLoss, dict(class_counts=COUNTS) | kwargs, key)


# --- class-balanced, per class and per instance ----------------------------------------------------------------

def cb_reference_weights(counts, beta) -> list[float]:
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w / sum(raw) * len(raw) for w in raw]


def element_loss(zc: float, yc: float, base: str, gamma: float, balance: float = 1.0) -> float:
    nll = softplus(-zc) if yc == 1 else softplus(zc)
    return nll if base == "bce" else balance * sigmoid(-zc if yc == 1 else zc) ** gamma * nll


def cb_reference(z, y, counts, mode, base="bce", beta=0.9999, gamma=2.0, negative_weight=1.0, balance=1.0) -> float:
    w = cb_reference_weights(counts, beta)
    total = 0.0
    for zi, yi in zip(z.tolist(), y.tolist(), strict=True):
        losses = [element_loss(zc, yc, base, gamma, balance) for zc, yc in zip(zi, yi, strict=True)]
        present = [w[c] for c, yc in enumerate(yi) if yc == 1]
        if mode == "class":
            total += sum(wc * lc for wc, lc in zip(w, losses, strict=True))
        else:
            s = (sum(present) / len(present) if mode == "mean" else sum(present)) if present else negative_weight
            total += s * sum(losses)
    return total / labels_denominator(y)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("base,beta,gamma", [("bce", 0.9999, 2.0), ("focal", 0.999, 2.0), ("focal", 0.9, 0.5)])
@pytest.mark.parametrize("mode", ["class", "mean", "sum"])
def test_class_balanced_value_matches_scalar_reference(seed, base, beta, gamma, mode):
    z, y = batch(seed)
    if mode == "class":
        loss = ClassBalancedPerClassLoss(COUNTS, base=base, beta=beta, gamma=gamma)
    else:
        loss = ClassBalancedPerInstanceLoss(COUNTS, base=base, beta=beta, gamma=gamma, instance_weight=mode,
                                            negative_weight=0.7)
    expected = cb_reference(z, y, COUNTS, mode, base, beta, gamma, negative_weight=0.7)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("mode", ["class", "mean", "sum"])
@pytest.mark.parametrize("base,balance,gamma", [("focal", 2.0, 2.0), ("focal", 0.5, 1.5), ("bce", 2.0, 2.0)])
def test_class_balanced_balance_factor_matches_scalar_reference(mode, base, balance, gamma):
    """``balance`` multiplies the focal loss (the DB paper's CB-focal runs with 2); BCE ignores it, as γ."""
    z, y = batch(3)
    kwargs = dict(base=base, beta=0.999, gamma=gamma, balance=balance)
    if mode == "class":
        loss = ClassBalancedPerClassLoss(COUNTS, **kwargs)
    else:
        loss = ClassBalancedPerInstanceLoss(COUNTS, **kwargs, instance_weight=mode, negative_weight=0.7)
    expected = cb_reference(z, y, COUNTS, mode, base, 0.999, gamma, negative_weight=0.7,
                            balance=balance if base == "focal" else 1.0)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-12)
    default = cb_reference(z, y, COUNTS, mode, base, 0.999, gamma, negative_weight=0.7)
    assert expected == pytest.approx(default * (balance if base == "focal" else 1.0), rel=1e-12)


def test_class_balanced_balance_scales_the_focal_gradient():
    z, y = batch(4)
    plain, doubled = (ClassBalancedPerClassLoss(COUNTS, base="focal", balance=b) for b in (1.0, 2.0))
    torch.testing.assert_close(autograd(doubled, z, y), 2.0 * autograd(plain, z, y), rtol=1e-12, atol=1e-15)


def test_class_balanced_tiny_case_by_hand():
    """β = 0: uniform weights 1, so both are Σ BCE / (#positive labels + #negative instances)."""
    z = torch.zeros(2, 2, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    expected = 4 * math.log(2) / 2  # 4 elements of log 2; 1 positive label + 1 negative instance
    assert ClassBalancedPerClassLoss([5.0, 50.0], beta=0.0)(z, y).item() == pytest.approx(expected, rel=1e-12)
    assert ClassBalancedPerInstanceLoss([5.0, 50.0], beta=0.0)(z, y).item() == pytest.approx(expected, rel=1e-12)
    ignore_negatives = ClassBalancedPerInstanceLoss([5.0, 50.0], beta=0.0, negative_weight=0.0)
    assert ignore_negatives(z, y).item() == pytest.approx(2 * math.log(2) / 2, rel=1e-12)


def test_class_balanced_gradient_closed_forms():
    """BCE base: ∂/∂z_ic = w_c·(σ(z) − y)/D per class, s_i·(σ(z) − y)/D per instance."""
    z, y = batch(4)
    w = cb_reference_weights(COUNTS, 0.999)
    denominator = labels_denominator(y)
    p = torch.sigmoid(z)
    per_class = torch.tensor(w, dtype=torch.float64) * (p - y) / denominator
    torch.testing.assert_close(autograd(ClassBalancedPerClassLoss(COUNTS, beta=0.999), z, y), per_class)
    s = torch.tensor([sum(w[c] for c in range(5) if yi[c]) if any(yi) else 1.0 for yi in y.tolist()],
                     dtype=torch.float64)
    per_instance = s.unsqueeze(1) * (p - y) / denominator
    loss = ClassBalancedPerInstanceLoss(COUNTS, beta=0.999, instance_weight="sum")
    torch.testing.assert_close(autograd(loss, z, y), per_instance)


@pytest.mark.parametrize("cls", [ClassBalancedPerClassLoss, ClassBalancedPerInstanceLoss])
def test_class_balanced_focal_gradcheck(cls):
    z, y = batch(5, b=6, c=5, scale=2.0)
    loss = cls(COUNTS, base="focal", gamma=1.5, beta=0.99)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-8)


def test_per_instance_differs_from_the_any_class_papers_negative_pseudo_class():
    """cb_bce weights a negative instance by a pseudo-class from n_neg; cb_per_instance does not use n_neg."""
    z, y = torch.zeros(3, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64)
    cfg = {o: compose([f"loss={o}"]).loss for o in ("cb_bce", "cb_per_instance")}
    values = {o: [instantiate(c, class_counts=COUNTS, negative_count=n, num_samples=N)(z, y).item()
                  for n in (10.0, 10000.0)] for o, c in cfg.items()}
    assert values["cb_bce"][0] != pytest.approx(values["cb_bce"][1])
    assert values["cb_per_instance"] == pytest.approx([5 * math.log(2)] * 2)


@pytest.mark.parametrize("cls,kwargs,key", [
    (ClassBalancedPerClassLoss, dict(base="hinge"), "base"), (ClassBalancedPerClassLoss, dict(beta=1.0), "beta"),
    (ClassBalancedPerClassLoss, dict(gamma=-1), "gamma"), (ClassBalancedPerClassLoss, dict(reduction="x"), "reduction"),
    (ClassBalancedPerClassLoss, dict(balance=0.0), "balance"), (ClassBalancedPerClassLoss, dict(balance=-2), "balance"),
    (ClassBalancedPerInstanceLoss, dict(balance="2"), "balance"),
    (ClassBalancedPerInstanceLoss, dict(balance=float("inf")), "balance"),
    (ClassBalancedPerInstanceLoss, dict(instance_weight="max"), "instance_weight"),
    (ClassBalancedPerInstanceLoss, dict(negative_weight=-1), "negative_weight"),
    (ClassBalancedPerInstanceLoss, dict(class_counts=[1.0, -2.0]), "class_counts"),
])
def test_class_balanced_invalid_fields_name_the_key(cls, kwargs, key):
    assert_invalid(cls, dict(class_counts=COUNTS) | kwargs, key)


# --- sigmoidF1 / soft-F1 ---------------------------------------------------------------------------------------

def f1_reference(z, y, beta=1.0, eta=0.0, eps=1e-16, apply_to="probability") -> float:
    b, c = y.shape
    costs = []
    for k in range(c):
        tp = fp = fn = 0.0
        for i in range(b):
            u = sigmoid(z[i, k].item()) if apply_to == "probability" else z[i, k].item()
            s = 1.0 / (1.0 + math.exp(-beta * (u + eta)))
            yk = y[i, k].item()
            tp, fp, fn = tp + s * yk, fp + s * (1 - yk), fn + (1 - s) * yk
        costs.append(1.0 - 2 * tp / (2 * tp + fn + fp + eps))
    return sum(costs) / c


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("apply_to", ["probability", "logit"])
@pytest.mark.parametrize("beta,eta", [(1.0, 0.0), (10.0, -0.5), (3.0, 1.0)])
def test_sigmoid_f1_value_matches_scalar_reference_both_forms(seed, apply_to, beta, eta):
    z, y = batch(seed)
    loss = SigmoidF1Loss(beta=beta, eta=eta, apply_to=apply_to)
    assert loss(z, y).item() == pytest.approx(f1_reference(z, y, beta, eta, apply_to=apply_to), rel=1e-12)


def test_soft_f1_tiny_case_by_hand():
    """z = 0: S = σ(0) = 0.5 everywhere. Class 0: y = (1, 0): tp = fp = fn = 0.5, F1 = 1/2. Class 1: y = (1, 1):
    tp = 1, fn = 1, F1 = 2/3."""
    z = torch.zeros(2, 2, dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    assert SigmoidF1Loss(apply_to="logit")(z, y).item() == pytest.approx((0.5 + 1 / 3) / 2, rel=1e-12)


@pytest.mark.parametrize("apply_to", ["probability", "logit"])
def test_sigmoid_f1_gradient_closed_form(apply_to):
    """∂L/∂S_ik = −(2y_ik·D_k − 2tp_k)/(C·D_k²), D_k = Σ S + Σ y + ε; ∂S/∂z = β S(1 − S)·(σ'(z) | 1)."""
    z, y = batch(6)
    beta, eta = 2.0, 0.3
    u = torch.sigmoid(z) if apply_to == "probability" else z
    s = torch.sigmoid(beta * (u + eta))
    tp, d = (s * y).sum(0), s.sum(0) + y.sum(0) + 1e-16
    ds = -(2 * y * d - 2 * tp) / (z.shape[1] * d**2)
    du = torch.sigmoid(z) * (1 - torch.sigmoid(z)) if apply_to == "probability" else torch.ones_like(z)
    loss = SigmoidF1Loss(beta=beta, eta=eta, apply_to=apply_to)
    torch.testing.assert_close(autograd(loss, z, y), ds * beta * s * (1 - s) * du, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_f1_class_without_positives_or_predictions_stays_finite(dtype):
    z = torch.full((4, 3), -100.0, dtype=dtype)
    z[:, 0] = 100.0
    y = torch.zeros(4, 3, dtype=dtype)
    y[:, 0] = 1.0  # class 0 perfect; classes 1, 2: no positive, no prediction
    for apply_to in ("logit", "probability"):
        loss = SigmoidF1Loss(beta=10.0, apply_to=apply_to)
        value, grad = loss(z, y), autograd(loss, z, y)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert SigmoidF1Loss(apply_to="logit")(z, y).item() == pytest.approx(2 / 3, rel=1e-6)  # F1 = 1, 0, 0


def test_f1_sum_reduction():
    z, y = batch(7)
    assert SigmoidF1Loss(reduction="sum")(z, y).item() == pytest.approx(5 * SigmoidF1Loss()(z, y).item(), rel=1e-12)


@pytest.mark.parametrize("kwargs,key", [
    (dict(beta=0), "beta"), (dict(eta=float("inf")), "eta"), (dict(eps=0.0), "eps"),
    (dict(apply_to="prob"), "apply_to"), (dict(reduction="labels"), "reduction"),
])
def test_f1_invalid_fields_name_the_key(kwargs, key):
    assert_invalid(SigmoidF1Loss, kwargs, key)


# --- the options' YAML defaults are the reference values --------------------------------------------------------

@pytest.mark.parametrize("option,expected", [
    ("asl", dict(gamma_pos=0.0, gamma_neg=4.0, clip=0.05, detach_focal_weight=True, reduction="sum")),
    ("db", dict(base="bce", a=0.1, b=10.0, mu=0.2, kappa=0.05, neg_scale=2.0, reduction="mean")),
    ("db_focal", dict(base="focal", a=0.1, b=10.0, mu=0.2, kappa=0.05, neg_scale=2.0, gamma=2.0, balance=2.0,
                      reduction="mean")),
    ("ldam", dict(max_m=0.5, s=1.0, reduction="mean")),
    ("cb_per_class", dict(base="bce", beta=0.9999, balance=1.0, reduction="labels")),
    ("cb_per_instance", dict(base="bce", beta=0.9999, balance=1.0, instance_weight="mean", negative_weight=1.0,
                             reduction="labels")),
    ("sigmoid_f1", dict(beta=1.0, eta=0.0, eps=1e-16, apply_to="probability", reduction="mean")),
    ("soft_f1", dict(beta=1.0, eta=0.0, apply_to="logit", reduction="mean")),
])
def test_option_defaults(option, expected):
    cfg = compose([f"loss={option}"]).loss
    assert {key: cfg[key] for key in expected} == expected


def test_soft_f1_option_is_the_plain_sigmoid():
    z, y = batch(8)
    loss = instantiate(compose(["loss=soft_f1"]).loss, class_counts=COUNTS, negative_count=10, num_samples=N)
    p = torch.sigmoid(z)
    tp, fp, fn = (p * y).sum(0), (p * (1 - y)).sum(0), ((1 - p) * y).sum(0)
    expected = (1 - 2 * tp / (2 * tp + fn + fp + 1e-16)).mean()
    assert loss(z, y).item() == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(loss(z, y).item(), f1_reference(z, y, apply_to="logit"), rtol=1e-12)


# --- fused implementations (ASL) -------------------------------------------------------------------------------

ASL_CONFIGS = [dict(), dict(gamma_pos=1.0, gamma_neg=2.0, clip=0.2), dict(clip=0.0), dict(gamma_neg=0.0),
               dict(gamma_pos=0.5, gamma_neg=0.5, clip=0.1), dict(gamma_pos=2.0, gamma_neg=3.5, clip=0.0),
               dict(gamma_neg=0.0, clip=0.0), dict(gamma_pos=1.0, gamma_neg=9.0, reduction="labels")]


@pytest.mark.parametrize("kwargs", ASL_CONFIGS)
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_asl_fused_matches_autograd_values_and_gradients(kwargs, detach, seed):
    z, y = batch(seed, b=16, c=7, scale=4.0)
    fused = AsymmetricLoss(**kwargs, detach_focal_weight=detach)
    readable = AsymmetricLoss(**kwargs, detach_focal_weight=detach, implementation="autograd")
    assert fused.implementation == "fused"
    assert fused(z, y).item() == pytest.approx(readable(z, y).item(), rel=1e-12)
    torch.testing.assert_close(autograd(fused, z, y), autograd(readable, z, y), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kwargs", ASL_CONFIGS)
def test_asl_fused_passes_gradcheck_without_detached_weights(kwargs):
    z, y = batch(3, b=6, c=4, scale=2.0)
    loss = AsymmetricLoss(**kwargs, detach_focal_weight=False)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", [dict(), dict(gamma_pos=0.5, gamma_neg=0.5, detach_focal_weight=False),
                                    dict(clip=0.0, gamma_pos=1.0, detach_focal_weight=False), dict(gamma_neg=0.0)])
def test_asl_fused_matches_autograd_at_extreme_logits(dtype, kwargs):
    z, y = batch(4)
    z, y = extreme(z, y, dtype), y.to(dtype)
    fused, readable = AsymmetricLoss(**kwargs), AsymmetricLoss(**kwargs, implementation="autograd")
    assert fused(z, y).item() == pytest.approx(readable(z, y).item(), rel=1e-6)
    torch.testing.assert_close(autograd(fused, z, y), autograd(readable, z, y))


def test_asl_invalid_implementation_names_the_key():
    assert_invalid(AsymmetricLoss, dict(implementation="cuda"), "implementation")
