"""Two-way loss (Kobayashi, CVPR 2023) against a float64 derivation written from the paper's formula.

The reference below works one set at a time with Python floats: for a row (instance) or column (class)
that has a positive, ℓ = log(1 + (Σ_N e^{z/T_n})^{T_n} · (Σ_P e^{−z/T_p})^{T_p}), the sums running over
the set's members and, in the reference code's masked form, over the other entries at e^{z/T − 100} too;
the loss is the mean of ℓ over such rows plus its mean over such columns. Gradients: closed form,
dℓ/dz = σ(s)·softmax_N(z/T_n) on negatives and −σ(s)·softmax_P(−z/T_p) on positives (s = the argument
of the softplus).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlc.errors import ConfigError
from mlc.losses.two_way import TwoWayLoss

MASKS = [-100.0, None]  # the reference code's nINF, and exact exclusion


def sets(y: np.ndarray, axis: int):
    """(index, positive members, negative members) of every row (axis=1) or column (axis=0)."""
    lines = y if axis == 1 else y.T
    return [(k, line > 0, line == 0) for k, line in enumerate(lines)]


def smooth_sum(values: np.ndarray, member: np.ndarray, t: float, masked: float | None) -> float:
    """Σ_member e^{v/t} (+ Σ_others e^{v/t + masked} in the reference form)."""
    total = 0.0
    for v, m in zip(values.tolist(), member.tolist(), strict=True):
        if m:
            total += math.exp(v / t)
        elif masked is not None:
            total += math.exp(v / t + masked)
    return total


def ref_two_way(z: np.ndarray, y: np.ndarray, tp=4.0, tn=1.0, masked=-100.0) -> float:
    total = 0.0
    for axis in (1, 0):
        terms = []
        for k, pos, neg in sets(y, axis):
            if not pos.any():
                continue
            line = z[k] if axis == 1 else z[:, k]
            n_sum = smooth_sum(line, neg, tn, masked)
            p_sum = smooth_sum(-line, pos, tp, masked)
            terms.append(0.0 if n_sum == 0 else math.log1p(n_sum**tn * p_sum**tp))
        total += sum(terms) / len(terms) if terms else 0.0
    return total


def ref_two_way_grad(z: np.ndarray, y: np.ndarray, tp=4.0, tn=1.0, masked=-100.0) -> np.ndarray:
    grad = np.zeros_like(z)
    for axis in (1, 0):
        counted = [(k, pos, neg) for k, pos, neg in sets(y, axis) if pos.any()]
        for k, pos, neg in counted:
            line = z[k] if axis == 1 else z[:, k]
            n_sum, p_sum = smooth_sum(line, neg, tn, masked), smooth_sum(-line, pos, tp, masked)
            if n_sum == 0:
                continue
            s = tn * math.log(n_sum) + tp * math.log(p_sum)
            weight = 1 / (1 + math.exp(-s)) / len(counted)
            shift_n = np.where(neg, 0.0, -np.inf if masked is None else masked)
            shift_p = np.where(pos, 0.0, -np.inf if masked is None else masked)
            d = weight * (np.exp(line / tn + shift_n) / n_sum - np.exp(-line / tp + shift_p) / p_sum)
            if axis == 1:
                grad[k] += d
            else:
                grad[:, k] += d
    return grad


def batch(seed=0, b=9, c=6, scale=2.5):
    """Rows: two all-negative, one all-positive, the rest random; column 4 without positive."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    y = (torch.rand(b, c, generator=g) < 0.35).to(torch.float64)
    y[0] = 0
    y[5] = 0
    y[2] = 1
    y[:, 4] = 0
    y[3, 1] = 1  # at least one more positive in column 1
    return z, y


