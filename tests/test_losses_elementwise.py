"""The shared element-wise primitives: softplus / log_sigmoid without log1p, and the BCE and focal terms on them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlc.losses.elementwise import bce_with_logits, focal_with_logits, log_sigmoid, softplus, softplus_value

GRID = torch.cat([torch.linspace(-100, 100, 2001, dtype=torch.float64), torch.tensor([0.0, -1e-8, 1e-8, 17.0, -17.0],
                                                                                      dtype=torch.float64)])


def reference_softplus(x: float) -> float:
    """softplus in exact-as-Python arithmetic: max(x, 0) + log1p(exp(−|x|))."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 2e-7), (torch.float64, 4e-16)])
def test_softplus_value_is_within_one_ulp_of_one_of_the_exact_value(dtype, tolerance):
    got = softplus_value(GRID.to(dtype)).double()
    expected = torch.tensor([reference_softplus(x) for x in GRID.tolist()], dtype=torch.float64)
    # the term log(1 + e^−|x|) lies in [0, log 2]: an absolute bound, relative to the larger max(x, 0) part
    assert ((got - expected).abs() <= tolerance * torch.clamp(expected, min=1.0)).all()
    assert (got >= 0).all()


def test_softplus_gradient_is_exact_sigmoid_and_double_backward_works():
    x = GRID.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(softplus(x).sum(), x, create_graph=True)
    torch.testing.assert_close(grad, torch.sigmoid(GRID), rtol=0, atol=1e-15)
    (second,) = torch.autograd.grad(grad.sum(), x)
    torch.testing.assert_close(second, torch.sigmoid(GRID) * torch.sigmoid(-GRID), rtol=0, atol=1e-15)
    small = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(softplus, (small,))
    assert torch.autograd.gradgradcheck(softplus, (small,))


def test_log_sigmoid_matches_torch_and_stays_finite_at_extremes():
    x = torch.tensor([-100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0], requires_grad=True)
    value = log_sigmoid(x)
    torch.testing.assert_close(value, F.logsigmoid(x.detach()), rtol=1e-6, atol=2e-7)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.sigmoid(-x.detach()))


def test_bce_and_focal_terms_match_torch_and_leave_inputs_alone():
    logits = torch.randn(6, 4, dtype=torch.float64) * 5
    targets = (torch.rand(6, 4, dtype=torch.float64) < 0.4).double()
    before = logits.clone(), targets.clone()
    torch.testing.assert_close(bce_with_logits(logits, targets),
                               F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))
    p = torch.sigmoid(logits)
    p_t = torch.where(targets > 0, p, 1 - p)
    torch.testing.assert_close(focal_with_logits(logits, targets, 2.0),
                               (1 - p_t) ** 2 * -torch.log(p_t))
    assert torch.equal(logits, before[0]) and torch.equal(targets, before[1])


def test_softplus_keeps_grad_mode_and_works_under_no_grad():
    with torch.no_grad():
        value = softplus(torch.randn(3, requires_grad=True))
        assert not value.requires_grad and torch.is_grad_enabled() is False
    assert torch.is_grad_enabled()
