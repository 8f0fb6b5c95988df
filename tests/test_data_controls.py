"""The dataset controls as pure functions of a label matrix: exact negative ratio, long-tail, single positive."""

from __future__ import annotations

import numpy as np
import pytest

from mlc.data.controls import Controls, longtail_indices, negative_ratio_indices, pareto_profile, single_positive
from mlc.errors import ConfigError


def labels(n: int = 500, k: int = 6, negative: float = 0.4, seed: int = 0) -> np.ndarray:
    """A random multi-label matrix with about ``negative`` of its rows empty."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < rng.uniform(0.05, 0.5, size=k)).astype(np.uint8)
    y[rng.random(n) < negative] = 0
    y[(y.sum(1) == 0) & (rng.random(n) > negative)] = np.eye(k, dtype=np.uint8)[0]  # top up positives
    return y


def negatives(y: np.ndarray) -> int:
    return int((y.sum(1) == 0).sum())


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.25, 1 / 3, 0.5, 0.8, 0.97, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_negative_ratio_is_met_exactly_by_subsampling_as_many_images_as_possible(ratio, seed):
    y = labels(seed=seed)
    keep = negative_ratio_indices(y, ratio, np.random.default_rng(seed))
    n = len(keep)
    assert len(np.unique(keep)) == n and np.all(np.diff(keep) > 0)  # a subset: nothing duplicated
    assert negatives(y[keep]) == round(ratio * n)
    n_neg, n_pos = negatives(y), len(y) - negatives(y)
    bigger = [m for m in range(n + 1, len(y) + 1) if round(ratio * m) <= n_neg and m - round(ratio * m) <= n_pos]
    assert not bigger, f"{bigger[0]} images could have been kept"


def test_negative_ratio_draws_are_deterministic_by_seed_and_differ_across_seeds():
    y = labels()
    a = negative_ratio_indices(y, 0.5, np.random.default_rng(3))
    assert np.array_equal(a, negative_ratio_indices(y, 0.5, np.random.default_rng(3)))
    assert not np.array_equal(a, negative_ratio_indices(y, 0.5, np.random.default_rng(4)))
    kept = {seed: Controls(negative_ratio=0.5, seed=seed).apply(y, "train").indices for seed in (7, 8)}
    assert np.array_equal(kept[7], Controls(negative_ratio=0.5, seed=7).apply(y, "train").indices)
    assert not np.array_equal(kept[7], kept[8])


def test_unreachable_ratios_are_clear_errors():
    only_positive = np.ones((10, 3), dtype=np.uint8)
    with pytest.raises(ConfigError) as err:
        Controls(negative_ratio=0.5).apply(only_positive, "val")
    assert err.value.key == "negative_ratio" and "0 negative and 10 positive" in err.value.reason
    assert "split 'val'" in err.value.reason
    with pytest.raises(ConfigError, match="no negative image"):
        negative_ratio_indices(only_positive, 1.0, np.random.default_rng(0))
    assert len(negative_ratio_indices(only_positive, 0.0, np.random.default_rng(0))) == 10
    one_negative = np.vstack([only_positive, np.zeros((1, 3), dtype=np.uint8)])
    with pytest.raises(ConfigError, match="without dropping every image of one kind"):
        negative_ratio_indices(one_negative, 0.01, np.random.default_rng(0))  # round(0.01 n) = 0 negatives


@pytest.mark.parametrize("scope,changed", [("all", {"train", "val", "test"}), ("train", {"train"}),
                                           ("eval", {"val", "test"})])
def test_negative_ratio_scope_picks_the_splits(scope, changed):
    y = labels()
    controls = Controls(negative_ratio=0.2, negative_ratio_scope=scope)
    for split in ("train", "val", "test"):
        result = controls.apply(y, split)
        if split in changed:
            assert negatives(result.targets) == round(0.2 * len(result.indices)) and len(result.indices) < len(y)
        else:
            assert np.array_equal(result.indices, np.arange(len(y))) and np.array_equal(result.targets, y)


def test_pareto_profile_matches_the_voc_lt_and_coco_lt_ranges():
    voc = pareto_profile(20, alpha=6, max_per_class=800, min_per_class=1, tail=0.99)
    coco = pareto_profile(80, alpha=6, max_per_class=1200, min_per_class=1, tail=0.99)
    for profile, top, bottom in ((voc, 800, 4), (coco, 1200, 6)):  # DB-loss paper: VOC-LT min 4, COCO-LT min 6
        assert profile[0] == top and profile[-1] == bottom and np.all(np.diff(profile) <= 0)
    x = np.linspace(1, 100 ** (1 / 6), 20)  # Pareto quantiles 0 .. 0.99: (1 - q)^(-1/alpha)
    assert np.array_equal(voc, np.floor(799 * 6 * x ** -7 / 6 + 1).astype(int))


def test_longtail_meets_the_profile_exactly_on_single_label_data():
    rng = np.random.default_rng(0)
    k = 8
    y = np.eye(k, dtype=np.uint8)[rng.integers(0, k, size=4000)]
    y[rng.random(4000) < 0.2] = 0  # negatives are never selected by the long-tail step
    profile = pareto_profile(k, max_per_class=300, min_per_class=2)
    keep = longtail_indices(y, profile, np.random.default_rng(1))
    counts = y[keep].sum(0)
    assert negatives(y[keep]) == 0 and sorted(counts.tolist(), reverse=True) == profile.tolist()


def test_longtail_on_multilabel_data_gives_head_medium_and_tail_classes():
    rng = np.random.default_rng(0)
    k = 20
    y = (rng.random((6000, k)) < 0.08).astype(np.uint8)
    result = Controls(longtail=True, longtail_max=400, seed=3).apply(y, "train")
    counts = np.sort(result.targets.sum(0))[::-1]
    assert counts[0] > 100 and counts[-1] < 20 and ((counts >= 20) & (counts <= 100)).any()
    assert negatives(result.targets) == negatives(y)  # negatives are left to negative_ratio
    assert np.array_equal(result.indices, Controls(longtail=True, longtail_max=400, seed=3).apply(y, "train").indices)
    assert len(Controls(longtail=True).apply(y, "val").indices) == len(y)  # training split only


def observe_uniform_reference(y: np.ndarray, seed: int = 1200) -> np.ndarray:
    """Cole et al.'s observe_uniform with num_pos=1, num_neg=0, rewritten from its description:
    -1/+1 labels, per row shuffle the positive indices (keep the first), then the negative ones."""
    signed = np.where(y == 1, 1, -1)
    rng = np.random.RandomState(seed)
    observed = np.zeros_like(signed)
    for i in range(len(signed)):
        pos = np.nonzero(signed[i] == 1)[0]
        rng.shuffle(pos)
        observed[i, pos[:1]] = 1
        neg = np.nonzero(signed[i] == -1)[0]
        rng.shuffle(neg)
    return observed


def test_single_positive_keeps_one_true_positive_per_image_and_drops_the_rest():
    y = labels(n=300, negative=0.3)
    kept, observed = single_positive(y)
    assert np.array_equal(kept, np.flatnonzero(y.sum(1) > 0))  # images without a positive are dropped
    assert np.all(observed.sum(1) == 1)  # exactly one observed positive ...
    assert np.all(y[kept][observed == 1] == 1)  # ... and it is a true positive
    assert np.array_equal(observed, observe_uniform_reference(y)[kept])
    again_kept, again = single_positive(y)
    assert np.array_equal(again, observed) and np.array_equal(again_kept, kept)
    assert not np.array_equal(single_positive(y, seed=1)[1], observed)


def test_single_positive_applies_to_train_only_and_keeps_the_clean_labels():
    y = labels(n=300)
    controls = Controls(single_positive=True)
    train = controls.apply(y, "train")
    assert np.array_equal(train.clean_targets, y[train.indices]) and train.targets.sum() == len(train.indices)
    for split in ("val", "test"):
        result = controls.apply(y, split)
        assert np.array_equal(result.targets, y) and np.array_equal(result.clean_targets, y)


def test_single_positive_with_a_training_negative_ratio_is_refused():
    with pytest.raises(ConfigError) as err:
        Controls(single_positive=True, negative_ratio=0.5)
    assert err.value.key == "negative_ratio" and "negative_ratio_scope=eval" in err.value.reason
    result = Controls(single_positive=True, negative_ratio=0.5, negative_ratio_scope="eval").apply(labels(), "val")
    assert negatives(result.targets) == round(0.5 * len(result.indices))


@pytest.mark.parametrize("kwargs,key", [
    (dict(negative_ratio=1.5), "negative_ratio"), (dict(negative_ratio_scope="val"), "negative_ratio_scope"),
    (dict(longtail_alpha=0), "longtail_alpha"), (dict(longtail_max=0), "longtail_max"),
    (dict(longtail_tail=1.0), "longtail_tail"), (dict(single_positive="yes"), "single_positive"),
])
def test_invalid_control_fields_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        Controls(**kwargs)
    assert err.value.key == key