@pytest.mark.parametrize("masked", MASKS)
@pytest.mark.parametrize("tp,tn", [(4.0, 1.0), (1.0, 1.0), (2.0, 0.5), (0.25, 3.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_and_gradient_match_the_formula(seed, tp, tn, masked):
    z, y = batch(seed)
    loss = TwoWayLoss(pos_temperature=tp, neg_temperature=tn, masked_logit=masked)
    x = z.clone().requires_grad_(True)
    out = loss(x, y)
    out.backward()
    assert out.item() == pytest.approx(ref_two_way(z.numpy(), y.numpy(), tp, tn, masked), rel=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), ref_two_way_grad(z.numpy(), y.numpy(), tp, tn, masked),
                               rtol=1e-10, atol=1e-15)


def test_by_hand():
    """A 1 × 2 batch, a positive and a negative at z = 0: the row's term is softplus(0 + 0) = log 2; column 0
    has no negative (term 0, or e^−100 with the reference mask), column 1 no positive (no term)."""
    z = torch.zeros(1, 2, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert TwoWayLoss(masked_logit=None)(z, y).item() == math.log(2)
    assert TwoWayLoss()(z, y).item() == pytest.approx(math.log(2), rel=1e-15)


def test_the_reference_mask_leaks_only_near_100():
    """An all-positive row (100, 0) with T_n = 1: the reference counts the positive at 100 as a negative at
    100 − 100 = 0, level with the positive at 0 (row term ≈ log 2); excluded exactly, the row has no negative
    and its term is 0."""
    z = torch.tensor([[100.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    reference, exact = TwoWayLoss()(z, y).item(), TwoWayLoss(masked_logit=None)(z, y).item()
    assert reference == pytest.approx(ref_two_way(z.numpy(), y.numpy(), masked=-100.0), rel=1e-12)
    assert exact == pytest.approx(ref_two_way(z.numpy(), y.numpy(), masked=None), rel=1e-12)
    assert reference - exact == pytest.approx(math.log(2) / 2, rel=1e-6)  # (the mean over two rows)
    # and nowhere at ordinary logits:
    z2, y2 = batch(3)
    assert TwoWayLoss()(z2, y2).item() == pytest.approx(TwoWayLoss(masked_logit=None)(z2, y2).item(), rel=1e-12)


def test_rows_and_columns_without_positive_only_enter_the_other_way():
    """Logits of an all-negative row move the loss only through the columns that have a positive."""
    z, y = batch(4)
    loss = TwoWayLoss(masked_logit=None)
    base = loss(z, y).item()
    moved = z.clone()
    moved[0, 4] += 3.0  # all-negative row, column without positive: in no term at all
    assert loss(moved, y).item() == base
    moved[0, 1] += 3.0  # all-negative row, column 1 has a positive: in that column's term
    assert loss(moved, y).item() > base
    x = z.clone().requires_grad_(True)
    loss(x, y).backward()
    assert x.grad[:, 4].abs().sum() > 0 and x.grad[0, 4] == 0 and x.grad[5, 4] == 0


def test_set_membership_follows_the_reference():
    """Positive: y > 0 (a soft 0.5 too); negative: y = 0 exactly."""
    z, y = batch(10)
    soft = y.clone()
    soft[soft == 1] = 0.5
    assert TwoWayLoss()(z, soft).item() == TwoWayLoss()(z, y).item()
    y2 = y.clone()
    y2[0, 0] = 0.5  # an all-negative row gets a positive: it gains a row term
    assert TwoWayLoss()(z, y2).item() == pytest.approx(ref_two_way(z.numpy(), (y2 > 0).double().numpy()), rel=1e-12)


@pytest.mark.parametrize("masked", MASKS)
def test_a_common_shift_of_all_logits_changes_nothing(masked):
    """Each way, +c on the negatives' smooth max and −c on the positives' smooth min: no absolute level."""
    z, y = batch(9)
    loss = TwoWayLoss(masked_logit=masked)
    assert loss(z + 7.5, y).item() == pytest.approx(loss(z, y).item(), rel=1e-12)
    x = z.clone().requires_grad_(True)
    loss(x, y).backward()
    assert abs(x.grad.sum().item()) < 1e-14 and x.grad.abs().sum() > 0.1


@pytest.mark.parametrize("masked", MASKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_at_extreme_logits(masked, dtype):
    z, y = batch(5)
    g = torch.Generator().manual_seed(6)
    x = torch.where(torch.rand(z.shape, generator=g) < 0.5, 100.0, -100.0).to(dtype).requires_grad_(True)
    out = TwoWayLoss(masked_logit=masked)(x, y.to(dtype))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("masked", MASKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_negative_batch_is_zero_with_a_zero_gradient(masked, dtype):
    """The reference's mean over no row and no column is NaN; here 0, and the graph is still connected."""
    z, _ = batch(7)
    x = (z * 40).to(dtype).requires_grad_(True)
    out = TwoWayLoss(masked_logit=masked)(x, torch.zeros_like(x))
    out.backward()
    assert out.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_float32_agrees_with_float64():
    z, y = batch(8)
    for masked in MASKS:
        loss = TwoWayLoss(masked_logit=masked)
        assert loss(z.float(), y.float()).item() == pytest.approx(loss(z, y).item(), rel=1e-5)


@pytest.mark.parametrize("kwargs,key", [
    (dict(pos_temperature=0.0), "pos_temperature"), (dict(neg_temperature=-1.0), "neg_temperature"),
    (dict(pos_temperature=float("inf")), "pos_temperature"), (dict(masked_logit=0.0), "masked_logit"),
    (dict(masked_logit="none"), "masked_logit"),
])
def test_bad_settings_are_refused(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        TwoWayLoss(**kwargs)


def test_shape_check_and_repr():
    with pytest.raises(ValueError, match="same shape"):
        TwoWayLoss()(torch.zeros(2, 3), torch.zeros(3, 2))
    assert repr(TwoWayLoss()) == "TwoWayLoss(pos_temperature=4.0, neg_temperature=1.0, masked_logit=-100.0)"
