"""Epoch orders (``sampler/``): the class-aware re-sampling order, and that it plugs into the trainer's sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlc.config import build
from mlc.data.samplers import ClassAwareOrder
from mlc.engine.distributed import ShardSampler
from mlc.errors import ConfigError, DataError
from tests.conftest import compose

SIZES = [300, 60, 12, 3]  # a long tail: class k has SIZES[k] instances
NEGATIVES = 125


def single_label_targets(seed: int = 0) -> np.ndarray:
    """Each instance has exactly one class (or none), shuffled: a draw of class k yields instances of k only."""
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(SIZES)] + [np.full(NEGATIVES, -1)])
    labels = np.random.default_rng(seed).permutation(labels)
    targets = np.zeros((len(labels), len(SIZES)))
    targets[labels >= 0, labels[labels >= 0]] = 1
    return targets


def multi_label_targets(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((400, 5)) < np.array([0.5, 0.2, 0.05, 0.01, 0.0])).astype(np.float32)  # class 4 empty


def drawn_classes(order: torch.Tensor, targets: np.ndarray, per_class: int) -> np.ndarray:
    """The class of each draw for single-label targets (K = C for the negatives' pseudo-class)."""
    rows = targets[order.numpy()]
    labels = np.where(rows.any(axis=1), rows.argmax(axis=1), targets.shape[1])
    blocks = labels[: len(labels) // per_class * per_class].reshape(-1, per_class)
    assert (blocks == blocks[:, :1]).all(), "a draw mixes classes"
    return blocks[:, 0]


def test_same_seed_and_epoch_give_the_same_order_regardless_of_global_rng():
    targets = multi_label_targets()
    torch.manual_seed(1)
    np.random.seed(1)
    first = ClassAwareOrder(targets, seed=3).indices(2)
    torch.manual_seed(2)
    np.random.seed(2)
    again = ClassAwareOrder(targets, seed=3)
    assert torch.equal(again.indices(2), first) and torch.equal(again.indices(2), first)


def test_epochs_and_seeds_differ():
    order = ClassAwareOrder(multi_label_targets(), seed=0)
    assert not torch.equal(order.indices(0), order.indices(1))
    assert not torch.equal(order.indices(0), ClassAwareOrder(multi_label_targets(), seed=1).indices(0))


def test_epoch_length_follows_the_reference_formula_or_the_override():
    targets = single_label_targets()
    with_negatives = ClassAwareOrder(targets)  # K = 4 classes + the negatives' pseudo-class
    assert with_negatives.epoch_length == int(max(*SIZES, NEGATIVES) * 5 / 4) == 375
    assert len(with_negatives.indices(0)) == 375
    without = ClassAwareOrder(targets, negatives_as_class=False, reduce=2)
    assert without.epoch_length == len(without.indices(0)) == 300 * 4 // 2
    fixed = ClassAwareOrder(targets, epoch_length=1000, per_class=7)  # not a multiple of per_class
    assert len(fixed.indices(3)) == 1000
    empty_class = ClassAwareOrder(multi_label_targets(), negatives_as_class=False)  # class 4 has no instance
    assert len(empty_class.class_lists) == 4
    assert empty_class.epoch_length == int(multi_label_targets()[:, :4].sum(0).max() * 4 / 4)


@pytest.mark.parametrize("per_class", [1, 3])
def test_every_class_is_drawn_equally_often_unlike_the_input(per_class):
    targets = single_label_targets()
    order = ClassAwareOrder(targets, per_class=per_class, epoch_length=per_class * 5 * 120)
    draws = drawn_classes(order.indices(0), targets, per_class)
    counts = np.bincount(draws, minlength=5)
    np.testing.assert_array_equal(counts, [120] * 5)  # whole passes over the 5 class lists
    visited = targets[order.indices(0).numpy()].sum(axis=0)
    input_share, sampled_share = np.array(SIZES) / sum(SIZES), visited / visited.sum()
    assert input_share.max() / input_share.min() == 100 and sampled_share.max() / sampled_share.min() < 1.01


def test_classes_cycle_in_reshuffled_passes():
    targets = single_label_targets()
    draws = drawn_classes(ClassAwareOrder(targets, per_class=2, epoch_length=2 * 5 * 40).indices(0), targets, 2)
    passes = draws.reshape(-1, 5)
    assert all(sorted(p) == [0, 1, 2, 3, 4] for p in passes)  # every class once per pass
    assert len({tuple(p) for p in passes}) > 1  # in a fresh order each pass


def test_each_class_walks_its_own_reshuffled_list():
    targets = single_label_targets()
    order = ClassAwareOrder(targets, per_class=3, epoch_length=3 * 5 * 30).indices(0).numpy()
    rare = np.flatnonzero(targets[:, 3])  # 3 instances, drawn 30 times: 30 full passes over its list
    visits = [i for i in order if targets[i, 3]]
    passes = np.array(visits).reshape(-1, len(rare))
    assert all(sorted(p) == sorted(rare) for p in passes)  # without replacement within a pass
    assert len({tuple(p) for p in passes}) > 1
    medium = np.flatnonzero(targets[:, 1])  # 60 instances, 90 visits: one full pass, then a fresh one
    visits = [i for i in order if targets[i, 1]]
    assert sorted(visits[:60]) == sorted(medium) and len(set(visits[60:])) == 30


@pytest.mark.parametrize("negatives_as_class", [True, False])
def test_only_valid_indices_and_negatives_only_as_their_pseudo_class(negatives_as_class):
    targets = multi_label_targets()
    order = ClassAwareOrder(targets, negatives_as_class=negatives_as_class).indices(0)
    assert order.dtype == torch.int64 and order.min() >= 0 and order.max() < len(targets)
    negative_share = (targets[order.numpy()].sum(axis=1) == 0).mean()
    if negatives_as_class:
        assert 0.15 < negative_share < 0.25  # one of 5 lists (4 non-empty classes + negatives)
    else:
        assert negative_share == 0


def test_plugs_into_the_config_and_the_trainers_sharding_and_resume():
    cfg = compose(["sampler=class_aware"])
    targets = multi_label_targets()
    order = build(cfg.sampler, "sampler")(targets=targets, seed=5)
    assert isinstance(order, ClassAwareOrder) and order.per_class == 3
    shards = [ShardSampler(len(targets), r, 2, order=order, pad=True) for r in range(2)]
    for s in shards:
        s.set_epoch(4)
    full = order.indices(4).tolist()
    assert len(shards[0]) == len(shards[1]) and list(shards[0]) == full[0::2]
    shards[1].set_epoch(4, skip=10)
    assert list(shards[1]) == full[1::2][10:]


@pytest.mark.parametrize("kwargs,key", [
    (dict(per_class=0), "per_class"), (dict(per_class=2.5), "per_class"), (dict(reduce=0), "reduce"),
    (dict(reduce="4"), "reduce"), (dict(epoch_length=0), "epoch_length"), (dict(epoch_length=True), "epoch_length"),
    (dict(negatives_as_class="yes"), "negatives_as_class"),
])
def test_invalid_fields_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        ClassAwareOrder(multi_label_targets(), **kwargs)
    assert err.value.key == key


def test_nothing_to_draw_is_a_data_error():
    with pytest.raises(DataError):
        ClassAwareOrder(np.zeros((10, 3)), negatives_as_class=False)
