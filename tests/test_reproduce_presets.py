"""Every ``mlc reproduce`` preset, run end to end in its tiny form (1 epoch, small data, the first and last
value of each grid list): the sweep, ``mlc report`` and RESULTS.md, so that no preset can rot. The
lambda_ablation one also checks the report's numbers against the values the real runs logged (the
report's unit tests in tests/test_report.py use synthetic runs)."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from mlc.cli.reproduce import presets, run
from tests.conftest import mlflow_runs

pytestmark = pytest.mark.slow


def groups_in(results: str) -> list[str]:
    """The first column of the results table (the groups), in order."""
    table = results.split("## Results", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    return [row.split("|")[1].strip() for row in table.splitlines()[2:]]


# single_positive_table's tiny form runs in tests/test_reproduce_adaptive.py (with --until-decided), not again here
@pytest.mark.parametrize("name", ["anyclass_table", "lambda_ablation"])
def test_the_tiny_form_of_each_preset_runs_and_is_reported(name, tmp_path, data_cache):
    check_tiny_preset(name, tmp_path, data_cache)


def check_tiny_preset(name, tmp_path, cache=None):
    """``cache``: the session's digits cache (``paths.cache``, in no study's name), so that data of the same
    configuration is generated once per session rather than once per preset."""
    overrides = [f"paths.cache={cache}"] if cache else []
    results = run(name, overrides, tiny=True, output=tmp_path / "exp", outputs=tmp_path / "out",
                  say=lambda *a, **k: None)
    text = results.read_text()
    assert f"mlc reproduce {name} --tiny" in text and "git commit" in text
    groups = groups_in(text)
    expected = {"anyclass_table": 4, "lambda_ablation": 4, "longtail_table": 3, "single_positive_table": 2}[name]
    assert len(groups) == expected, groups
    assert re.search(r"\| 2 \| ", text)  # two seeds per group
    baseline = presets()[name].baseline
    assert "Paired per-seed differences" in text
    assert f"={baseline}`" in text if ":" not in baseline else "`any_focal` → `cb_focal`" in text
    if name == "lambda_ablation":
        assert "Best λ per negative ratio" in text and "lambda_vs_ratio.png" in text
        check_report_numbers_are_the_logged_ones(tmp_path / "out", tmp_path / "exp" / "report", name)
    if name == "longtail_table":
        assert "db_focal" in groups  # the second phase (class-aware sampling) is in the same report
        samplers = {(r.data.tags["mlc.loss"], r.data.params["sampler._target_"].rsplit(".", 1)[-1])
                    for r in mlflow_runs(tmp_path / "out", name) if r.data.tags.get("mlc.kind") == "run"}
        assert samplers == {("bce", "RandomOrder"), ("pg", "RandomOrder"), ("db_focal", "ClassAwareOrder")}


def check_report_numbers_are_the_logged_ones(outputs, report_dir, experiment):
    """The report of real runs: each (λ, ratio) row's mean ± std is numpy's over the seeds' logged test F1,
    every figure is a readable image (PR and per-class AP from the runs' real scores artifacts), and the
    report is itself an MLflow run."""
    runs = [r for r in mlflow_runs(outputs, experiment) if r.data.tags.get("mlc.kind") == "run"]
    with open(report_dir / "table.csv", newline="") as fh:
        rows = {(r["lam"], r["negative_ratio"]): r for r in csv.DictReader(fh)}
    assert len(rows) == 4 and all(r["n"] == "2" for r in rows.values())
    for (lam, ratio), row in rows.items():
        values = [r.data.metrics["test/f1_macro"] for r in runs
                  if r.data.tags["mlc.lam"] == lam and r.data.tags["mlc.negative_ratio"] == ratio]
        assert len(values) == 2
        assert float(row["test/f1_macro_mean"]) == pytest.approx(np.mean(values), abs=1e-9)
        assert float(row["test/f1_macro_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-9)
    import matplotlib.image

    figures = {"lambda_vs_ratio.png", "learning_curves.png", "probabilities.png", "pr_curves.png", "per_class_ap.png"}
    assert figures <= {p.name for p in report_dir.iterdir()}
    for figure in figures:
        assert matplotlib.image.imread(report_dir / figure).ndim == 3
    assert [r for r in mlflow_runs(outputs, experiment) if r.data.tags.get("mlc.kind") == "report"]
