"""The dataset controls on the built-in digits scenes: single positive and long tail on the training split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlc.cli.data import main as data_main
from mlc.config import build
from mlc.data import DigitScenes
from mlc.data.controls import Controls, pareto_profile, single_positive
from mlc.errors import ConfigError
from tests.conftest import SMALL, compose, run_cli

SIZES = dict(train_size=600, val_size=61, test_size=47)


@pytest.fixture(scope="module")
def cache(data_cache):
    return str(data_cache / "controls")


@pytest.fixture(scope="module")
def plain(cache):
    """The scenes without controls: what every controlled split is compared with."""
    source = DigitScenes(cache_dir=cache, **SIZES)
    return source, {split: source.load(split) for split in ("train", "val", "test")}


def test_single_positive_keeps_every_positive_scene_with_one_true_observed_positive(cache, plain):
    base, splits = plain
    source = DigitScenes(cache_dir=cache, single_positive=True, **SIZES)
    assert source.cache_key == base.cache_key  # the controls pick rows after generation: same cached scenes
    train = source.load("train")
    generated = splits["train"].targets
    assert np.array_equal(train.rows, np.flatnonzero(generated.sum(1) > 0))  # every negative scene dropped
    assert len(train) == 600 - round(0.5 * 600)
    assert (train.targets.sum(1) == 1).all() and set(np.unique(train.targets)) == {0, 1}
    assert (train.clean_targets[train.targets == 1] == 1).all()  # the observed positive is a true one
    assert np.array_equal(train.clean_targets, generated[train.rows])
    assert torch.equal(train.images, splits["train"].images[torch.from_numpy(train.rows)])
    _, observed = single_positive(generated, seed=1200)  # the controls' own draw, reused as is
    assert np.array_equal(train.targets, observed)
    stats = train.stats()
    assert stats.negative_count == 0 and stats.num_samples == 300 and stats.label_cardinality == 1.0
    assert sum(stats.class_counts) == 300
    for split in ("val", "test"):  # untouched: same scenes, same clean labels
        ds = source.load(split)
        assert np.array_equal(ds.targets, splits[split].targets) and np.array_equal(ds.clean_targets, ds.targets)
        assert torch.equal(ds.images, splits[split].images) and len(ds.rows) == len(ds)


def test_single_positive_is_deterministic_per_seed(cache, plain):
    a = DigitScenes(cache_dir=cache, single_positive=True, **SIZES).load("train")
    b = DigitScenes(cache_dir=cache, single_positive=True, **SIZES).load("train")
    c = DigitScenes(cache_dir=cache, single_positive=True, single_positive_seed=7, **SIZES).load("train")
    assert np.array_equal(a.targets, b.targets) and np.array_equal(a.rows, b.rows)
    assert np.array_equal(a.rows, c.rows) and np.array_equal(a.clean_targets, c.clean_targets)
    assert not np.array_equal(a.targets, c.targets)
    multi = a.clean_targets.sum(1) > 1
    assert multi.sum() > 20 and not np.array_equal(a.targets[multi], c.targets[multi])


def test_longtail_meets_the_profile_on_single_label_scenes_and_keeps_every_negative(cache):
    kwargs = dict(cache_dir=cache, class_object_prob=0.0, longtail_max=80, **SIZES)  # one class digit per scene
    generated = DigitScenes(**kwargs).load("train").targets
    source = DigitScenes(longtail=True, **kwargs)
    train = source.load("train")
    profile = pareto_profile(6, max_per_class=80)
    assert profile.tolist() == [80, 19, 6, 2, 1, 1]
    assert sorted(train.targets.sum(0).tolist(), reverse=True) == profile.tolist()
    negatives = np.flatnonzero(generated.sum(1) == 0)
    assert np.array_equal(np.intersect1d(train.rows, negatives), negatives)  # all 300 negatives kept
    assert len(train) == 300 + profile.sum() and train.stats().negative_count == 300
    assert np.array_equal(train.targets, train.clean_targets) and np.array_equal(train.targets, generated[train.rows])
    again = DigitScenes(longtail=True, **kwargs).load("train")
    assert np.array_equal(train.rows, again.rows)
    for split in ("val", "test"):
        assert len(source.load(split)) == SIZES[f"{split}_size"]


def test_longtail_on_multi_label_scenes_is_the_controls_draw_and_combines_with_single_positive(cache, plain):
    base, splits = plain
    generated = splits["train"].targets
    train = DigitScenes(cache_dir=cache, longtail=True, longtail_max=80, **SIZES).load("train")
    expected = Controls(longtail=True, longtail_max=80, seed=0).apply(generated, "train")
    assert np.array_equal(train.rows, expected.indices)
    reached = np.sort(train.targets.sum(0))[::-1]
    profile = pareto_profile(6, max_per_class=80)
    assert (np.abs(reached - profile) <= 0.25 * profile + 2).all(), reached  # co-occurrence moves it a little
    assert train.stats().negative_count == (generated.sum(1) == 0).sum()
    both = DigitScenes(cache_dir=cache, longtail=True, longtail_max=80, single_positive=True, **SIZES).load("train")
    assert np.array_equal(both.rows, np.setdiff1d(train.rows, np.flatnonzero(generated.sum(1) == 0)))
    assert (both.targets.sum(1) == 1).all() and (both.clean_targets[both.targets == 1] == 1).all()


def test_a_profile_the_scenes_cannot_serve_is_an_error_naming_longtail_max(cache):
    source = DigitScenes(cache_dir=cache, longtail=True, **SIZES)  # head target 800 > 600 scenes
    with pytest.raises(ConfigError) as err:
        source.load("train")
    assert err.value.key == "dataset.longtail_max" and "lower longtail_max or raise train_size" in err.value.reason
    assert "\n" not in str(err.value)
    assert len(source.load("val")) == 61  # evaluation splits never see the profile


@pytest.mark.parametrize("kwargs,key", [
    (dict(longtail="yes"), "longtail"), (dict(longtail_alpha=0), "longtail_alpha"),
    (dict(longtail_max=0), "longtail_max"), (dict(longtail_min=-1), "longtail_min"),
    (dict(longtail_min=10, longtail_max=5), "longtail_max"), (dict(longtail_tail=1.0), "longtail_tail"),
    (dict(single_positive=1), "single_positive"), (dict(single_positive_seed=1.5), "single_positive_seed"),
    (dict(single_positive=True, negative_ratio=1.0), "negative_ratio"),
    (dict(single_positive=True, negative_ratio=0.999, train_size=300), "negative_ratio"),  # round(299.7) = 300
])
def test_invalid_control_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        DigitScenes(**kwargs)
    assert err.value.key == key and "\n" not in str(err.value)


def test_config_fields_name_their_dataset_key_when_the_source_is_built():
    def built(*overrides: str) -> DigitScenes:
        return build(compose(list(overrides)).dataset, "dataset")  # what check_config does before any compute

    with pytest.raises(ConfigError) as err:
        built("dataset.longtail_tail=2")
    assert err.value.key == "dataset.longtail_tail"
    with pytest.raises(ConfigError) as err:
        built("dataset.single_positive=true", "dataset.negative_ratio=1.0")
    assert err.value.key == "dataset.negative_ratio" and "single_positive" in err.value.reason
    source = built("dataset.single_positive=true", "dataset.longtail=true")
    assert source.controls.single_positive and source.controls.longtail
    assert source.controls.longtail_profile == dict(alpha=6.0, max_per_class=800, min_per_class=1, tail=0.99)
    assert source.controls.single_positive_seed == 1200 and source.controls.negative_ratio is None


def test_data_command_reports_the_controlled_training_split(data_cache, capsys):
    code = data_main(["--json", "dataset.single_positive=true", *SMALL, f"paths.cache={data_cache}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    splits = json.loads(out.out)["splits"]
    assert splits["train"]["num_samples"] == 128 and splits["train"]["negative_count"] == 0
    assert splits["train"]["label_cardinality"] == 1.0
    assert splits["val"]["num_samples"] == 128 and splits["val"]["negative_ratio"] == 0.5


@pytest.mark.slow
def test_single_positive_training_run_on_digits(outputs, data_cache):
    args = ["loss=an", "dataset.single_positive=true", "trainer.max_epochs=1", "tracking=none", *SMALL]
    result = run_cli(args, outputs, data_cache)
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "train: the dataset controls kept 128 of 256 scenes (negative ratio 0.0000" in log
    assert "an | mlc_cnn_small | digits | train 128 (0% negative) val 128 test 128" in log
    (summary,) = outputs.glob("runs/*/*/result.json")
    assert json.loads(summary.read_text())["best_epoch"] == 1
