"""PR / APR / APAF / PG against an independent scalar float64 derivation (LOSSES.md §3, Lin AAAI 2023).

The reference is written from the paper's equations with Python floats, one label at a time: the NTR
bias −(κ/λ)·log(N/n − 1) with n clipped into [½, N − ½], groups from the raw thresholds (head > 100,
tail < 20), p̄± as plain means of σ(z) (eq. 6, not the implementation's log-mean-exp), the group fill of
eq. 7 and the p̄⁺ = p̄⁻ fallback, γ± = λ0·(p̄⁺/p̄⁻)^{±1} (eq. 8), and eq. 5 / 9 / 10 with the signs of eq. 5.
The exponents and adaptive factors are detached by design, so gradients are checked against the
closed form that holds them constant.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torchvision.ops import sigmoid_focal_loss

from mlc.errors import ConfigError
from mlc.losses.probability_guided import ProbabilityGuidedLoss
from tests.conftest import compose

COUNTS = [150.0, 60.0, 25.0, 8.0, 3.0, 500.0]  # head, medium, medium, tail, tail, head
N = 1000.0
TAIL_UP = {"head": 5.0, "medium": 5.0, "tail": 10.0}
# The four options as conf/loss/*.yaml configures them (test_yaml_options_build_these_settings checks it).
OPTIONS = {
    "pr": dict(lambda1_neg=TAIL_UP, lambda2_neg=5.0, lambda1_pos=1.0, lambda2_pos={"head": 1.0, "medium": 1.0,
               "tail": 2.0}, kappa=0.05, bias_lambda=5.0, adaptive=[], focal="none"),
    "apaf": dict(lambda1_neg=1.0, lambda2_neg=1.0, lambda1_pos=1.0, lambda2_pos=1.0, kappa=0.0, adaptive=[],
                 focal="apaf"),
}
OPTIONS["apr"] = OPTIONS["pr"] | dict(adaptive=["lambda1_neg"])
OPTIONS["pg"] = OPTIONS["pr"] | dict(adaptive=["lambda1_neg"], focal="apaf")


# ---------------------------------------------------------------- the independent float64 reference
def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def group(n: float) -> str:
    return "head" if n > 100 else "tail" if n < 20 else "medium"


def per_class(spec, counts) -> list[float]:
    if isinstance(spec, dict):
        return [spec[group(n)] for n in counts]
    if isinstance(spec, list):
        return spec
    return [spec] * len(counts)


def mean(values):
    return sum(values) / len(values) if values else None


def batch_means(z, y, counts):
    """p̄⁺, p̄⁻ per class: eq. 6, the group fill of eq. 7, else the other sign's mean."""
    num_classes = len(counts)
    means = {}
    for label in (1.0, 0.0):
        raw = [mean([sigmoid(row[c]) for row, t in zip(z, y, strict=True) if t[c] == label])
               for c in range(num_classes)]
        filled = []
        for c in range(num_classes):
            same_group = [raw[k] for k in range(num_classes)
                          if group(counts[k]) == group(counts[c]) and raw[k] is not None]
            filled.append(raw[c] if raw[c] is not None else mean(same_group))
        means[label] = filled
    pos = [p if p is not None else q for p, q in zip(means[1.0], means[0.0], strict=True)]
    neg = [q if q is not None else p for p, q in zip(means[1.0], means[0.0], strict=True)]
    return pos, neg


