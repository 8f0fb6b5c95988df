"""Weight EMA (``trainer.ema_decay``): an exponential moving average of the model's weights, evaluated
and checkpointed beside them.

Why a warm-up: with a fixed decay of 0.999 the average would remember the random initialisation for
thousands of steps; the effective decay ``min(decay, (1 + t) / (10 + t))`` after t updates (as
TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) lets it follow the early weights
closely and settle to ``decay`` later. Floating-point state (weights, BatchNorm statistics) is
averaged in one fused ``_foreach_lerp_``; integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEma:
    def __init__(self, module: nn.Module, decay: float):
        self.decay, self.updates = float(decay), 0
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        pairs = list(zip(self.module.state_dict().values(), module.state_dict().values(), strict=True))
        self._float = ([e for e, _ in pairs if e.is_floating_point()], [m for e, m in pairs if e.is_floating_point()])
        self._other = [(e, m) for e, m in pairs if not e.is_floating_point()]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights (after each optimizer step)."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self._float[0], self._float[1], weight)
        for ema, live in self._other:
            ema.copy_(live)

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
