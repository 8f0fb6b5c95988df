"""Single-positive losses against an independent float64 derivation (LOSSES.md §5).

The references below are written from the papers' formulas and the reference code's choices, one
element at a time with Python floats: p = 1/(1 + e^−z), 1 − p as 1 − p (not σ(−z)), −log(x + ε) as
the reference code computes it, p^q with ``**``. Gradients are closed forms written in numpy, holding
the factors a loss detaches on purpose constant. Targets: 1 = observed positive, 0 = unknown.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlc.errors import ConfigError
from mlc.losses.single_positive import (
    AssumeNegativeLoss,
    AsymmetricPseudoLabelLoss,
    EntropyMaximizationLoss,
    ExpectedPositiveLoss,
    GeneralizedRobustLoss,
    HillLoss,
    RoleLoss,
    SPLCLoss,
)

C = 5
COUNTS = [150.0, 60.0, 25.0, 8.0, 3.0]
N = 40


# -- scalar float64 references ---------------------------------------------------------------------

def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def nlog_p(z: float, eps: float) -> float:
    """−log p as the reference computes it (−log(p + ε)); exact −log σ(z) for ε = 0."""
    return -math.log(sig(z) + eps) if eps else softplus(-z)


def nlog_q(z: float, eps: float) -> float:
    """−log(1 − p), with 1 − p taken literally."""
    return -math.log(1.0 - sig(z) + eps) if eps else softplus(z)


def mean_over(z: np.ndarray, element) -> float:
    b, c = z.shape
    return sum(element(i, j) for i in range(b) for j in range(c)) / (b * c)


def ref_an(z, y, ls=0.0, neg_w=1.0, eps=1e-5):
    def element(i, j):
        if y[i, j] == 1:
            return (1 - ls) * nlog_p(z[i, j], eps) + ls * nlog_q(z[i, j], eps)
        return neg_w * ((1 - ls) * nlog_q(z[i, j], eps) + ls * nlog_p(z[i, j], eps))
    return mean_over(z, element)


def epr_penalty(probs: np.ndarray, k: float) -> float:
    per_image = [sum(row) for row in probs.tolist()]
    return (sum(per_image) / len(per_image) - k) ** 2 / probs.shape[1] ** 2


def sigmoid_matrix(z: np.ndarray) -> np.ndarray:
    return np.vectorize(sig)(z)


def ref_epr(z, y, k=1.5, eps=1e-5):
    positives = mean_over(z, lambda i, j: nlog_p(z[i, j], eps) if y[i, j] == 1 else 0.0)
    return positives + epr_penalty(sigmoid_matrix(z), k)


def ref_role(z, theta, y, k=1.5, eps=1e-5):
    def element(i, j):
        p, e = sig(z[i, j]), sig(theta[i, j])
        observed = y[i, j] * (nlog_p(z[i, j], eps) + nlog_p(theta[i, j], eps))
        classifier = e * nlog_p(z[i, j], eps) + (1 - e) * nlog_q(z[i, j], eps)
        estimator = p * nlog_p(theta[i, j], eps) + (1 - p) * nlog_q(theta[i, j], eps)
        return 0.5 * (observed + classifier + estimator)
    return mean_over(z, element) + 0.5 * (epr_penalty(sigmoid_matrix(z), k) + epr_penalty(sigmoid_matrix(theta), k))


def entropy(z: float, eps: float) -> float:
    p = sig(z)
    return p * nlog_p(z, eps) + (1 - p) * nlog_q(z, eps)


def ref_em(z, y, alpha=0.2, eps=1e-5, pseudo=None, beta=0.0):
    """EM; ``pseudo`` maps (i, j) of pseudo-labelled unknowns to their soft label s."""
    pseudo = pseudo or {}

    def element(i, j):
        if y[i, j] == 1:
            return nlog_p(z[i, j], eps)
        if (i, j) in pseudo:
            s = pseudo[i, j]
            return beta * (s * nlog_p(z[i, j], eps) + (1 - s) * nlog_q(z[i, j], eps))
        return -alpha * entropy(z[i, j], eps)
    return mean_over(z, element)


def focal_positive(z: float, gamma: float) -> float:
    return (1 - sig(z)) ** gamma * -math.log(sig(z))


def focal_negative(z: float, gamma: float) -> float:
    return sig(z) ** gamma * -math.log(1 - sig(z))


def ref_hill(z, y, lam=1.5, margin=1.0, gamma=2.0):
    total = 0.0
    for i, j in np.ndindex(z.shape):
        p = sig(z[i, j])
        total += focal_positive(z[i, j] - margin, gamma) if y[i, j] == 1 else (lam - p) * p * p
    return total


def ref_splc(z, y, epoch, tau=0.6, start_epoch=1, margin=1.0, gamma=2.0):
    total = 0.0
    for i, j in np.ndindex(z.shape):
        if y[i, j] == 1:
            total += focal_positive(z[i, j] - margin, gamma)
        elif epoch >= start_epoch and sig(z[i, j]) > tau:
            total += focal_positive(z[i, j], gamma)
        else:
            total += focal_negative(z[i, j], gamma)
    return total


def reference_schedule(epoch: int, max_epochs: int, first: float, last: float, kind: str) -> float:
    """The GR reference code (1-based epoch, linear_init n = 0): k̂'s parameters use max(epoch − n − 1, 0),
    v's use max(epoch − n, 0), both over (num_epochs − n)."""
    epoch1 = epoch + 1
    steps = max(epoch1 - 1, 0) if kind == "k" else max(epoch1, 0)
    return first + (last - first) * steps / max_epochs


def ref_gr(z, y, w, b, mu, sigma, q2=0.01, q3=1.0, eps=1e-7):
    def element(i, j):
        p = sig(z[i, j])
        if y[i, j] == 1:
            return -math.log(p + eps)
        k = sig(w * p + b)
        v = math.exp(-((p - mu) ** 2) / (2 * sigma**2))
        return v * (k * (1 - p**q2) / q2 + (1 - k) * (1 - (1 - p) ** q3) / q3)
    return mean_over(z, element)


# -- batches ---------------------------------------------------------------------------------------

