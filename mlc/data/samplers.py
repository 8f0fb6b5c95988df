"""Epoch orders: which training indices an epoch visits, and in which order (the ``sampler/`` group).

An order is a function of the epoch alone (seeded by (seed, epoch), never by the global RNG), so a
resumed run revisits exactly the same samples. The trainer's ``ShardSampler`` then splits the order
between DDP ranks. ``RandomOrder`` (default) is one permutation of the training set per epoch; a
re-sampling order (e.g. class-aware, the RS baseline) may repeat or skip samples and choose its own
epoch length.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


class EpochOrder(ABC):
    """Built from the training split's label matrix (N, K) and the training seed."""

    def __init__(self, targets: np.ndarray, seed: int = 0):
        self.num_samples = len(targets)
        self.seed = int(seed)

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    @abstractmethod
    def indices(self, epoch: int) -> torch.Tensor:
        """Dataset indices of one epoch, in visiting order (int64)."""


class RandomOrder(EpochOrder):
    """A fresh permutation of the whole training set every epoch."""

    def indices(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_samples, generator=self.generator(epoch))
