"""From a trained run to answers: ``mlc infer`` -> scores files -> ``mlc evaluate`` equals what the run logged.

One small real run (module fixture) is scored through the real CLI: on its test split (CSV and
Parquet), on new images listed in a CSV, and found by its MLflow run id, also after its run
directory has moved away (its logged checkpoint artifact is used).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SMALL, cli_env, mlflow_runs, run_cli, run_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache) -> dict:
    outputs = tmp_path_factory.mktemp("infer") / "outputs"
    outputs.mkdir()
    result = run_cli(["trainer.max_epochs=2", *SMALL], outputs, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = [p.parent.parent for p in outputs.glob("runs/*/*/checkpoints/best.pt")]
    return {"outputs": outputs, "run_dir": run_dir, "result": json.loads((run_dir / "result.json").read_text()),
            "cache": data_cache}


def mlc(args: list[str], outputs: Path, cache: Path | None = None) -> subprocess.CompletedProcess:
    """The ``mlc`` command (``python -m mlc.cli``, what the console script runs)."""
    return run_module("mlc.cli", args, cli_env(outputs), timeout=300)


def evaluated(path: Path, outputs: Path) -> dict:
    result = mlc(["evaluate", str(path), "--json"], outputs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_same_metrics(got: dict, logged: dict) -> None:
    compared = [k for k in logged if k != "loss"]  # a scores file has probabilities, not the loss's logits
    assert len(compared) >= 30 and all(k.startswith("tuned/") or k in got for k in compared)
    for key in compared:
        assert got[key] == pytest.approx(logged[key], abs=1e-6), key


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_infer_then_evaluate_reproduces_the_logged_test_metrics(trained, tmp_path, suffix):
    scores = tmp_path / f"test{suffix}"
    result = mlc(["infer", str(trained["run_dir"]), "--split", "test", "-o", str(scores),
                  f"dataset.cache_dir={trained['cache']}/digits"], trained["outputs"])
    assert result.returncode == 0, result.stderr
    assert f"wrote {scores} (128 instances x 6 classes, test" in result.stdout
    logged = trained["result"]["test"]
    assert {"tuned/f1_macro", "tuned/f2_macro", "cf1", "of1", "f1_weighted"} <= set(logged)
    assert any(k.startswith("map_") and k != "map_classes" for k in logged)  # a head/medium/tail group
    assert_same_metrics(evaluated(scores, trained["outputs"]), logged)


def test_the_trainers_own_scores_files_evaluate_to_the_logged_metrics(trained):
    run_dir = trained["run_dir"]
    assert_same_metrics(evaluated(run_dir / "scores" / "test.csv", trained["outputs"]), trained["result"]["test"])
    meta = json.loads((run_dir / "scores" / "test.csv.json").read_text())
    tuned = json.loads((run_dir / "thresholds.json").read_text())
    assert meta["thresholds"] == tuned["thresholds"] and tuned["thresholds_tuned_on"] == "val"
    assert len(tuned["thresholds"]) == 6 and meta["class_names"] == tuned["class_names"]
    # What the run logged to MLflow: its tags for the dashboard, the scores and thresholds as artifacts.
    from mlflow.tracking import MlflowClient

    (run,) = mlflow_runs(trained["outputs"])
    assert {k: run.data.tags[k] for k in ("mlc.kind", "mlc.loss", "mlc.backbone", "mlc.dataset",
                                          "mlc.negative_ratio", "mlc.seed", "mlc.lam")} == {
        "mlc.kind": "run", "mlc.loss": "any_bce", "mlc.backbone": "cnn_small", "mlc.dataset": "digits",
        "mlc.negative_ratio": "0.5", "mlc.seed": "0", "mlc.lam": "0.02"}
    client = MlflowClient(f"sqlite:///{trained['outputs']}/mlflow.db")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "scores")} == {
        "scores/test.csv", "scores/test.csv.json", "scores/val.csv", "scores/val.csv.json"}
    assert {"thresholds.json", "per_class_test.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    # Per-class AP and F1 with support, from the same scores (scikit-learn as the reference).
    from sklearn.metrics import average_precision_score, f1_score

    from mlc.scores import read_scores

    scores = read_scores(run_dir / "scores" / "test.csv")
    rows = json.loads((run_dir / "per_class_test.json").read_text())["classes"]
    assert [r["class"] for r in rows] == scores.class_names
    for k, row in enumerate(rows):
        assert row["support"] == int(scores.labels[:, k].sum())
        assert row["ap"] == pytest.approx(average_precision_score(scores.labels[:, k], scores.scores[:, k]))
        assert row["f1"] == pytest.approx(f1_score(scores.labels[:, k], scores.scores[:, k] >= 0.5, zero_division=0))
    table = mlc(["evaluate", str(run_dir / "scores" / "test.csv"), "--per-class"], trained["outputs"])
    assert table.returncode == 0 and table.stdout.count("\n") == 8 + 2 + 1 + 6, table.stdout
    assert run.data.metrics["test/tuned/f1_macro"] == pytest.approx(trained["result"]["test"]["tuned/f1_macro"])
    assert "val/tuned/f1_macro" in run.data.metrics
    # The training-probability curves: mean probability of positive and negative labels per class group.
    history = trained["result"]["history"]
    probs = {k for h in history for k in h if k.startswith("train_prob/")}
    groups = {k.rsplit("_", 1)[1] for k in probs}
    assert groups and probs == {f"train_prob/{side}_{g}" for g in groups for side in ("pos", "neg")}
    assert all(0 < h[k] < 1 for h in history for k in probs)
    assert len(client.get_metric_history(run.info.run_id, sorted(probs)[0])) == 2


def test_new_images_listed_in_a_csv_are_scored_with_and_without_labels(trained, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "plain.csv").write_text("path\n" + "".join(f"im{i}.png\n" for i in range(4)))
    (tmp_path / "labelled.csv").write_text("path,0,1,2,3,4,5\n" + "".join(
        f"im{i}.png,{i % 2},0,0,1,0,0\n" for i in range(4)))
    run = str(trained["run_dir"])
    result = mlc(["infer", run, "--data", str(tmp_path / "plain.csv"), "-o", str(tmp_path / "plain.out.csv")],
                 trained["outputs"])
    assert result.returncode == 0, result.stderr
    from mlc.scores import read_scores

    plain = read_scores(tmp_path / "plain.out.csv")
    assert plain.labels is None and plain.ids == [f"im{i}.png" for i in range(4)] and plain.scores.shape == (4, 6)
    refused = mlc(["evaluate", str(tmp_path / "plain.out.csv")], trained["outputs"])
    assert refused.returncode == 2 and "has no label columns" in refused.stderr
    result = mlc(["infer", run, "--data", str(tmp_path / "labelled.csv"), "-o", str(tmp_path / "l.csv")],
                 trained["outputs"])
    assert result.returncode == 0, result.stderr
    labelled = read_scores(tmp_path / "l.csv")
    assert labelled.labels[:, 3].tolist() == [1, 1, 1, 1] and np.array_equal(labelled.scores, plain.scores)
    assert "map" in evaluated(tmp_path / "l.csv", trained["outputs"])


def test_an_mlflow_run_id_is_scored_even_after_its_run_directory_moved(trained, tmp_path):
    (run,) = mlflow_runs(trained["outputs"])
    outputs, run_dir = trained["outputs"], trained["run_dir"]
    args = ["infer", run.info.run_id, "-o", str(tmp_path / "a.csv"), f"dataset.cache_dir={trained['cache']}/digits"]
    first = mlc(args, outputs)
    assert first.returncode == 0 and str(run_dir / "checkpoints" / "best.pt") in first.stdout, first.stderr
    moved = run_dir.with_name(run_dir.name + "-moved")
    shutil.move(run_dir, moved)
    try:
        second = mlc([*args[:3], str(tmp_path / "b.csv"), *args[4:]], outputs)
    finally:
        shutil.move(moved, run_dir)
    assert second.returncode == 0 and "checkpoints/best.pt" in second.stdout, second.stderr
    assert str(run_dir) not in second.stdout  # the logged artifact, not the (gone) run directory
    from mlc.scores import read_scores

    a, b = read_scores(tmp_path / "a.csv"), read_scores(tmp_path / "b.csv")
    assert np.array_equal(a.scores, b.scores) and b.meta["thresholds"] == a.meta["thresholds"]


def test_evaluate_scores_a_run_directory_on_a_split_with_its_loss(trained):
    result = mlc(["evaluate", str(trained["run_dir"]), "--split", "test", "--json"], trained["outputs"])
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["loss"] == pytest.approx(trained["result"]["test"]["loss"], abs=1e-6)
    assert_same_metrics(got, trained["result"]["test"])
    table = mlc(["evaluate", str(trained["run_dir"] / "scores" / "test.csv"), str(trained["run_dir"] / "scores" /
                                                                                   "val.csv")], trained["outputs"])
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:2] == ["f1_macro", "f2_macro"]
    assert len(table.stdout.splitlines()) == 11  # 3 blocks (header + 2 rows): summary, error rates, images
