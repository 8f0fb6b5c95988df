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

from mlc.errors import DataError, require


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


class ClassAwareOrder(EpochOrder):
    """Class-aware re-sampling, RS (Shen et al. 2016; as in the DB loss reference, Wu et al. 2020).

    Draws cycle over the classes in a random order, reshuffled every pass; each draw takes the next
    ``per_class`` instances from that class's own list of instances, which is itself reshuffled each
    time it runs out. Every class is therefore drawn equally often, whatever its size: rare classes'
    instances repeat, common classes' instances are skipped. Classes without any instance are left
    out of the cycle.

    An instance with no class (a negative) belongs to no class list. With ``negatives_as_class`` (the
    default) the negatives form one more, pseudo-class list and are drawn as often as any class;
    without it they are never visited (the reference's datasets have no negatives).

    Epoch length (reference): ⌊max_k n_k · K / ``reduce``⌋ over the K class lists cycled (the
    pseudo-class counts as one), or ``epoch_length`` when set. The reference keeps its iterators
    running across epochs; here every epoch starts afresh from its (seed, epoch) generator, so a
    resumed run revisits the same indices.

    Args:
        targets: the training split's label matrix (N, C).
        seed: the training seed.
        per_class: consecutive instances taken per class draw, >= 1 (reference 3).
        reduce: divisor of the epoch length, > 0 (reference 4).
        epoch_length: indices per epoch, >= 1, overriding the formula; null = the formula.
        negatives_as_class: draw the negative instances as one more class (else never draw them).
    """

    def __init__(self, targets: np.ndarray, seed: int = 0, per_class: int = 3, reduce: float = 4,
                 epoch_length: int | None = None, negatives_as_class: bool = True):
        super().__init__(targets, seed)
        require(_is_count(per_class), "per_class", per_class, "must be an integer >= 1")
        require(isinstance(reduce, (int, float)) and not isinstance(reduce, bool) and 0 < reduce < float("inf"),
                "reduce", reduce, "must be a number > 0")
        require(epoch_length is None or _is_count(epoch_length), "epoch_length", epoch_length,
                "must be an integer >= 1, or null for max_k n_k · K / reduce")
        require(isinstance(negatives_as_class, bool), "negatives_as_class", negatives_as_class,
                "must be true or false")
        present = np.asarray(targets) > 0
        lists = [np.flatnonzero(column) for column in present.T]
        if negatives_as_class:
            lists.append(np.flatnonzero(~present.any(axis=1)))
        self.class_lists = [torch.from_numpy(members).long() for members in lists if len(members)]
        if not self.class_lists:
            raise DataError("class-aware sampling: the training split has no instance with a class to draw")
        self.per_class = per_class
        formula = int(max(len(members) for members in self.class_lists) * len(self.class_lists) / reduce)
        self.epoch_length = epoch_length if epoch_length is not None else max(1, formula)

    def indices(self, epoch: int) -> torch.Tensor:
        generator = self.generator(epoch)
        draws = -(-self.epoch_length // self.per_class)
        classes = _cycle(torch.arange(len(self.class_lists)), draws, generator)
        counts = torch.bincount(classes, minlength=len(self.class_lists)).tolist()
        streams = torch.cat([_cycle(members, n * self.per_class, generator)
                             for members, n in zip(self.class_lists, counts, strict=True)])
        # Class k's draws, in visiting order, take the consecutive rows of class k's stream.
        order = torch.empty_like(streams).view(draws, self.per_class)
        by_class = torch.from_numpy(np.argsort(classes.numpy(), kind="stable"))  # a radix sort: ~10× torch's
        order[by_class] = streams.view(draws, self.per_class)
        return order.view(-1)[: self.epoch_length]


def _cycle(items: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """The first ``n`` items of an endless walk through ``items``, reshuffled at every pass."""
    if n == 0:
        return items[:0]
    passes = -(-n // len(items))
    # One permutation per pass, in one call (float64 keys: ties, which argsort breaks by position, are rare).
    permutations = torch.rand(passes, len(items), generator=generator, dtype=torch.float64).argsort(dim=1)
    return items.index_select(0, permutations.view(-1)[:n])


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