def reference_terms(z, y, counts=COUNTS, num_samples=N, lambda1_neg=5.0, lambda2_neg=5.0, lambda1_pos=1.0,
                    lambda2_pos=1.0, kappa=0.05, bias_lambda=5.0, adaptive=(), focal="none", lambda0=2.0,
                    max_ratio=100.0):
    """Per class: bias, ratio p̄⁺/p̄⁻ (clamped), factors λ1⁻ λ2⁻ λ1⁺ λ2⁺ and exponents γ⁺ γ⁻."""
    bias = [-(kappa / bias_lambda) * math.log(num_samples / min(max(n, 0.5), num_samples - 0.5) - 1)
            for n in counts]
    pos, neg = batch_means(z, y, counts)
    ratio = [min(max(p / q, 1 / max_ratio), max_ratio) for p, q in zip(pos, neg, strict=True)]
    factors = {}
    for name, spec in dict(lambda1_neg=lambda1_neg, lambda2_neg=lambda2_neg, lambda1_pos=lambda1_pos,
                           lambda2_pos=lambda2_pos).items():
        power = (1 if name.endswith("pos") else -1) if name in adaptive else 0
        factors[name] = [f * r**power for f, r in zip(per_class(spec, counts), ratio, strict=True)]
    if focal == "apaf":
        gammas = ([lambda0 * r for r in ratio], [lambda0 / r for r in ratio])
    else:
        g = lambda0 if focal == "fixed" else 0.0
        gammas = ([g] * len(counts), [g] * len(counts))
    return bias, factors, gammas


def reference_elements(z, y, **kwargs):
    """ℓ_ic and dℓ_ic/dz_ic (factors and exponents held constant), from eq. 5 / 9 / 10."""
    bias, f, (gamma_pos, gamma_neg) = reference_terms(z, y, **kwargs)
    values, grads = [], []
    for zi, yi in zip(z, y, strict=True):
        row_v, row_g = [], []
        for c, (zc, yc) in enumerate(zip(zi, yi, strict=True)):
            shifted = zc + bias[c]
            if yc == 1:  # (1/λ2⁺)(1 − p)^γ⁺ log(1 + e^{−λ1⁺ z'})
                a, w, g = f["lambda1_pos"][c], 1 / f["lambda2_pos"][c], gamma_pos[c]
                m = sigmoid(-zc) ** g
                row_v.append(w * m * softplus(-a * shifted))
                row_g.append(-w * m * (g * sigmoid(zc) * softplus(-a * shifted) + a * sigmoid(-a * shifted)))
            else:        # (1/λ2⁻) p^γ⁻ log(1 + e^{λ1⁻ z'})
                a, w, g = f["lambda1_neg"][c], 1 / f["lambda2_neg"][c], gamma_neg[c]
                m = sigmoid(zc) ** g
                row_v.append(w * m * softplus(a * shifted))
                row_g.append(w * m * (g * sigmoid(-zc) * softplus(a * shifted) + a * sigmoid(a * shifted)))
        values.append(row_v)
        grads.append(row_g)
    return values, grads


def reference_loss(z, y, reduction="mean", **kwargs) -> float:
    values, _ = reference_elements(z, y, **kwargs)
    total = sum(map(sum, values))
    return total / (len(z) * len(z[0])) if reduction == "mean" else total


