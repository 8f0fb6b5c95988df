"""Optimizer parameter groups and per-iteration learning-rate schedules.

Schedules are ``LambdaLR`` multipliers stepped once per optimizer step, with their lengths given in
epochs (converted with ``steps_per_epoch``), so one trainer loop serves both: ``warmup_cosine``
(linear warm-up from ``warmup_start_factor`` then cosine down to ``min_lr_ratio``, as the reference
runs) and ``step`` (multiply by ``gamma`` every ``step_epochs``). ``constant`` keeps the base LR.
A schedule config is a ``_partial_`` target; the trainer calls it with
``(optimizer, steps_per_epoch=..., max_epochs=...)``.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from mlc.errors import require

log = logging.getLogger(__name__)


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_and_bias: bool = True) -> list[dict]:
    """Weight decay on weights only: 1-D parameters (norm scales, biases) get none, as timm does."""
    if not no_decay_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(optimizer: torch.optim.Optimizer, steps_per_epoch: int, max_epochs: int,
                  warmup_epochs: float = 1.0, warmup_start_factor: float = 0.01,
                  min_lr_ratio: float = 0.01) -> LambdaLR:
    require(warmup_epochs >= 0, "warmup_epochs", warmup_epochs, "must be >= 0")
    if max_epochs and warmup_epochs > max_epochs / 2:
        log.warning("warm-up of %g epochs in a %d-epoch run: shortened to %g epochs", warmup_epochs, max_epochs,
                    max_epochs / 2)
        warmup_epochs = max_epochs / 2
    require(0 < warmup_start_factor <= 1, "warmup_start_factor", warmup_start_factor, "must be in (0, 1]")
    require(0 <= min_lr_ratio <= 1, "min_lr_ratio", min_lr_ratio, "must be in [0, 1]")
    total = max(1, steps_per_epoch * max_epochs)
    warmup = int(round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def step_decay(optimizer: torch.optim.Optimizer, steps_per_epoch: int, max_epochs: int,
               step_epochs: int = 10, gamma: float = 0.1) -> LambdaLR:
    require(isinstance(step_epochs, int) and step_epochs >= 1, "step_epochs", step_epochs, "must be an integer >= 1")
    require(0 < gamma <= 1, "gamma", gamma, "must be in (0, 1]")
    return LambdaLR(optimizer, lambda step: gamma ** (step // (step_epochs * steps_per_epoch)))


def constant(optimizer: torch.optim.Optimizer, steps_per_epoch: int, max_epochs: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)
