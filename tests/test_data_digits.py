"""The built-in digits scenes: determinism, exact negative ratio, label semantics, disjoint sources, cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from mlc.data import DatasetStats, DigitScenes
from mlc.data.digits import _split_sources
from mlc.errors import ConfigError

SIZES = dict(train_size=300, val_size=101, test_size=77)


def test_same_seed_same_data_and_other_seed_other_data():
    a = DigitScenes(seed=3, **SIZES).generate()
    b = DigitScenes(seed=3, **SIZES).generate()
    c = DigitScenes(seed=4, **SIZES).generate()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["train_images"], c["train_images"])


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_negative_ratio_met_exactly_in_every_split(ratio):
    source = DigitScenes(negative_ratio=ratio, **SIZES)
    for split, n in (("train", 300), ("val", 101), ("test", 77)):
        stats = source.load(split).stats()
        assert stats.num_samples == n
        assert stats.negative_count == round(ratio * n)


def test_labels_are_class_digits_and_negatives_have_none():
    source = DigitScenes(num_classes=4, negative_ratio=0.4, objects_per_scene=(0, 3), **SIZES)
    targets = source.arrays()["train_targets"]
    assert targets.shape == (300, 4) and set(np.unique(targets)) <= {0, 1}
    assert (targets.sum(1) == 0).sum() == 120
    assert (targets.sum(1) >= 1).sum() == 180  # every positive scene holds at least one class digit


def test_source_scans_are_split_disjointly():
    labels = load_digits().target
    pools = _split_sources(labels, seed=0)
    seen = [np.concatenate(list(pools[s].values())) for s in ("train", "val", "test")]
    assert sum(len(s) for s in seen) == len(labels)
    assert len(np.unique(np.concatenate(seen))) == len(labels)
    for split_pool in pools.values():
        for digit, idx in split_pool.items():
            assert (labels[idx] == digit).all() and len(idx) > 0


def test_class_imbalance_profile():
    imbalanced = DigitScenes(class_imbalance=1.0, negative_ratio=0.0, train_size=3000, val_size=10, test_size=10)
    counts = imbalanced.load("train").stats().class_counts
    assert counts[0] > 2 * counts[-1]
    flat = DigitScenes(class_imbalance=0.0, negative_ratio=0.0, train_size=3000, val_size=10, test_size=10)
    counts = flat.load("train").stats().class_counts
    assert max(counts) < 1.3 * min(counts)


def test_split_items_and_stats():
    ds = DigitScenes(**SIZES).load("val")
    item = ds[5]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["target"].shape == (6,) and item["index"] == 5
    assert -2.1 <= float(item["image"].min()) and float(item["image"].max()) <= 2.1  # (x - 0.5) / 0.25
    stats = ds.stats()
    assert isinstance(stats, DatasetStats) and stats.class_counts == ds.targets.sum(0).tolist()


def test_cache_is_reused_and_a_corrupt_cache_is_regenerated(tmp_path, monkeypatch, caplog):
    first = DigitScenes(cache_dir=str(tmp_path), **SIZES).arrays()
    files = list(tmp_path.glob("digits-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(DigitScenes, "generate", lambda self: (_ for _ in ()).throw(AssertionError("regenerated")))
    cached = DigitScenes(cache_dir=str(tmp_path), **SIZES).arrays()
    np.testing.assert_array_equal(first["val_images"], cached["val_images"])
    monkeypatch.undo()
    files[0].write_bytes(files[0].read_bytes()[:1000])  # a torn write
    with caplog.at_level(logging.WARNING):
        again = DigitScenes(cache_dir=str(tmp_path), **SIZES).arrays()
    assert "unreadable" in caplog.text
    np.testing.assert_array_equal(first["train_targets"], again["train_targets"])


def test_cache_key_changes_with_every_data_parameter():
    base = DigitScenes(**SIZES).cache_key
    assert DigitScenes(noise_std=0.2, **SIZES).cache_key != base
    assert DigitScenes(negative_ratio=0.7, **SIZES).cache_key != base
    assert DigitScenes(cache_dir="/elsewhere", **SIZES).cache_key == base


@pytest.mark.parametrize("kwargs,key", [
    (dict(negative_ratio=1.5), "negative_ratio"), (dict(num_classes=11), "num_classes"),
    (dict(digit_size=(12, 40)), "digit_size"), (dict(objects_per_scene=(3, 1)), "objects_per_scene"),
    (dict(train_size=0), "train_size"), (dict(noise_std=-1.0), "noise_std"),
])
def test_invalid_parameters_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        DigitScenes(**kwargs)
    assert err.value.key == key