def batch(seed: int = 0, b: int = 10, c: int = C, scale: float = 3.0):
    """Logits, and targets with an all-unknown row, single-positive rows and an all-positive row."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = torch.zeros(b, c, dtype=torch.float64)
    y[torch.arange(2, b), torch.randint(0, c, (b - 2,), generator=g)] = 1.0  # single positives
    y[1] = 1.0  # all positive
    y[3, (int(y[3].argmax()) + 1) % c] = 1.0  # and one row with two
    return z, y


def value(loss, z, y, **kwargs):
    return loss(z, y, **kwargs).item()


def grad(loss, z, y, **kwargs) -> np.ndarray:
    z = z.clone().requires_grad_(True)
    loss(z, y, **kwargs).backward()
    return z.grad.numpy()


def np_sig(z: torch.Tensor) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.numpy()))


def d_nlog_p(p, eps):
    """d/dz of −log(p + ε)."""
    return -p * (1 - p) / (p + eps)


def d_nlog_q(p, eps):
    """d/dz of −log(1 − p + ε)."""
    return p * (1 - p) / (1 - p + eps)


# -- values of the stateless losses ------------------------------------------------------------------

GR_FIXED = dict(w=[3.0, 3.0], b=[-1.0, -1.0], mu=[0.3, 0.3], sigma=[0.7, 0.7])  # no schedule: constants
CASES = {
    "an": (lambda: AssumeNegativeLoss(COUNTS), lambda z, y: ref_an(z, y)),
    "an exact": (lambda: AssumeNegativeLoss(COUNTS, log_eps=0.0), lambda z, y: ref_an(z, y, eps=0.0)),
    "an_ls": (lambda: AssumeNegativeLoss(COUNTS, label_smoothing=0.1), lambda z, y: ref_an(z, y, ls=0.1)),
    "an_ls exact": (lambda: AssumeNegativeLoss(COUNTS, label_smoothing=0.1, log_eps=0.0),
                    lambda z, y: ref_an(z, y, ls=0.1, eps=0.0)),
    "wan": (lambda: AssumeNegativeLoss(COUNTS, negative_weight="1/(C-1)"),
            lambda z, y: ref_an(z, y, neg_w=1 / (C - 1))),
    "wan exact": (lambda: AssumeNegativeLoss(COUNTS, negative_weight="1/(C-1)", log_eps=0.0),
                  lambda z, y: ref_an(z, y, neg_w=1 / (C - 1), eps=0.0)),
    "epr": (lambda: ExpectedPositiveLoss(COUNTS), lambda z, y: ref_epr(z, y)),
    "epr exact k=2.5": (lambda: ExpectedPositiveLoss(COUNTS, 2.5, log_eps=0.0), lambda z, y: ref_epr(z, y, 2.5, 0.0)),
    "em": (lambda: EntropyMaximizationLoss(COUNTS), lambda z, y: ref_em(z, y)),
    "em exact α=0.1": (lambda: EntropyMaximizationLoss(COUNTS, 0.1, log_eps=0.0), lambda z, y: ref_em(z, y, 0.1, 0.0)),
    "em α=1": (lambda: EntropyMaximizationLoss(COUNTS, 1.0), lambda z, y: ref_em(z, y, 1.0)),
    "hill": (lambda: HillLoss(COUNTS), lambda z, y: ref_hill(z, y)),
    "hill λ=1 m=.5 γ=1": (lambda: HillLoss(COUNTS, 1.0, 0.5, 1.0), lambda z, y: ref_hill(z, y, 1.0, 0.5, 1.0)),
    "hill λ=2 m=0 γ=0": (lambda: HillLoss(COUNTS, 2.0, 0.0, 0.0), lambda z, y: ref_hill(z, y, 2.0, 0.0, 0.0)),
    "gr q=.01,1": (lambda: GeneralizedRobustLoss(COUNTS, **GR_FIXED), lambda z, y: ref_gr(z, y, 3.0, -1.0, 0.3, 0.7)),
    "gr q=.5,.3": (lambda: GeneralizedRobustLoss(COUNTS, q2=0.5, q3=0.3, **GR_FIXED),
                   lambda z, y: ref_gr(z, y, 3.0, -1.0, 0.3, 0.7, 0.5, 0.3)),
    "gr q=1,1 exact": (lambda: GeneralizedRobustLoss(COUNTS, q2=1.0, log_eps=0.0, **GR_FIXED),
                       lambda z, y: ref_gr(z, y, 3.0, -1.0, 0.3, 0.7, 1.0, 1.0, eps=0.0)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_value_matches_reference(case, seed):
    """All-unknown, single-positive, two-positive and all-positive rows in one batch."""
    build, reference = CASES[case]
    z, y = batch(seed)
    assert value(build(), z, y) == pytest.approx(reference(z.numpy(), y.numpy()), rel=1e-10)


# -- AN, AN-LS, WAN --------------------------------------------------------------------------------

def test_assume_negative_by_hand():
    """z = 0 everywhere: every −log term is −log(½ + ε); WAN divides the C − 1 = 1 unknown by 1."""
    z = torch.zeros(1, 2, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert value(AssumeNegativeLoss([1, 1], log_eps=0.0), z, y) == pytest.approx(math.log(2))
    assert value(AssumeNegativeLoss([1, 1]), z, y) == pytest.approx(-math.log(0.5 + 1e-5))
    z = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    by_hand = (math.log1p(math.exp(-2.0)) + 0.5 * math.log1p(math.exp(-1.0))) / 2  # −log σ(2), ½·−log σ(1)
    assert value(AssumeNegativeLoss([1, 1], negative_weight=0.5, log_eps=0.0), z, y) == pytest.approx(by_hand)


@pytest.mark.parametrize("ls,neg_w,eps", [(0.0, 1.0, 1e-5), (0.1, 1.0, 0.0), (0.2, 0.3, 1e-5), (0.0, 0.25, 0.0)])
def test_assume_negative_gradient_closed_form(ls, neg_w, eps):
    z, y = batch(2)
    p, yn = np_sig(z), y.numpy()
    towards_pos, towards_neg = d_nlog_p(p, eps), d_nlog_q(p, eps)
    expected = yn * ((1 - ls) * towards_pos + ls * towards_neg) + \
        (1 - yn) * neg_w * ((1 - ls) * towards_neg + ls * towards_pos)
    loss = AssumeNegativeLoss(COUNTS, label_smoothing=ls, negative_weight=neg_w, log_eps=eps)
    np.testing.assert_allclose(grad(loss, z, y), expected / z.numel(), rtol=1e-10, atol=1e-16)


# -- EPR ---------------------------------------------------------------------------------------------

def test_epr_by_hand():
    """z = 0: p = ½ everywhere, Σ_c p = C/2 per image; one positive costs −log ½ spread over B·C."""
    z = torch.zeros(2, 4, dtype=torch.float64)
    y = torch.zeros(2, 4, dtype=torch.float64)
    y[0, 1] = 1
    expected = math.log(2) / 8 + (2.0 - 1.0) ** 2 / 16
    assert value(ExpectedPositiveLoss([1] * 4, expected_positives=1.0, log_eps=0.0), z, y) == pytest.approx(expected)


@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_epr_gradient_closed_form(eps):
    z, y = batch(4)
    k = 1.5
    p, yn = np_sig(z), y.numpy()
    b = z.shape[0]
    penalty_grad = 2 * (p.sum(1).mean() - k) / C**2 / b * p * (1 - p)
    expected = yn * d_nlog_p(p, eps) / z.numel() + penalty_grad
    np.testing.assert_allclose(grad(ExpectedPositiveLoss(COUNTS, k, log_eps=eps), z, y), expected, rtol=1e-10,
                               atol=1e-16)


# -- ROLE --------------------------------------------------------------------------------------------

def role_theta_after_init(loss: RoleLoss, indices, y) -> np.ndarray:
    """θ of the batch rows as the reference initialises them: observed positives at logit(0.995) (float32)."""
    theta = loss.estimate_logits.detach()[indices].double().numpy().copy()
    theta[y.numpy() == 1] = float(np.float32(math.log(0.995 / 0.005)))
    return theta


@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_role_matches_reference(eps):
    z, y = batch(5)
    loss = RoleLoss(COUNTS, num_samples=N, log_eps=eps, expected_positives=2.0)
    indices = torch.tensor([7, 3, 0, 12, 39, 21, 5, 8, 30, 1])
    theta = role_theta_after_init(loss, indices, y)
    assert value(loss, z, y, indices=indices) == pytest.approx(ref_role(z.numpy(), theta, y.numpy(), 2.0, eps),
                                                                rel=1e-10)


def test_role_initialisation_as_reference_and_deterministic():
    loss = RoleLoss(COUNTS, num_samples=N)
    theta = loss.estimate_logits.detach()
    assert theta.shape == (N, C) and loss.estimate_logits.requires_grad
    bound = math.log(0.6 / 0.4)
    assert theta.abs().max() <= bound and theta.abs().max() > 0.9 * bound
    torch.testing.assert_close(RoleLoss(COUNTS, num_samples=N).estimate_logits, loss.estimate_logits)
    assert not torch.equal(RoleLoss(COUNTS, num_samples=N, init_seed=1).estimate_logits.detach(), theta)


def test_role_observed_positives_initialised_once_at_first_sight():
    loss = RoleLoss(COUNTS, num_samples=N)
    before = loss.estimate_logits.detach().clone()
    z, y = batch(6, b=4)
    indices = torch.tensor([10, 11, 12, 13])
    loss(z, y, indices=indices)
    after = loss.estimate_logits.detach()
    rows = after[indices]
    assert torch.allclose(rows[y == 1], torch.tensor(math.log(199.0)))
    assert torch.equal(rows[y == 0], before[indices][y == 0])
    others = torch.ones(N, dtype=torch.bool)
    others[indices] = False
    assert torch.equal(after[others], before[others]) and loss.initialised.sum() == 4
    with torch.no_grad():  # an optimizer step moves θ; seeing the rows again must not re-initialise them
        loss.estimate_logits[indices] -= 1.0
    moved = loss.estimate_logits.detach().clone()
    loss(z, y, indices=indices)
    assert torch.equal(loss.estimate_logits.detach(), moved)


@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_role_gradients_closed_form(eps):
    """Classifier: ½[y·g⁺(p) + ē·g⁺(p) + (1 − ē)·g⁻(p)]/(B·C) + ½R'(p); estimator likewise with p̄."""
    z, y = batch(7)
    loss = RoleLoss(COUNTS, num_samples=N, log_eps=eps)
    indices = torch.arange(10, 20)
    theta = role_theta_after_init(loss, indices, y)
    zg = z.clone().requires_grad_(True)
    loss(zg, y, indices=indices).backward()
    p, e, yn = np_sig(z), 1 / (1 + np.exp(-theta)), y.numpy()
    b, k = z.shape[0], 1.5

    def side(x, other):
        main = yn * d_nlog_p(x, eps) + other * d_nlog_p(x, eps) + (1 - other) * d_nlog_q(x, eps)
        return 0.5 * main / z.numel() + (x.sum(1).mean() - k) / C**2 / b * x * (1 - x)

    np.testing.assert_allclose(zg.grad.numpy(), side(p, e), rtol=1e-9, atol=1e-16)
    theta_grad = loss.estimate_logits.grad[indices].double().numpy()
    np.testing.assert_allclose(theta_grad, side(e, p), rtol=1e-5, atol=1e-9)  # θ is a float32 parameter
    assert loss.estimate_logits.grad[:10].abs().sum() == 0


