"""J_any and its baselines against an independent scalar float64 derivation (LOSSES.md §1).

The reference here is written from the paper's formulas with Python floats, one instance and class
at a time: p_a as the normalised weighted *geometric mean* of probabilities (not the logit mean the
implementation uses), class-balanced weights as (1 − β)/(1 − β^n) normalised to C + 1, and the
reduction Σ s_i L_i / (#positive labels + #negative instances).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from mlc.errors import ConfigError
from mlc.losses import AnyClassPresenceLoss, class_balanced_weights, focal_with_logits


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def log_sigmoid(x: float) -> float:
    return -softplus(-x)


def element(z: float, y: float, base: str, gamma: float) -> float:
    """−log p_t, times (1 − p_t)^γ for focal; p_t = p if y = 1 else 1 − p."""
    nll = softplus(-z) if y == 1 else softplus(z)
    if base == "bce":
        return nll
    one_minus_pt = math.exp(log_sigmoid(-z) if y == 1 else log_sigmoid(z))
    return one_minus_pt**gamma * nll


def reference_weights(counts: list[float], beta: float) -> list[float]:
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w / sum(raw) * len(raw) for w in raw]


def reference_loss(z: np.ndarray, y: np.ndarray, counts, neg_count, base="bce", lam=0.02, alpha=1.0,
                   beta=0.9999, gamma=2.0) -> float:
    weights = reference_weights([*counts, neg_count], beta) if beta is not None else None
    numerator, denominator = 0.0, 0.0
    for zi, yi in zip(z.tolist(), y.tolist(), strict=True):
        positive = any(v == 1 for v in yi)
        loss_i = sum(element(zc, yc, base, gamma) for zc, yc in zip(zi, yi, strict=True))
        if alpha:
            v = [1.0 if (yc == 1 or not positive) else lam for yc in yi]
            w = [vc / sum(v) for vc in v]
            log_num = sum(wc * log_sigmoid(zc) for wc, zc in zip(w, zi, strict=True))      # log Π p^w
            log_alt = sum(wc * log_sigmoid(-zc) for wc, zc in zip(w, zi, strict=True))     # log Π (1−p)^w
            # p_a = e^num / (e^num + e^alt): −log p_a = softplus(alt − num), −log(1 − p_a) = softplus(num − alt)
            z_a_equiv = log_num - log_alt
            loss_i += alpha * element(z_a_equiv, 1.0 if positive else 0.0, base, gamma)
        if beta is None:
            s_i = 1.0
        else:
            s_i = sum(wc for wc, yc in zip(weights[:-1], yi, strict=True) if yc == 1) if positive else weights[-1]
        numerator += s_i * loss_i
        denominator += sum(yi) if positive else 1
    return numerator / denominator


OPTIONS = {
    "bce": dict(base="bce", alpha=0.0, beta=None),
    "focal": dict(base="focal", alpha=0.0, beta=None),
    "cb_bce": dict(base="bce", alpha=0.0, beta=0.9999),
    "cb_focal": dict(base="focal", alpha=0.0, beta=0.9999),
    "any_bce": dict(base="bce", alpha=1.0, beta=0.9999, lam=0.02),
    "any_focal": dict(base="focal", alpha=1.0, beta=0.9999, lam=0.02),
}
COUNTS = [120.0, 35.0, 7.0, 480.0, 1.0]
NEG_COUNT = 900.0


def batch(seed: int = 0, b: int = 12, c: int = 5, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = (torch.rand(b, c, generator=g, dtype=torch.float64) < 0.3).double()
    y[0] = 0.0  # an all-negative row
    y[1] = 1.0  # an all-positive row
    y[2] = 0.0
    y[2, 3] = 1.0  # single positive
    return z, y


IMPLEMENTATIONS = ["fused", "autograd"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_value_matches_scalar_float64_reference(name, seed, implementation):
    z, y = batch(seed)
    kwargs = OPTIONS[name]
    loss = AnyClassPresenceLoss(COUNTS, NEG_COUNT, implementation=implementation, **kwargs)
    expected = reference_loss(z.numpy(), y.numpy(), COUNTS, NEG_COUNT, **kwargs)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("lam,alpha,beta,gamma,base", [
    (0.0, 1.0, 0.9999, 2.0, "bce"), (0.2, 0.5, 0.99, 2.0, "focal"), (1.0, 2.0, 0.0, 0.5, "focal"),
    (0.05, 1.0, None, 1.0, "bce"), (0.01, 0.3, 0.999, 3.0, "focal"),
])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_hyperparameters_match_reference(lam, alpha, beta, gamma, base, implementation):
    z, y = batch(3)
    loss = AnyClassPresenceLoss(COUNTS, NEG_COUNT, base=base, lam=lam, alpha=alpha, beta=beta, gamma=gamma,
                                implementation=implementation)
    expected = reference_loss(z.numpy(), y.numpy(), COUNTS, NEG_COUNT, base, lam, alpha, beta, gamma)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_any_bce_gradient_closed_form(implementation):
    """dJ/dz_ic = s_i/D · [(σ(z_ic) − y_ic) + α (σ(z_a) − y_a) v_ic/Σv]: every neuron gets (p_a − y_a)."""
    z, y = batch(5)
    lam, alpha = 0.05, 0.7
    loss = AnyClassPresenceLoss(COUNTS, NEG_COUNT, base="bce", lam=lam, alpha=alpha, beta=0.999,
                                implementation=implementation)
    z.requires_grad_(True)
    loss(z, y).backward()
    w = reference_weights([*COUNTS, NEG_COUNT], 0.999)
    expected = torch.zeros_like(z)
    positive = y.sum(1) > 0
    denominator = y.sum() + (~positive).sum()
    for i in range(z.shape[0]):
        v = y[i] + lam * (1 - y[i]) if positive[i] else torch.ones(z.shape[1], dtype=z.dtype)
        z_a = (v * z[i].detach()).sum() / v.sum()
        s = sum(w[c] for c in range(z.shape[1]) if y[i, c] == 1) if positive[i] else w[-1]
        any_term = alpha * (torch.sigmoid(z_a) - float(positive[i])) * v / v.sum()
        expected[i] = s / denominator * (torch.sigmoid(z[i].detach()) - y[i] + any_term)
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", OPTIONS)
def test_gradcheck_float64(name, implementation):
    z, y = batch(7, b=6, c=4, scale=2.0)
    loss = AnyClassPresenceLoss(COUNTS[:4], NEG_COUNT, implementation=implementation, **OPTIONS[name])
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_finite_value_and_gradient(name, dtype, implementation):
    z, y = batch(2)
    z = (torch.where(torch.rand_like(z) < 0.5, 100.0, -100.0)).to(dtype)
    z[3] = torch.where(y[3] == 1, -100.0, 100.0).to(dtype)  # confidently wrong row
    z.requires_grad_(True)
    out = AnyClassPresenceLoss(COUNTS, NEG_COUNT, implementation=implementation, **OPTIONS[name])(z, y.to(dtype))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    expected = reference_loss(z.detach().double().numpy(), y.numpy(), COUNTS, NEG_COUNT, **OPTIONS[name])
    assert out.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", OPTIONS)
def test_all_negative_batch(name):
    z, _ = batch(4)
    y = torch.zeros_like(z)
    z.requires_grad_(True)
    out = AnyClassPresenceLoss(COUNTS, NEG_COUNT, **OPTIONS[name])(z, y)
    out.backward()
    expected = reference_loss(z.detach().numpy(), y.numpy(), COUNTS, NEG_COUNT, **OPTIONS[name])
    assert torch.isfinite(z.grad).all() and out.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", OPTIONS)
def test_float32_agrees_with_float64_and_inputs_untouched(name):
    z, y = batch(8)
    loss = AnyClassPresenceLoss(COUNTS, NEG_COUNT, **OPTIONS[name])
    z32, y32 = z.float(), y.float()
    before = (z32.clone(), y32.clone())
    assert loss(z32, y32).item() == pytest.approx(loss(z, y).item(), rel=1e-5)
    assert torch.equal(z32, before[0]) and torch.equal(y32, before[1])


def test_no_grad_leaves_grad_mode_alone():
    z, y = batch(9)
    loss = AnyClassPresenceLoss(COUNTS, NEG_COUNT)
    with torch.no_grad():
        loss(z, y)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_focal_matches_torchvision_reference_function():
    z, y = batch(10, scale=5.0)
    for gamma in (0.0, 0.5, 2.0, 3.0):
        torch.testing.assert_close(focal_with_logits(z, y, gamma), sigmoid_focal_loss(z, y, alpha=-1, gamma=gamma))


def test_focal_gradient_finite_for_small_gamma_at_saturation():
    z = torch.tensor([[100.0, -100.0]], requires_grad=True)
    focal_with_logits(z, torch.tensor([[1.0, 0.0]]), gamma=0.5).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_class_balanced_weights_formula_and_normalisation():
    counts = [*COUNTS, NEG_COUNT]
    for beta in (0.9, 0.999, 0.9999):
        w = class_balanced_weights(counts, beta)
        assert w.sum() == pytest.approx(len(counts), rel=1e-14)
        np.testing.assert_allclose(w, reference_weights(counts, beta), rtol=1e-9)
    np.testing.assert_array_equal(class_balanced_weights(counts, 0.0), np.ones(len(counts)))


def test_class_balanced_weights_zero_count_classes_do_not_poison_the_rest():
    w = class_balanced_weights([10.0, 0.0, 100.0, 0.0], 0.99)
    assert np.isfinite(w).all() and w[1] == w[3] == 1.0
    np.testing.assert_allclose(w[[0, 2]], reference_weights([10.0, 100.0], 0.99), rtol=1e-12)


def test_negative_pseudo_class_weight_used_for_negative_instances():
    loss = AnyClassPresenceLoss([10.0, 10.0], negative_count=1000.0, alpha=0.0, beta=0.999)
    w = reference_weights([10.0, 10.0, 1000.0], 0.999)
    assert loss.negative_weight.item() == pytest.approx(w[-1], rel=1e-12)
    z = torch.zeros(1, 2, dtype=torch.float64)
    assert loss(z, torch.zeros(1, 2, dtype=torch.float64)).item() == pytest.approx(w[-1] * 2 * math.log(2))


@pytest.mark.parametrize("reduction,divisor", [("labels", None), ("instances", 12), ("mean", 60), ("sum", 1)])
def test_reductions(reduction, divisor):
    z, y = batch(11)
    total = AnyClassPresenceLoss(COUNTS, NEG_COUNT, reduction="sum")(z, y).item()
    out = AnyClassPresenceLoss(COUNTS, NEG_COUNT, reduction=reduction)(z, y).item()
    if divisor is None:
        divisor = y.sum().item() + (y.sum(1) == 0).sum().item()
    assert out == pytest.approx(total / divisor, rel=1e-12)


@pytest.mark.parametrize("kwargs,key", [
    (dict(lam=-0.1), "lam"), (dict(lam=1.5), "lam"), (dict(beta=1.0), "beta"), (dict(beta=-0.1), "beta"),
    (dict(alpha=-1), "alpha"), (dict(gamma=-2), "gamma"), (dict(base="hinge"), "base"),
    (dict(reduction="avg"), "reduction"), (dict(lam="abc"), "lam"), (dict(negative_count=-3), "negative_count"),
])
def test_invalid_hyperparameters_name_the_key(kwargs, key):
    args = dict(class_counts=COUNTS, negative_count=NEG_COUNT) | kwargs
    with pytest.raises(ConfigError) as err:
        AnyClassPresenceLoss(**args)
    assert err.value.key == key and str(err.value).startswith(f"{key}=")


def test_wrong_number_of_classes_is_a_clear_error():
    loss = AnyClassPresenceLoss(COUNTS, NEG_COUNT)
    with pytest.raises(ValueError, match="built for 5 classes"):
        loss(torch.zeros(2, 3), torch.zeros(2, 3))


@pytest.mark.parametrize("name", OPTIONS)
def test_fused_and_autograd_agree_on_large_batches(name):
    """Same value and gradient from both implementations on a negative-heavy 256 × 80 batch (float64)."""
    g = torch.Generator().manual_seed(12)
    z = torch.randn(256, 80, generator=g, dtype=torch.float64) * 4
    y = (torch.rand(256, 80, generator=g, dtype=torch.float64) < 0.05).double()
    y[:128] = 0
    counts = (torch.rand(80, generator=g) * 500 + 1).round().tolist()
    grads = []
    for implementation in IMPLEMENTATIONS:
        x = z.clone().requires_grad_(True)
        value = AnyClassPresenceLoss(counts, 2000, implementation=implementation, **OPTIONS[name])(x, y)
        value.backward()
        grads.append((value.item(), x.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-14)
