"""Dataset lineage (``mlc.data.lineage``): the digest, name and profile each run logs as its MLflow dataset inputs.
The inputs of a real run are checked in tests/test_train_e2e.py."""

from __future__ import annotations

import json

from mlc.data.digits import DigitScenes
from mlc.data.lineage import dataset_inputs, dataset_name, split_digest

SIZES = {"train_size": 120, "val_size": 40, "test_size": 40}


def test_the_digest_is_the_splits_items_and_labels_and_nothing_else():
    same = [DigitScenes(seed=3, **SIZES).load("train") for _ in range(2)]
    assert split_digest(same[0]) == split_digest(same[1])  # the same split, built twice
    other_seed = DigitScenes(seed=4, **SIZES).load("train")
    other_ratio = DigitScenes(seed=3, negative_ratio=0.8, **SIZES).load("train")
    digests = {split_digest(d) for d in (same[0], other_seed, other_ratio)}
    assert len(digests) == 3  # another data seed or negative ratio: another digest
    relabelled = DigitScenes(seed=3, **SIZES).load("train")
    relabelled.targets[0, 0] ^= 1
    assert split_digest(relabelled) != split_digest(same[0])  # one label changed: another digest


def test_the_name_says_the_dataset_and_its_controls_and_the_profile_its_counts():
    assert dataset_name("digits", {"negative_ratio": 0.8}) == "digits neg=0.8"
    assert dataset_name("coco_modified", {"negative_ratio": None, "longtail": True, "single_positive": True}) == \
        "coco_modified longtail single_positive"
    source = DigitScenes(seed=3, negative_ratio=0.5, **SIZES)
    datasets = {s: source.load(s) for s in ("train", "val", "test")}
    inputs = dataset_inputs("digits neg=0.5", datasets, {s: d.stats() for s, d in datasets.items()})
    assert [(name, split) for name, _, _, split in inputs] == [("digits neg=0.5", s) for s in ("train", "val", "test")]
    profile = json.loads(inputs[0][2])
    stats = datasets["train"].stats()
    assert profile == {"instances": 120, "negatives": stats.negative_count, "negative_ratio": 0.5,
                       "class_counts": dict(zip(stats.class_names, stats.class_counts, strict=True))}
