"""The λ-vs-negative-ratio sweep through Hydra's Optuna sweeper, on a SQLite Optuna storage."""

from __future__ import annotations

import json

import optuna
import pytest

from tests.conftest import SMALL, mlflow_runs, run_cli

pytestmark = pytest.mark.slow
SWEEP = ["hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=t",
         "hydra.sweeper.sampler.n_startup_trials=2", "trainer.max_epochs=1", *SMALL]


def test_three_trial_sweep_completes_and_is_summarised(outputs, data_cache):
    result = run_cli(["-m", *SWEEP, "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]"], outputs, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{outputs}/optuna.db"
    study = optuna.load_study(study_name="t[dataset.negative_ratio=0.5]", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(0.001 <= t.params["loss.lam"] <= 0.5 for t in trials)
    # The printed table and the summary file report the study's best trial.
    assert "best loss.lam" in result.stdout and f"{study.best_trial.params['loss.lam']:.4g}" in result.stdout
    (sweep_dir,) = outputs.glob("multirun/*/*")
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    (entry,) = summary["studies"]
    assert entry["best_value"] == study.best_value and entry["complete"] == 3
    # MLflow: one parent run, the three trials nested under it, each with its λ.
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    (parent,) = [r for r in runs if r.data.tags.get("mlc.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 3
    label = "best/dataset.negative_ratio_0.5"
    assert float(parent.data.params[f"{label}/loss.lam"]) == study.best_trial.params["loss.lam"]
    assert parent.data.metrics[f"{label}/value"] == study.best_value
    assert sorted(float(r.data.params["loss.lam"]) for r in children) == sorted(t.params["loss.lam"] for t in trials)
    assert all(r.data.params["dataset.negative_ratio"] == "0.5" for r in children)


def test_one_study_per_negative_ratio(outputs, data_cache):
    args = ["-m", *SWEEP, "hydra.sweeper.n_trials=1", "hydra.sweeper.study_grid.dataset.negative_ratio=[0.3,0.7]"]
    result = run_cli(args, outputs, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{outputs}/optuna.db"))
    assert names == ["t[dataset.negative_ratio=0.3]", "t[dataset.negative_ratio=0.7]"]
    children = [r for r in mlflow_runs(outputs, "lambda_vs_negative_ratio") if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.data.params["dataset.negative_ratio"] for r in children) == ["0.3", "0.7"]
    achieved = sorted(float(r.data.params["data.train.negative_ratio"]) for r in children)
    assert achieved == pytest.approx([77 / 256, 179 / 256], abs=1e-6)  # exact, as close as 256 scenes allow


@pytest.mark.parametrize("override,message", [
    ("hydra.sweeper.params.loss.lam='interval(-0.5,0.1)'",
     "error: loss.lam=-0.5: λ must be in [0, 1] (a value of hydra.sweeper.params.loss.lam)"),
    ("loss.lam=interval(0.01,1.5)", "error: loss.lam=1.5: λ must be in [0, 1] (a value of the command-line search"),
    ("hydra.sweeper.study_grid.dataset.negative_ratio=[0.5,1.5]",
     "error: dataset.negative_ratio=1.5: must be in [0, 1] (a value of hydra.sweeper.study_grid)"),
    ("hydra.sweeper.direction=minimize", "error: hydra.sweeper.direction='minimize': disagrees with"),
])
def test_bad_search_space_fails_before_any_trial(override, message, outputs, data_cache):
    result = run_cli(["-m", *SWEEP, override], outputs, data_cache)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message), result.stderr
    assert not list(outputs.glob("multirun/*/*/0"))  # no trial ran
    assert not (outputs / "mlflow.db").exists() and not (outputs / "optuna.db").exists()  # nor a run or study
