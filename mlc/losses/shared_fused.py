"""Small pieces shared by the fused (closed-form backward) kernels: ``asl_fused``, ``single_positive_fused``.

The reduction's denominator and the ``implementation`` switch are in ``mlc/losses/base.py`` (one for every loss).

Why these exist: PyTorch's ``softplus``/``logsigmoid`` go through ``log1p`` (slow here, see
``mlc/losses/elementwise.py``), and a large ``tensor ** float`` switches the whole process into a state
where ``log1p`` is fast, which distorts the loss benchmark (``benchmarks/losses.py``).
"""

from __future__ import annotations

import torch


def softplus_pair(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softplus(z), softplus(−z)) sharing one log σ(|z|) = −log(1 + e^−|z|) (``sigmoid``/``log``, no ``log1p``;
    as ``elementwise.softplus_value``), no autograd."""
    log_sig_abs = z.abs().sigmoid_().log_()
    return torch.sub(z.relu(), log_sig_abs), torch.sub(z.neg().relu_(), log_sig_abs)


def power(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """x^γ for x >= 0, γ > 0, out of place (autograd-safe): repeated multiplication for an integer γ <= 8, else
    exp(γ·log x) (0 at x = 0). Never ``x ** γ``: see the module docstring."""
    if exponent != int(exponent) or exponent > 8:
        return torch.exp(exponent * torch.log(x))
    n, result, base = int(exponent), None, x
    while True:
        if n & 1:
            result = base if result is None else result * base
        n >>= 1
        if not n:
            return result
        base = base * base