def test_role_eval_mode_is_epr_and_leaves_the_estimates_alone():
    loss = RoleLoss(COUNTS, num_samples=N, expected_positives=2.0).eval()
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    z, y = batch(8)
    out = loss(z, y, indices=torch.arange(10))
    assert out.item() == pytest.approx(ref_epr(z.numpy(), y.numpy(), 2.0), rel=1e-10)
    for key, tensor in loss.state_dict().items():
        assert torch.equal(tensor, before[key])


def test_role_optimizer_options_state_and_indices():
    assert RoleLoss(COUNTS, num_samples=N).optimizer_options == {"lr": 0.03}
    assert RoleLoss(COUNTS, num_samples=N, estimate_lr=None).optimizer_options == {}
    assert RoleLoss(COUNTS, num_samples=np.int64(N)).estimate_logits.shape == (N, C)  # numpy statistics
    loss = RoleLoss(COUNTS, num_samples=N)
    assert set(loss.state_dict()) == {"estimate_logits", "initialised"}
    assert RoleLoss.needs_indices and RoleLoss.cost_note and loss.detached_terms
    with pytest.raises(ValueError, match="indices"):
        loss(*batch(0))


# -- EM, EM + APL ------------------------------------------------------------------------------------

def test_em_by_hand():
    """An unknown at z = 0 has the largest entropy, log 2: its loss is −α·log 2."""
    z = torch.zeros(1, 2, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert value(EntropyMaximizationLoss([1, 1], alpha=0.5, log_eps=0.0), z, y) == \
        pytest.approx((math.log(2) - 0.5 * math.log(2)) / 2)


@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_em_gradient_closed_form(eps):
    """d(−αH)/dz = −α·dH/dp·p(1 − p), dH/dp = nl(p) − p/(p + ε) − nl(1 − p) + (1 − p)/(1 − p + ε)."""
    z, y = batch(10)
    alpha = 0.3
    p, yn = np_sig(z), y.numpy()
    dh_dp = -np.log(p + eps) - p / (p + eps) + np.log(1 - p + eps) + (1 - p) / (1 - p + eps)
    expected = yn * d_nlog_p(p, eps) - alpha * (1 - yn) * dh_dp * p * (1 - p)
    np.testing.assert_allclose(grad(EntropyMaximizationLoss(COUNTS, alpha, log_eps=eps), z, y),
                               expected / z.numel(), rtol=1e-8, atol=1e-15)


def apl(**kwargs) -> AsymmetricPseudoLabelLoss:
    return AsymmetricPseudoLabelLoss([4.0, 10.0, 1.0], num_samples=20, **kwargs)


def apl_epoch(loss, z, y, rows):
    """One 'epoch' of training calls: the scores of ``rows`` get recorded."""
    loss.train()
    for start in range(0, len(rows), 5):
        part = rows[start:start + 5]
        loss(z[part], y[part], indices=part)


def apl_data(seed=11):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(20, 3, generator=g, dtype=torch.float64) * 2
    y = torch.zeros(20, 3, dtype=torch.float64)
    y[:4, 0] = 1
    y[4:14, 1] = 1
    y[14, 2] = 1
    return z, y


def expected_pseudo_labels(z, y, seen, taken, per_round):
    """Per class, the ``per_round`` lowest-scored unknown rows among ``seen`` that are not ``taken``."""
    chosen = set()
    p = np_sig(z)
    for c, count in enumerate(per_round):
        candidates = sorted((p[i, c], i) for i in seen if y[i, c] == 0 and (i, c) not in taken)
        chosen |= {(i, c) for _, i in candidates[:count]}
    return chosen


def pseudo_set(loss) -> set:
    return {tuple(ij) for ij in loss.pseudo_mask.nonzero().tolist()}


def test_apl_schedule_warmup_counts_and_soft_labels():
    """U_c = 20 − n_c = (16, 10, 19); T = 6, warm-up 2 → 4 rounds of ⌊0.8·U_c/4⌋ = (3, 2, 3)."""
    z, y = apl_data()
    loss = apl(warmup_epochs=2, proportion=0.8, beta=0.5)
    rows = torch.arange(20)
    taken: set = set()
    for epoch in range(6):
        loss.set_epoch(epoch, 6)
        if epoch < 2:
            assert not loss.pseudo_mask.any()
        else:
            new = pseudo_set(loss) - taken
            assert new == expected_pseudo_labels(z, y, range(20), taken, (3, 2, 3)), epoch
            taken |= new
        assert torch.isinf(loss.scores).all()  # a fresh record for the epoch
        apl_epoch(loss, z, y, rows)
    assert len(taken) == 4 * (3 + 2 + 3)
    p = np_sig(z)
    for i, c in taken:
        assert y[i, c] == 0 and loss.pseudo_value[i, c].item() == pytest.approx(p[i, c], rel=1e-6)


def test_apl_unseen_rows_and_positives_are_not_candidates():
    z, y = apl_data(12)
    loss = apl(warmup_epochs=1, proportion=1.0)
    loss.set_epoch(0, 2)
    seen = torch.arange(0, 20, 2)
    apl_epoch(loss, z, y, seen)
    assert torch.isinf(loss.scores[1::2]).all() and torch.isinf(loss.scores[y == 1]).all()
    loss.set_epoch(1, 2)  # one round: ⌊U_c⌋ = all seen unknowns
    assert pseudo_set(loss) == {(i, c) for i in seen.tolist() for c in range(3) if y[i, c] == 0}


def test_apl_loss_with_pseudo_labels_matches_reference():
    z, y = apl_data(13)
    for soft in (None, 0.0, 0.2):
        loss = apl(warmup_epochs=1, proportion=0.5, beta=0.4, alpha=0.1, soft_label=soft)
        loss.set_epoch(0, 3)
        apl_epoch(loss, z, y, torch.arange(20))
        loss.set_epoch(1, 3)
        labelled = pseudo_set(loss)
        assert labelled
        z2 = z + 0.7  # the scores have moved since
        p = np_sig(z)
        pseudo = {(i, c): (p[i, c] if soft is None else soft) for i, c in labelled}
        expected = ref_em(z2.numpy(), y.numpy(), 0.1, 1e-5, pseudo=pseudo, beta=0.4)
        assert loss(z2, y, indices=torch.arange(20)).item() == pytest.approx(expected, rel=1e-6)


def test_apl_set_epoch_is_idempotent_and_eval_mode_stateless():
    z, y = apl_data(14)
    loss = apl(warmup_epochs=1)
    loss.set_epoch(0, 4)
    apl_epoch(loss, z, y, torch.arange(10))
    scores = loss.scores.clone()
    loss.set_epoch(0, 4)  # resumed mid-epoch: the partial record stays
    assert torch.equal(loss.scores, scores)
    loss.set_epoch(1, 4)
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    loss.eval()
    out = loss(z, y, indices=torch.arange(20))
    assert out.item() == pytest.approx(ref_em(z.numpy(), y.numpy(), 0.2, 1e-5), rel=1e-10)
    for key, tensor in loss.state_dict().items():
        assert torch.equal(tensor, state[key])
    fresh = apl(warmup_epochs=1)
    fresh.load_state_dict(state)  # checkpoint round trip
    assert torch.equal(fresh.pseudo_mask, loss.pseudo_mask) and int(fresh.current_epoch) == 1


def test_apl_gradient_closed_form():
    """Pseudo-labelled unknowns: β[s·g⁺ + (1 − s)·g⁻]; others as EM."""
    z, y = apl_data(15)
    loss = apl(warmup_epochs=1, proportion=0.6, beta=0.7, alpha=0.3, soft_label=0.1, log_eps=0.0)
    loss.set_epoch(0, 2)
    apl_epoch(loss, z, y, torch.arange(20))
    loss.set_epoch(1, 2)
    mask = loss.pseudo_mask.numpy()
    p, yn = np_sig(z), y.numpy()
    em = yn * -(1 - p) + 0.3 * (1 - yn) * z.numpy() * p * (1 - p)  # −α dH/dz = α·z·p(1 − p) for ε = 0
    soft = float(np.float32(0.1))  # pseudo-labels are kept in a float32 buffer
    pl = 0.7 * (soft * -(1 - p) + (1 - soft) * p)
    expected = np.where(mask, pl, em) / z.numel()
    np.testing.assert_allclose(grad(loss, z, y, indices=torch.arange(20)), expected, rtol=1e-9, atol=1e-16)


# -- Hill, SPLC --------------------------------------------------------------------------------------

def test_hill_by_hand():
    """z = 0: an unknown costs (1.5 − ½)·¼ = ¼; a positive at z − m = 0 costs ¼·log 2 (m = 0)."""
    z = torch.zeros(1, 2, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert value(HillLoss([1, 1], margin=0.0), z, y) == pytest.approx(0.25 + 0.25 * math.log(2))


def focal_grads(z: np.ndarray, gamma: float):
    """d/dz of the focal positive and negative element losses."""
    p = 1 / (1 + np.exp(-z))
    q = 1 - p
    positive = gamma * p * q**gamma * np.log(p) - q ** (gamma + 1)
    negative = -gamma * q * p**gamma * np.log(q) + p ** (gamma + 1)
    return positive, negative


def test_hill_gradient_closed_form():
    z, y = batch(17)
    lam, margin, gamma = 1.5, 1.0, 2.0
    p, yn = np_sig(z), y.numpy()
    positive, _ = focal_grads(z.numpy() - margin, gamma)
    expected = yn * positive + (1 - yn) * (2 * lam * p - 3 * p**2) * p * (1 - p)
    np.testing.assert_allclose(grad(HillLoss(COUNTS), z, y), expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("epoch", [0, 1, 5])
@pytest.mark.parametrize("tau", [0.6, 0.8])
def test_splc_matches_reference_and_schedule(epoch, tau):
    z, y = batch(18)
    loss = SPLCLoss(COUNTS, tau=tau)
    loss.set_epoch(epoch, 6)
    assert value(loss, z, y) == pytest.approx(ref_splc(z.numpy(), y.numpy(), epoch, tau), rel=1e-10)


def test_splc_correction_starts_at_start_epoch():
    z = torch.tensor([[3.0, -3.0, 0.0]], dtype=torch.float64)  # σ = .95, .05, .5
    y = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    loss = SPLCLoss([1, 1, 1], start_epoch=2, margin=0.0)
    before = focal_negative(3.0, 2) + focal_negative(-3.0, 2) + focal_positive(0.0, 2)
    after = focal_positive(3.0, 2) + focal_negative(-3.0, 2) + focal_positive(0.0, 2)
    for epoch, expected in ((0, before), (1, before), (2, after), (9, after)):
        loss.set_epoch(epoch, 10)
        assert value(loss, z, y) == pytest.approx(expected, rel=1e-12)
    assert SPLCLoss([1, 1, 1], margin=0.0)(z, y).item() == pytest.approx(before)  # no set_epoch yet: epoch 0


def test_splc_gradient_closed_form():
    z, y = batch(19)
    loss = SPLCLoss(COUNTS)
    loss.set_epoch(3, 5)
    p, yn = np_sig(z), y.numpy()
    corrected = np.maximum(yn, p > 0.6)
    positive, negative = focal_grads(z.numpy() - yn, 2.0)
    expected = np.where(corrected == 1, positive, negative)
    np.testing.assert_allclose(grad(loss, z, y), expected, rtol=1e-10, atol=1e-15)


# -- GR ----------------------------------------------------------------------------------------------

GR_RANGES = {"w": (0.0, 2.0), "b": (-2.0, -2.0), "mu": (0.5, 0.8), "sigma": (2.0, 0.5)}


@pytest.mark.parametrize("epoch,max_epochs", [(0, 8), (3, 8), (7, 8), (0, 1), (4, 10)])
def test_gr_reference_schedule(epoch, max_epochs):
    loss = GeneralizedRobustLoss(COUNTS)
    loss.set_epoch(epoch, max_epochs)
    for name, (first, last) in GR_RANGES.items():
        kind = "k" if name in ("w", "b") else "v"
        assert loss.current[name] == pytest.approx(reference_schedule(epoch, max_epochs, first, last, kind))


def test_gr_schedules_first_last_and_midway():
    ref = GeneralizedRobustLoss(COUNTS)
    assert ref.current == {"w": 0.0, "b": -2.0, "mu": 0.5, "sigma": 2.0}  # before any set_epoch
    ref.set_epoch(0, 8)
    assert ref.current == pytest.approx({"w": 0.0, "b": -2.0, "mu": 0.5375, "sigma": 1.8125})
    ref.set_epoch(4, 8)
    assert ref.current == pytest.approx({"w": 1.0, "b": -2.0, "mu": 0.6875, "sigma": 1.0625})
    ref.set_epoch(7, 8)
    assert ref.current == pytest.approx({"w": 1.75, "b": -2.0, "mu": 0.8, "sigma": 0.5})
    linear = GeneralizedRobustLoss(COUNTS, schedule="linear")
    for epoch, expected in ((0, {"w": 0.0, "b": -2.0, "mu": 0.5, "sigma": 2.0}),
                            (4, {"w": 1.0, "b": -2.0, "mu": 0.65, "sigma": 1.25}),
                            (8, {"w": 2.0, "b": -2.0, "mu": 0.8, "sigma": 0.5})):
        linear.set_epoch(epoch, 9)
        assert linear.current == pytest.approx(expected)
    linear.set_epoch(0, 1)
    assert linear.current == pytest.approx({"w": 0.0, "b": -2.0, "mu": 0.5, "sigma": 2.0})


@pytest.mark.parametrize("schedule", ["reference", "linear"])
@pytest.mark.parametrize("epoch", [0, 5, 9])
@pytest.mark.parametrize("eps", [1e-7, 0.0])
def test_gr_matches_reference(schedule, epoch, eps):
    z, y = batch(20 + epoch)
    loss = GeneralizedRobustLoss(COUNTS, schedule=schedule, log_eps=eps)
    loss.set_epoch(epoch, 10)
    s = loss.current
    expected = ref_gr(z.numpy(), y.numpy(), s["w"], s["b"], s["mu"], s["sigma"], eps=eps)
    assert value(loss, z, y) == pytest.approx(expected, rel=1e-10)


def test_gr_by_hand():
    """z = 0, w = b = 0, μ = ½: p = k̂ = ½, v = 1; an unknown costs ½(1 − ½^q2)/q2 + ½·½ (q3 = 1)."""
    z = torch.zeros(1, 2, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    loss = GeneralizedRobustLoss([1, 1], w=[0, 0], b=[0, 0], mu=[0.5, 0.5], sigma=[1, 1], q2=0.5, log_eps=0.0)
    unknown = 0.5 * (1 - 0.5**0.5) / 0.5 + 0.5 * 0.5
    assert value(loss, z, y) == pytest.approx((math.log(2) + unknown) / 2)


@pytest.mark.parametrize("detach_k", [True, False])
def test_gr_gradient_closed_form(detach_k):
    """Unknowns: v[k̂·(−p^q2(1 − p)) + (1 − k̂)·p(1 − p)^q3] (+ v(L2 − L3)·k̂(1 − k̂)·w·p(1 − p) through k̂)."""
    z, y = batch(31)
    loss = GeneralizedRobustLoss(COUNTS, q3=0.5, detach_k=detach_k)
    loss.set_epoch(6, 10)
    s = loss.current
    p, yn = np_sig(z), y.numpy()
    k = 1 / (1 + np.exp(-(s["w"] * p + s["b"])))
    v = np.exp(-((p - s["mu"]) ** 2) / (2 * s["sigma"] ** 2))
    l2, l3 = (1 - p**0.01) / 0.01, (1 - (1 - p) ** 0.5) / 0.5
    unknown = v * (k * -(p**0.01) * (1 - p) + (1 - k) * p * (1 - p) ** 0.5)
    if not detach_k:
        unknown += v * (l2 - l3) * k * (1 - k) * s["w"] * p * (1 - p)
    expected = (yn * d_nlog_p(p, 1e-7) + (1 - yn) * unknown) / z.numel()
    np.testing.assert_allclose(grad(loss, z, y), expected, rtol=1e-9, atol=1e-16)
    assert loss.detached_terms == ("v(p) and k̂(p)" if detach_k else "v(p)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gr_finite_gradient_at_saturation_where_pow_is_not(dtype):
    """p^0.01 at σ(−100): the reference's pow has derivative q·p^(q−1) → ∞; logsigmoid keeps it finite."""
    z = torch.tensor([[-100.0, 100.0, -100.0, 30.0]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=dtype)
    loss = GeneralizedRobustLoss([1] * 4, log_eps=0.0)
    loss.set_epoch(3, 4)
    out = loss(z, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    expected = ref_gr(z.detach().double().numpy(), y.double().numpy(), **loss.current, eps=0.0)
    assert out.item() == pytest.approx(expected, rel=1e-6)


# -- shared: reductions, inputs, validation ----------------------------------------------------------

def every_loss(**common):
    return [AssumeNegativeLoss(COUNTS, **common), ExpectedPositiveLoss(COUNTS, **common),
            EntropyMaximizationLoss(COUNTS, **common), HillLoss(COUNTS, **common), SPLCLoss(COUNTS, **common),
            GeneralizedRobustLoss(COUNTS, **common)]


def test_reductions_scale_the_elementwise_part():
    z, y = batch(32)
    b = z.shape[0]
    for mean, total, per_instance in zip(every_loss(reduction="mean"), every_loss(reduction="sum"),
                                         every_loss(reduction="instances"), strict=True):
        penalty = 0.0
        if isinstance(mean, ExpectedPositiveLoss):  # the batch-level regulariser is added unscaled
            penalty = epr_penalty(np_sig(z), 1.5)
        assert value(total, z, y) - penalty == pytest.approx((value(mean, z, y) - penalty) * z.numel(), rel=1e-10)
        assert value(per_instance, z, y) - penalty == pytest.approx((value(total, z, y) - penalty) / b, rel=1e-10)


def test_reference_reductions_are_the_defaults():
    assert [loss.reduction for loss in every_loss()] == ["mean", "mean", "mean", "sum", "sum", "mean"]
    assert RoleLoss(COUNTS, num_samples=N).reduction == apl().reduction == "mean"


@pytest.mark.parametrize("loss", every_loss(), ids=lambda loss: type(loss).__name__)
def test_all_unknown_and_float32_batches(loss):
    z, y = batch(33)
    y = torch.zeros_like(y)
    zg = z.clone().requires_grad_(True)
    out = loss(zg, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(zg.grad).all()
    z32, y32 = z.float(), y.float()
    assert loss(z32, y32).item() == pytest.approx(out.item(), rel=1e-5, abs=1e-7)


def test_log_eps_bounds_the_reference_form_and_zero_is_exact():
    """At z = −30 the reference form saturates at −log ε; log_eps = 0 gives the exact 30."""
    z = torch.tensor([[-30.0]], dtype=torch.float64)
    y = torch.ones(1, 1, dtype=torch.float64)
    assert value(AssumeNegativeLoss([1]), z, y) == pytest.approx(-math.log(1e-5 + sig(-30.0)))
    assert value(AssumeNegativeLoss([1], log_eps=0.0), z, y) == pytest.approx(30.0, rel=1e-12)


@pytest.mark.parametrize("factory,kwargs,key", [
    (AssumeNegativeLoss, dict(label_smoothing=0.5), "label_smoothing"),
    (AssumeNegativeLoss, dict(label_smoothing=-0.1), "label_smoothing"),
    (AssumeNegativeLoss, dict(negative_weight=-1), "negative_weight"),
    (AssumeNegativeLoss, dict(negative_weight="1/C"), "negative_weight"),
    (AssumeNegativeLoss, dict(log_eps=-1e-5), "log_eps"),
    (AssumeNegativeLoss, dict(log_eps="small"), "log_eps"),
    (AssumeNegativeLoss, dict(reduction="avg"), "reduction"),
    (ExpectedPositiveLoss, dict(expected_positives=0), "expected_positives"),
    (ExpectedPositiveLoss, dict(expected_positives=6), "expected_positives"),
    (RoleLoss, dict(num_samples=0), "num_samples"),
    (RoleLoss, dict(num_samples=N, estimate_lr=0), "estimate_lr"),
    (RoleLoss, dict(num_samples=N, init_seed=0.5), "init_seed"),
    (EntropyMaximizationLoss, dict(alpha=-0.1), "alpha"),
    (AsymmetricPseudoLabelLoss, dict(num_samples=N, beta=-1), "beta"),
    (AsymmetricPseudoLabelLoss, dict(num_samples=N, warmup_epochs=0), "warmup_epochs"),
    (AsymmetricPseudoLabelLoss, dict(num_samples=N, warmup_epochs=2.5), "warmup_epochs"),
    (AsymmetricPseudoLabelLoss, dict(num_samples=N, proportion=1.5), "proportion"),
    (AsymmetricPseudoLabelLoss, dict(num_samples=N, soft_label=1.0), "soft_label"),
    (AsymmetricPseudoLabelLoss, dict(num_samples=100), "class_counts"),
    (HillLoss, dict(hill_lambda=-1), "hill_lambda"),
    (HillLoss, dict(margin=-0.5), "margin"),
    (HillLoss, dict(gamma=-2), "gamma"),
    (SPLCLoss, dict(tau=1.0), "tau"),
    (SPLCLoss, dict(start_epoch=-1), "start_epoch"),
    (GeneralizedRobustLoss, dict(w=[1.0]), "w"),
    (GeneralizedRobustLoss, dict(mu="0.5"), "mu"),
    (GeneralizedRobustLoss, dict(sigma=[1.0, 0.0]), "sigma"),
    (GeneralizedRobustLoss, dict(q2=0.0), "q2"),
    (GeneralizedRobustLoss, dict(q3=1.5), "q3"),
    (GeneralizedRobustLoss, dict(detach_k="yes"), "detach_k"),
    (GeneralizedRobustLoss, dict(schedule="cosine"), "schedule"),
    (GeneralizedRobustLoss, dict(implementation="eager"), "implementation"),
    (EntropyMaximizationLoss, dict(implementation="jit"), "implementation"),
    (HillLoss, dict(implementation=""), "implementation"),
    (SPLCLoss, dict(implementation=None), "implementation"),
])
def test_invalid_fields_name_the_key(factory, kwargs, key):
    with pytest.raises(ConfigError) as err:
        factory(COUNTS if key != "class_counts" else [150.0, 1.0], **kwargs)
    assert err.value.key == key and str(err.value).startswith(f"{key}=")


def test_wan_needs_two_classes_and_class_count_mismatch_is_clear():
    with pytest.raises(ConfigError) as err:
        AssumeNegativeLoss([5.0], negative_weight="1/(C-1)")
    assert err.value.key == "negative_weight"
    with pytest.raises(ValueError, match="built for 5 classes"):
        HillLoss(COUNTS)(torch.zeros(2, 3), torch.zeros(2, 3))


# -- fused kernels (implementation: fused, the default) against the autograd forms ---------------------

def _apl_with_pseudo_labels(**kwargs) -> AsymmetricPseudoLabelLoss:
    """An APL loss (20 rows, 3 classes) after one epoch of scores and a pseudo-labelling round."""
    loss = apl(warmup_epochs=1, proportion=0.5, beta=0.4, alpha=0.3, **kwargs)
    z, y = apl_data(16)
    loss.set_epoch(0, 3)
    apl_epoch(loss, z, y, torch.arange(20))
    loss.set_epoch(1, 3)
    assert loss.pseudo_mask.any()
    return loss


FUSED_CASES = {
    "em": lambda impl: EntropyMaximizationLoss(COUNTS, implementation=impl),
    "em exact α=1 labels": lambda impl: EntropyMaximizationLoss(COUNTS, 1.0, log_eps=0.0, reduction="labels",
                                                                implementation=impl),
    "hill": lambda impl: HillLoss(COUNTS, implementation=impl),
    "hill λ=1 m=.5 γ=1 mean": lambda impl: HillLoss(COUNTS, 1.0, 0.5, 1.0, reduction="mean", implementation=impl),
    "hill m=0 γ=0": lambda impl: HillLoss(COUNTS, 2.0, 0.0, 0.0, implementation=impl),
    "hill γ=1.5": lambda impl: HillLoss(COUNTS, gamma=1.5, implementation=impl),
    "splc epoch 0": lambda impl: SPLCLoss(COUNTS, implementation=impl),
    "splc epoch 3": lambda impl: _at_epoch(SPLCLoss(COUNTS, implementation=impl), 3, 5),
    "splc τ=.8 γ=1.5 m=0 instances": lambda impl: _at_epoch(
        SPLCLoss(COUNTS, tau=0.8, margin=0.0, gamma=1.5, reduction="instances", implementation=impl), 2, 5),
    "splc γ=0": lambda impl: _at_epoch(SPLCLoss(COUNTS, gamma=0.0, implementation=impl), 1, 5),
    "gr reference epoch 0": lambda impl: _at_epoch(GeneralizedRobustLoss(COUNTS, implementation=impl), 0, 10),
    "gr reference epoch 7": lambda impl: _at_epoch(GeneralizedRobustLoss(COUNTS, implementation=impl), 7, 10),
    "gr linear q=.5,.3 exact": lambda impl: _at_epoch(
        GeneralizedRobustLoss(COUNTS, q2=0.5, q3=0.3, log_eps=0.0, schedule="linear", implementation=impl), 4, 9),
    "gr k̂ with gradient q=1,1 labels": lambda impl: _at_epoch(
        GeneralizedRobustLoss(COUNTS, q2=1.0, detach_k=False, reduction="labels", implementation=impl), 6, 10),
    "gr k̂ with gradient q3=.5": lambda impl: _at_epoch(
        GeneralizedRobustLoss(COUNTS, q3=0.5, detach_k=False, **GR_FIXED, implementation=impl), 0, 1),
}


def _at_epoch(loss, epoch: int, max_epochs: int):
    loss.set_epoch(epoch, max_epochs)
    return loss


@pytest.mark.parametrize("case", FUSED_CASES)
@pytest.mark.parametrize("scale", [3.0, 40.0])
def test_fused_matches_autograd(case, scale):
    """Values and gradients in float64, ordinary and saturated logits (scale 40: |z| up to ~100)."""
    fused_loss, autograd_loss = FUSED_CASES[case]("fused"), FUSED_CASES[case]("autograd")
    assert fused_loss.implementation == "fused" and autograd_loss.implementation == "autograd"
    for seed in (0, 1):
        z, y = batch(40 + seed, b=12, scale=scale)
        assert value(fused_loss, z, y) == pytest.approx(value(autograd_loss, z, y), rel=1e-10, abs=1e-300)
        np.testing.assert_allclose(grad(fused_loss, z, y), grad(autograd_loss, z, y), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("soft_label", [None, 0.0, 0.2])
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_fused_apl_matches_autograd(soft_label, eps):
    z, y = apl_data(16)
    z = z + 0.5  # the scores have moved since the labelling
    fused_loss = _apl_with_pseudo_labels(soft_label=soft_label, log_eps=eps)
    autograd_loss = _apl_with_pseudo_labels(soft_label=soft_label, log_eps=eps, implementation="autograd")
    rows = torch.arange(20)
    assert value(fused_loss, z, y, indices=rows) == pytest.approx(value(autograd_loss, z, y, indices=rows),
                                                                  rel=1e-10)
    np.testing.assert_allclose(grad(fused_loss, z, y, indices=rows), grad(autograd_loss, z, y, indices=rows),
                               rtol=1e-9, atol=1e-16)
    assert torch.equal(fused_loss.scores, autograd_loss.scores)  # the same state update


@pytest.mark.parametrize("case", [c for c in FUSED_CASES if not c.startswith("gr")])
def test_fused_gradcheck(case):
    """Finite differences, float64, for the kernels with nothing detached (GR: the closed-form tests above)."""
    loss = FUSED_CASES[case]("fused")
    z, y = batch(50, b=6)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_fused_apl_gradcheck():
    loss = _apl_with_pseudo_labels()
    z, y = apl_data(17)
    z.requires_grad_(True)
    rows = torch.arange(20)
    assert torch.autograd.gradcheck(lambda t: loss(t, y, indices=rows), (z,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("detach_k", [True, False])
@pytest.mark.parametrize("q2,q3,eps", [(0.01, 1.0, 1e-7), (0.5, 0.3, 0.0)])
def test_fused_gr_non_detached_part_against_finite_differences(detach_k, q2, q3, eps):
    """Hold v (and k̂) at their values for the batch: the rest is checked against central differences."""
    loss = _at_epoch(GeneralizedRobustLoss(COUNTS, q2=q2, q3=q3, log_eps=eps, detach_k=detach_k), 5, 10)
    z, y = batch(51, b=4)
    s = loss.current
    p0 = torch.sigmoid(z)
    v = torch.exp(-((p0 - s["mu"]) ** 2) / (2 * s["sigma"] ** 2))
    k0 = torch.sigmoid(s["w"] * p0 + s["b"])

    def frozen(t):  # the GR element form with v (and k̂) held at the batch's values
        p = torch.sigmoid(t)
        k = k0 if detach_k else torch.sigmoid(s["w"] * p + s["b"])
        l2 = (1 - p**q2) / q2
        l3 = (1 - (1 - p) ** q3) / q3
        positive = -torch.log(p + eps)
        return (y * positive + (1 - y) * v * (k * l2 + (1 - k) * l3)).mean()

    step = 1e-6
    expected = torch.zeros_like(z)
    for index in np.ndindex(*z.shape):
        e = torch.zeros_like(z)
        e[index] = step
        expected[index] = (frozen(z + e) - frozen(z - e)) / (2 * step)
    np.testing.assert_allclose(grad(loss, z, y), expected.numpy(), rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("case", ["em", "hill", "splc epoch 3", "gr reference epoch 7"])
def test_fused_value_without_gradient_and_no_double_backward(case):
    loss = FUSED_CASES[case]("fused")
    z, y = batch(52)
    with torch.no_grad():
        assert loss(z, y).item() == pytest.approx(value(loss, z.clone().requires_grad_(True), y), rel=1e-14)
    zg = z.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(loss(zg, y), zg, create_graph=True)
    with pytest.raises(RuntimeError):
        first.sum().backward()


def test_fused_float32_extremes_match_float64():
    """±100 and moderate logits in float32: fused values and gradients against float64 autograd."""
    g = torch.Generator().manual_seed(53)
    z = torch.cat([torch.full((2, C), 100.0), torch.full((2, C), -100.0), torch.randn(6, C, generator=g) * 4])
    y = torch.zeros_like(z)
    y[torch.arange(10), torch.arange(10) % C] = 1.0
    for case in FUSED_CASES:
        reference = FUSED_CASES[case]("autograd")
        expected_value = value(reference, z.double(), y.double())
        expected_grad = grad(reference, z.double(), y.double())
        loss = FUSED_CASES[case]("fused")
        assert value(loss, z, y) == pytest.approx(expected_value, rel=1e-5, abs=1e-6), case
        got = grad(loss, z, y)
        assert np.isfinite(got).all(), case
        np.testing.assert_allclose(got, expected_grad, rtol=1e-4, atol=1e-6 * np.abs(expected_grad).max(), err_msg=case)


def test_em_apl_warns_when_the_warm_up_outlasts_the_run(caplog):
    loss = apl(warmup_epochs=5)
    with caplog.at_level("WARNING", logger="mlc.losses"):
        loss.set_epoch(0, 5)
    assert "warmup_epochs=5 >= trainer.max_epochs=5: no pseudo-labelling" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mlc.losses"):
        apl(warmup_epochs=5).set_epoch(0, 10)
    assert not caplog.text