# ---------------------------------------------------------------- batches
def batch(seed: int = 0, b: int = 12, scale: float = 2.5):
    """Rows: all-negative (several: mlc data is negative-heavy), single-positive, all-positive; class 4
    (tail) has no positive while class 3 (tail) has one; class 2 (medium) is positive nowhere but class 1."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, len(COUNTS), generator=g, dtype=torch.float64) * scale
    y = (torch.rand(b, len(COUNTS), generator=g, dtype=torch.float64) < 0.35).double()
    y[:, 4] = 0.0
    y[0] = y[3] = y[4] = 0.0     # instances with no class
    y[1] = 0.0
    y[1, 3] = 1.0                # single positive (a tail class)
    y[2] = 1.0
    y[2, 4] = 0.0                # all positive but class 4
    return z, y


def lists(z: torch.Tensor, y: torch.Tensor):
    return z.detach().double().tolist(), y.double().tolist()


def build(counts=COUNTS, num_samples=N, **kwargs) -> ProbabilityGuidedLoss:
    return ProbabilityGuidedLoss(class_counts=counts, num_samples=num_samples, **kwargs)


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_matches_scalar_float64_reference(option, seed):
    z, y = batch(seed)
    expected = reference_loss(*lists(z, y), **OPTIONS[option])
    assert build(**OPTIONS[option])(z, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(lambda1_neg=2.0, lambda2_neg=3.0, lambda1_pos=1.5, lambda2_pos=0.5, kappa=0.1, bias_lambda=2.0),
    dict(lambda1_neg=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], lambda2_pos={"head": 2.0, "medium": 1.0, "tail": 0.5}),
    dict(adaptive=["lambda1_neg", "lambda2_neg", "lambda1_pos", "lambda2_pos"], lambda1_pos=2.0, kappa=0.2),
    dict(focal="fixed", lambda0=1.5, lambda1_neg=4.0, lambda2_neg=2.0, lambda1_pos=2.0, bias_lambda=2.0),
    dict(focal="apaf", lambda0=3.0, max_ratio=1.5, adaptive=["lambda2_pos"]),     # the clamp binds
    dict(focal="apaf", lambda0=0.0),                                              # γ± = 0: PR-BCE
    dict(focal="apaf", max_ratio=1.0, adaptive=["lambda1_neg"]),                  # = fixed focal λ0
])
def test_hyperparameters_match_reference(kwargs):
    z, y = batch(3, scale=4.0)
    expected = reference_loss(*lists(z, y), **kwargs)
    assert build(**kwargs)(z, y).item() == pytest.approx(expected, rel=1e-12)


def test_tiny_case_by_hand():
    """One tail class, no bias, APAF: p = 3/4 on the positive, 1/4 on the negative, so p̄⁺/p̄⁻ = 3,
    γ⁺ = 6, γ⁻ = 2/3; both labels have −log(3/4) as their BCE."""
    loss = build([10.0], 100.0, lambda1_neg=1.0, lambda2_neg=1.0, kappa=0.0, focal="apaf")
    z = torch.tensor([[math.log(3)], [-math.log(3)]], dtype=torch.float64)
    y = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    expected = (0.25**6 + 0.25 ** (2 / 3)) * math.log(4 / 3) / 2
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-14)


def test_ntr_is_the_special_case_of_pr():
    """λ1⁻ = λ2⁻ = λ, λ1⁺ = λ2⁺ = 1 is DB's NTR: softplus(−z') for positives, softplus(λz')/λ for negatives."""
    z, y = batch(4)
    lam, kappa = 2.0, 0.05
    bias = torch.tensor([-(kappa / lam) * math.log(N / n - 1) for n in COUNTS], dtype=torch.float64)
    shifted = z + bias
    ntr = torch.where(y == 1, torch.nn.functional.softplus(-shifted), torch.nn.functional.softplus(lam * shifted) / lam)
    loss = build(lambda1_neg=lam, lambda2_neg=lam, kappa=kappa, bias_lambda=lam)
    assert loss(z, y).item() == pytest.approx(ntr.mean().item(), rel=1e-12)


def test_unit_factors_without_bias_are_bce_and_focal():
    z, y = batch(5)
    plain = dict(lambda1_neg=1.0, lambda2_neg=1.0, kappa=0.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    assert build(**plain)(z, y).item() == pytest.approx(bce.item(), rel=1e-12)
    focal = sigmoid_focal_loss(z, y, alpha=-1, gamma=2.0, reduction="mean")
    assert build(**plain, focal="fixed", lambda0=2.0)(z, y).item() == pytest.approx(focal.item(), rel=1e-12)


@pytest.mark.parametrize("reduction,divisor", [("mean", 72), ("sum", 1), ("instances", 12), ("labels", None)])
def test_reductions(reduction, divisor):
    z, y = batch(6)
    total = reference_loss(*lists(z, y), reduction="sum", **OPTIONS["pg"])
    if divisor is None:
        divisor = y.sum().item() + (y.sum(1) == 0).sum().item()
    out = build(**OPTIONS["pg"], reduction=reduction)(z, y).item()
    assert out == pytest.approx(total / divisor, rel=1e-12)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("implementation", ["fused", "autograd"])
def test_gradient_matches_closed_form_with_factors_held_constant(option, implementation):
    """Autograd equals the closed form in which γ± and the adaptive factors are constants: they are
    detached (the paper's "gradient scaling factors"), while p inside p^γ keeps its gradient."""
    z, y = batch(7)
    z.requires_grad_(True)
    build(**OPTIONS[option], implementation=implementation)(z, y).backward()
    _, grads = reference_elements(*lists(z, y), **OPTIONS[option])
    expected = torch.tensor(grads, dtype=torch.float64) / z.numel()
    torch.testing.assert_close(z.grad, expected, rtol=1e-11, atol=1e-15)


def test_detached_terms_are_declared_exactly_when_present():
    for option in OPTIONS:
        assert bool(build(**OPTIONS[option]).detached_terms) == (option != "pr")
    assert build(focal="fixed").detached_terms == ""


@pytest.mark.parametrize("focal", ["none", "fixed"])
def test_gradcheck_without_adaptive_terms(focal):
    z, y = batch(8, b=6, scale=2.0)
    loss = build(**(OPTIONS["pr"] | dict(focal=focal)))
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-9)


# ---------------------------------------------------------------- the batch statistics (eq. 6-8)
def test_absent_class_takes_its_groups_mean_then_the_negative_mean():
    z, y = batch(9)
    loss = build(focal="apaf")
    pos, neg = batch_means(*lists(z, y), COUNTS)
    ratio = loss.log_ratio(z, y).exp()
    torch.testing.assert_close(ratio, torch.tensor([p / q for p, q in zip(pos, neg, strict=True)],
                                                   dtype=torch.float64), rtol=1e-12, atol=0)
    p = torch.sigmoid(z)
    assert pos[4] == pytest.approx(p[y[:, 3] == 1, 3].mean().item(), rel=1e-12)  # tail: class 3's p̄⁺
    y2 = y.clone()
    y2[:, [3, 4]] = 0.0  # no tail class has a positive: p̄⁺ = p̄⁻, exponents λ0
    assert loss.log_ratio(z, y2)[[3, 4]].tolist() == [0.0, 0.0]


def test_class_positive_everywhere_takes_its_groups_negative_mean():
    z, y = batch(10)
    y[:, 0] = 1.0  # head class 0 has no negative; head class 5 has
    pos, neg = batch_means(*lists(z, y), COUNTS)
    p = torch.sigmoid(z)
    assert neg[0] == pytest.approx(p[y[:, 5] == 0, 5].mean().item(), rel=1e-12)
    assert build(focal="apaf").log_ratio(z, y)[0].exp().item() == pytest.approx(pos[0] / neg[0], rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [100.0, 200.0])
def test_vanishing_mean_probability_is_clamped_not_infinite(dtype, magnitude):
    """Confident correct logits: p̄⁻ ≈ e^{−100} (or exactly 0 in float32 at 200) — the ratio hits
    max_ratio, γ⁺ = λ0·max_ratio, and value and gradient stay finite."""
    z0, y = batch(11)
    z = (torch.where(y == 1, magnitude, -magnitude)).to(dtype).requires_grad_(True)
    loss = build(**OPTIONS["pg"])
    assert loss.log_ratio(z, y.to(dtype)).tolist() == pytest.approx([math.log(100.0)] * len(COUNTS))
    out = loss(z, y.to(dtype))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()


def test_both_means_underflowing_give_ratio_one():
    """float32, every logit −200: p̄⁺ and p̄⁻ are both 0; the ratio is 1 (γ± = λ0), never 0/0."""
    z, y = batch(15)
    z = torch.full_like(z, -200.0, dtype=torch.float32).requires_grad_(True)
    loss = build(**OPTIONS["pg"])
    assert loss.log_ratio(z, y.float()).tolist() == [0.0] * len(COUNTS)
    out = loss(z, y.float())
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_match_reference(option, dtype):
    z, y = batch(12)
    z = torch.where(torch.rand(z.shape, generator=torch.Generator().manual_seed(1)) < 0.5, 100.0, -100.0).to(dtype)
    z.requires_grad_(True)
    out = build(**OPTIONS[option])(z, y.to(dtype))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    assert out.item() == pytest.approx(reference_loss(*lists(z, y), **OPTIONS[option]), rel=1e-5)


@pytest.mark.parametrize("option", OPTIONS)
def test_negative_heavy_batch(option):
    """30 of 32 instances have no class, most classes are absent: finite, and as the reference says."""
    g = torch.Generator().manual_seed(13)
    z = torch.randn(32, len(COUNTS), generator=g, dtype=torch.float64) * 3
    y = torch.zeros_like(z)
    y[5, 1] = y[17, 3] = y[17, 0] = 1.0
    z.requires_grad_(True)
    out = build(**OPTIONS[option])(z, y)
    out.backward()
    assert torch.isfinite(z.grad).all()
    assert out.item() == pytest.approx(reference_loss(*lists(z, y), **OPTIONS[option]), rel=1e-12)
    all_negative = build(**OPTIONS[option])(z.detach(), torch.zeros_like(z))
    assert all_negative.item() == pytest.approx(reference_loss(*lists(z, torch.zeros_like(z)), **OPTIONS[option]),
                                                rel=1e-12)


def test_eval_mode_is_the_same_stateless_loss():
    z, y = batch(14)
    loss = build(**OPTIONS["pg"])
    train_value = loss(z, y).item()
    assert loss.eval()(z, y).item() == train_value and loss.state_dict() == {}


# ---------------------------------------------------------------- statistics and config
def test_bias_guards_empty_and_full_classes():
    loss = build([0.0, 10.0, 100.0, 100.0], 100.0, kappa=0.05, bias_lambda=5.0)
    expected = [-(0.05 / 5.0) * math.log(100 / n - 1) for n in (0.5, 10.0, 99.5, 99.5)]
    assert loss.bias.tolist() == pytest.approx(expected, rel=1e-14)
    assert build([1.0], 1.0).bias.tolist() == [0.0]


def test_factor_specs_resolve_per_group_and_per_class():
    loss = build(lambda1_neg={"head": 1.0, "medium": 2.0, "tail": 3.0}, lambda2_neg=[1, 2, 3, 4, 5, 6],
                 lambda1_pos=7)
    assert loss.factors.tolist() == [[1, 2, 2, 3, 3, 1], [1, 2, 3, 4, 5, 6], [7] * 6, [1] * 6]


def test_groups_use_the_papers_thresholds():
    """100 is medium (head needs > 100), 20 is medium (tail needs < 20)."""
    loss = build([101.0, 100.0, 20.0, 19.0], 500.0, lambda1_neg={"head": 1.0, "medium": 2.0, "tail": 3.0})
    assert loss.factors[0].tolist() == [1.0, 2.0, 2.0, 3.0]


@pytest.mark.parametrize("option", OPTIONS)
def test_yaml_options_build_these_settings(option):
    loss = instantiate(compose([f"loss={option}"]).loss, class_counts=COUNTS, negative_count=10, num_samples=N)
    expected = build(**OPTIONS[option])
    assert isinstance(loss, ProbabilityGuidedLoss) and loss.extra_repr() == expected.extra_repr()
    assert loss.reduction == "mean" and loss.lambda0 == 2.0 and loss.max_ratio == 100.0
    assert torch.equal(loss.factors, expected.factors) and torch.equal(loss.bias, expected.bias)


@pytest.mark.parametrize("kwargs,key", [
    (dict(lambda1_neg=0.0), "lambda1_neg"), (dict(lambda2_neg=-1.0), "lambda2_neg"),
    (dict(lambda1_pos="big"), "lambda1_pos"), (dict(lambda2_pos={"head": 1.0, "tail": 2.0}), "lambda2_pos"),
    (dict(lambda1_neg=[1.0, 2.0]), "lambda1_neg"), (dict(lambda1_neg=float("inf")), "lambda1_neg"),
    (dict(lambda1_neg={"head": 1.0, "medium": 1.0, "tail": 0.0}), "lambda1_neg"),
    (dict(kappa=-0.1), "kappa"), (dict(bias_lambda=0.0), "bias_lambda"), (dict(adaptive=["lambda3"]), "adaptive"),
    (dict(adaptive="lambda1_neg"), "adaptive"), (dict(focal="asl"), "focal"), (dict(lambda0=-1.0), "lambda0"),
    (dict(max_ratio=0.5), "max_ratio"), (dict(reduction="avg"), "reduction"), (dict(num_samples=0), "num_samples"),
    (dict(class_counts=[]), "class_counts"), (dict(class_counts=[3.0, -1.0]), "class_counts"),
])
def test_invalid_fields_name_the_key(kwargs, key):
    args = dict(class_counts=COUNTS, num_samples=N) | kwargs
    with pytest.raises(ConfigError) as err:
        ProbabilityGuidedLoss(**args)
    assert err.value.key == key and str(err.value).startswith(f"{key}=")


def test_wrong_number_of_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="built for 6 classes"):
        build()(torch.zeros(2, 3), torch.zeros(2, 3))


