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


def _log_the_same_split(store: str, artifacts: str, barrier, errors) -> None:
    """One process of the race below: its own run, then the shared split's dataset at the barrier."""
    from mlc.tracking import MLflowTracker, TrackingSettings

    try:
        tracker = MLflowTracker(TrackingSettings(tracking_uri=store, artifact_root=artifacts, system_metrics=False))
        tracker.start(run_name="racer")
        barrier.wait(timeout=60)
        tracker.log_datasets([("digits neg=0.5", "0123456789abcdef", '{"instances": 10}', "val")])
        tracker.end("FINISHED")
    except Exception as err:  # reported to the test, which names it
        errors.put(f"{type(err).__name__}: {err}")


def test_runs_logging_the_same_split_at_once_all_get_it(tmp_path):
    """Two sweep workers with the same data seed log the same val/test split at the same moment: MLflow
    finds-or-creates the dataset in one transaction, and the later one hit the store's unique key (seen in
    a recording: the trial failed). Each process's run must end with the dataset, stored once."""
    import multiprocessing

    from mlflow.tracking import MlflowClient

    from mlc.tracking import MLflowTracker, TrackingSettings

    store, artifacts = f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "mlartifacts")
    first = MLflowTracker(TrackingSettings(tracking_uri=store, artifact_root=artifacts, system_metrics=False))
    first.start(run_name="schema")  # the store's tables exist before the race
    first.end("FINISHED")
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, errors = ctx.Barrier(n), ctx.Queue()
    racers = [ctx.Process(target=_log_the_same_split, args=(store, artifacts, barrier, errors)) for _ in range(n)]
    for p in racers:
        p.start()
    for p in racers:
        p.join(timeout=120)
    failed = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert not failed, failed
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("mlc")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "racer"]
    assert len(runs) == n and all(len(r.inputs.dataset_inputs) == 1 for r in runs)
    assert {r.inputs.dataset_inputs[0].dataset.digest for r in runs} == {"0123456789abcdef"}
