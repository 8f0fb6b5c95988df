"""A multi-objective λ search for real (``hydra.sweeper.objectives``): trained trials valued by two validation
metrics at their best epoch, the Pareto front per ratio in the sweep summary and in ``mlc.report.lambda_study``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlc.report.lambda_study import main as lambda_study
from tests.conftest import SMALL, run_cli

pytestmark = pytest.mark.slow


def test_a_search_of_f1_and_f1_neg_gives_the_pareto_front_of_each_ratio(outputs, data_cache, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", "hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.n_trials=3",
                      "hydra.sweeper.sampler.n_startup_trials=3", "hydra.sweeper.objectives=[val/f1_macro,val/f1_neg]",
                      "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5,0.8]", "trainer.max_epochs=2", *SMALL,
                      f"hydra.sweep.dir={sweep_dir}"], outputs, data_cache, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Pareto front of val/f1_macro (maximize), val/f1_neg (maximize) per study" in result.stdout
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [s["complete"] for s in summary["studies"]] == [3, 3]
    for study in summary["studies"]:
        values = [t["values"] for t in study["trials"]]
        for trial in study["trials"]:  # each trial's values are its run's metrics at the epoch its monitor chose
            (run_dir,) = [p.parent for p in sweep_dir.glob("*/result.json")
                          if _lam_of(p.parent) == trial["params"]["loss.lam"]
                          and _ratio_of(p.parent) == study["fixed"]["dataset.negative_ratio"]]
            run = json.loads((run_dir / "result.json").read_text())
            best = next(r for r in run["history"] if r["epoch"] == run["best_epoch"])
            assert trial["values"] == [best["val/f1_macro"], best["val/f1_neg"]]
        dominated = [any(all(o >= x for o, x in zip(w, v, strict=True)) and w != v for w in values) for v in values]
        assert [t["pareto"] for t in study["trials"]] == [not d for d in dominated]

    out = tmp_path / "study"
    assert lambda_study(["--search", str(sweep_dir), "--output", str(out)]) == 0
    text = (out / "lambda_study.md").read_text()
    assert "| negative_ratio | trials | λ on the Pareto front | val/f1_macro | val/f1_neg |" in text
    rows = (out / "lambda_study.csv").read_text().splitlines()
    assert rows[0] == "negative_ratio,lambda,val/f1_macro,val/f1_neg,pareto" and len(rows) == 1 + 6
    on_front = sum(t["pareto"] for s in summary["studies"] for t in s["trials"])
    assert sum(r.endswith(",1") for r in rows[1:]) == on_front and on_front >= 2  # at least one per ratio


def _overrides(run_dir: Path) -> dict[str, str]:
    import yaml

    return dict(o.split("=", 1) for o in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
                if "=" in o and not o.startswith("+"))


def _lam_of(run_dir: Path) -> float:
    return float(_overrides(run_dir)["loss.lam"])


def _ratio_of(run_dir: Path) -> float:
    return float(_overrides(run_dir)["dataset.negative_ratio"])