# ---------------------------------------------------------------- fused and autograd implementations
FUSED_CONFIGS = list(OPTIONS.values()) + [
    dict(lambda1_neg=2.0, lambda2_neg=3.0, lambda1_pos=1.5, lambda2_pos=0.5, kappa=0.1, bias_lambda=2.0),
    dict(adaptive=["lambda1_neg", "lambda2_neg", "lambda1_pos", "lambda2_pos"], lambda1_pos=2.0, kappa=0.2),
    dict(focal="fixed", lambda0=1.5, lambda1_neg=4.0, lambda2_neg=2.0, lambda1_pos=2.0, bias_lambda=2.0),
    dict(focal="apaf", lambda0=3.0, max_ratio=1.5, adaptive=["lambda2_pos"]),
    dict(focal="apaf", lambda0=0.0), dict(focal="fixed", lambda1_neg=1.0, lambda2_neg=1.0, kappa=0.0),
]


@pytest.mark.parametrize("kwargs", FUSED_CONFIGS)
@pytest.mark.parametrize("reduction", ["mean", "labels", "sum"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_matches_autograd_values_and_gradients(kwargs, reduction, seed):
    z, y = batch(seed, b=16, scale=3.0)
    values, grads = [], []
    for implementation in ("fused", "autograd"):
        x = z.clone().requires_grad_(True)
        out = build(**kwargs, reduction=reduction, implementation=implementation)(x, y)
        out.backward()
        values.append(out.item())
        grads.append(x.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("kwargs", [OPTIONS["pr"], FUSED_CONFIGS[4], FUSED_CONFIGS[6], FUSED_CONFIGS[9]])
def test_fused_gradcheck_without_adaptive_terms(kwargs):
    z, y = batch(8, b=6, scale=2.0)
    loss = build(**kwargs)
    assert loss.implementation == "fused" and not loss.detached_terms
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-9)


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_matches_autograd_at_extreme_logits(option, dtype):
    z, y = batch(12)
    z = torch.where(torch.rand(z.shape, generator=torch.Generator().manual_seed(1)) < 0.5, 100.0, -100.0).to(dtype)
    values, grads = [], []
    for implementation in ("fused", "autograd"):
        x = z.clone().requires_grad_(True)
        out = build(**OPTIONS[option], implementation=implementation)(x, y.to(dtype))
        out.backward()
        values.append(out.item())
        grads.append(x.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1])


def test_invalid_implementation_names_the_key():
    with pytest.raises(ConfigError) as err:
        build(implementation="cuda")
    assert err.value.key == "implementation"
