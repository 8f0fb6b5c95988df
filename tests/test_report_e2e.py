"""``mlc report`` on a small real multirun: a table with mean ± std over seeds and the λ-vs-ratio figure.

The unit tests of the report (tests/test_report.py) log synthetic runs; this one trains real runs
through the CLI, so the tags, metrics, histories and scores artifacts the report reads are the ones
the trainer really writes.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs, run_cli

pytestmark = pytest.mark.slow


def test_a_real_multirun_becomes_a_table_over_seeds_and_figures(outputs, data_cache, tmp_path):
    sweep = ["-m", "loss=any_bce", "loss.lam=0.01,0.2", "dataset.negative_ratio=0.8", "seed=0,1",
             "trainer.max_epochs=1", *SMALL]
    result = run_cli(sweep, outputs, data_cache, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [r for r in mlflow_runs(outputs) if r.data.tags.get("mlc.kind") == "run"]
    assert len(runs) == 4
    report_dir = tmp_path / "report"
    cmd = [sys.executable, "-m", "mlc.cli", "report", "--group-by", "lam,negative_ratio", "--baseline", "0.01",
           "--output", str(report_dir)]
    made = subprocess.run(cmd, cwd=ROOT, env=cli_env(outputs), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    # The table: one row per (λ, ratio), mean ± std over the two seeds, equal to the logged values; the λ figure
    # needs two λ at one ratio.
    with open(report_dir / "table.csv", newline="") as fh:
        rows = {(r["lam"], r["negative_ratio"]): r for r in csv.DictReader(fh)}
    assert len(rows) == 2 and all(r["n"] == "2" for r in rows.values())
    for (lam, ratio), row in rows.items():
        values = [r.data.metrics["test/f1_macro"] for r in runs
                  if r.data.tags["mlc.lam"] == lam and r.data.tags["mlc.negative_ratio"] == ratio]
        assert float(row["test/f1_macro_mean"]) == pytest.approx(np.mean(values), abs=1e-9)
        assert float(row["test/f1_macro_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-9)
    table = (report_dir / "table.md").read_text()
    assert " ± " in table and "**" in table
    # Paired per-seed differences to λ = 0.01 at the same ratio, with a verdict, never a bare "win".
    differences = (report_dir / "differences.md").read_text()
    assert "0.2" in differences and any(v in differences for v in ("better", "worse", "no difference"))
    figures = {"lambda_vs_ratio.png", "learning_curves.png", "probabilities.png", "pr_curves.png",
               "per_class_ap.png"}
    assert figures <= {p.name for p in report_dir.iterdir()}
    import matplotlib.image

    for name in figures:
        assert matplotlib.image.imread(report_dir / name).ndim == 3
    # The report is itself a run in MLflow, with its files as artifacts.
    (report_run,) = [r for r in mlflow_runs(outputs) if r.data.tags.get("mlc.kind") == "report"]
    assert report_run.info.run_id in made.stdout
