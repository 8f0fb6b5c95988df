"""The λ-vs-negative-ratio sweep through Hydra's Optuna sweeper, on a SQLite Optuna storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from mlc.cli.studies import main as studies_main
from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs, run_cli

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
    assert all(max(t.intermediate_values.values()) == t.value for t in trials)  # each epoch reported to Optuna
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
    # The parent's own chart: each trial's value and the best so far, step = trial number.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    values = client.get_metric_history(parent.info.run_id, "trial/dataset.negative_ratio_0.5/value")
    assert sorted((m.step, m.value) for m in values) == [(t.number, t.value) for t in trials]
    best = client.get_metric_history(parent.info.run_id, "trial/dataset.negative_ratio_0.5/best")
    assert max(best, key=lambda m: m.step).value == study.best_value
    assert all(r.data.params["dataset.negative_ratio"] == "0.5" for r in children)
    # The storage alone rebuilds the answer, with every trial on request.
    listed = run_cli([storage, "--trials"], outputs, None, module="mlc.cli.studies")
    assert listed.returncode == 0 and "t[dataset.negative_ratio=0.5]: ok, best" in listed.stdout, listed.stderr
    assert f"| 0 | COMPLETE | {trials[0].params['loss.lam']:.4g} | {trials[0].value:.4g} |" in listed.stdout


# -- sweeps that survive ---------------------------------------------------------------------------------------------

SURVIVE = ["hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.sampler.n_startup_trials=2", *SMALL]


def _study(outputs, point: str = "dataset.negative_ratio=0.5") -> optuna.Study:
    """The study of one grid point, under the default name <preset>@<config hash>[<point>]."""
    storage = f"sqlite:///{outputs}/optuna.db"
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)
               if s.study_name.startswith("lambda_vs_negative_ratio@") and s.study_name.endswith(f"[{point}]")]
    return optuna.load_study(study_name=name, storage=storage)


def _start(args: list[str], outputs, data_cache) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlc.cli.train", "-m", *args, f"paths.cache={data_cache}"], cwd=ROOT,
                            env=cli_env(outputs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _run_until(proc: subprocess.Popen, marker: str) -> list[str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} never appeared:\n{''.join(seen)[-3000:]}\n{proc.stderr.read()[-3000:]}")


def test_ctrl_c_stops_the_sweep_and_rerunning_continues_it_without_repeating(outputs, data_cache):
    args = [*SURVIVE, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5,0.8]"]
    # 1. Ctrl-C (a real SIGINT) in the middle of the second trial of the first study.
    proc = _start(args, outputs, data_cache)
    _run_until(proc, "trial #1 (job 1)")
    _run_until(proc, "epoch 2 step 3/")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("error: sweep interrupted (SIGINT) at epoch 2")
    first = _study(outputs)
    states = [(t.number, t.state, t.user_attrs.get("mlc.interrupted")) for t in first.get_trials()]
    assert states == [(0, optuna.trial.TrialState.COMPLETE, None), (1, optuna.trial.TrialState.FAIL, True)]
    assert "0/2" in stdout and "interrupted" in stdout  # the summary was written; the second study never started
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    (parent,) = [r for r in runs if r.data.tags.get("mlc.kind") == "sweep"]
    killed = [r for r in runs if r.info.status == "KILLED" and r.data.tags.get("mlflow.parentRunId")]
    assert parent.info.status == "KILLED" and len(killed) == 1 and len(runs) == 3

    # 2. The same command: the interrupted trial continues from its checkpoint, then the grid completes.
    again = run_cli(["-m", *args], outputs, data_cache)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = first.get_trials()
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 2 and len(trials) == 3
    assert trials[2].user_attrs["mlc.continues"] == 1 and trials[2].params == trials[1].params
    assert trials[2].user_attrs["mlc.checkpoint"].endswith("/1/checkpoints/last.pt")
    continued = [r for r in mlflow_runs(outputs, "lambda_vs_negative_ratio") if r.info.run_id == killed[0].info.run_id]
    assert continued[0].info.status == "FINISHED"  # the same MLflow run, resumed
    second = _study(outputs, "dataset.negative_ratio=0.8").study_name
    assert len(optuna.load_study(study_name=second, storage=f"sqlite:///{outputs}/optuna.db").get_trials()) == 2
    # One study per negative ratio of the grid, each trial run on data with that ratio, met exactly (as close
    # as 256 scenes allow: round(0.8 * 256) = 205 negative scenes).
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{outputs}/optuna.db"))
    assert names == [first.study_name, second] and second.endswith("[dataset.negative_ratio=0.8]")
    assert first.study_name.endswith("[dataset.negative_ratio=0.5]")
    children = [r for r in mlflow_runs(outputs, "lambda_vs_negative_ratio") if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.data.params["dataset.negative_ratio"] for r in children) == ["0.5", "0.5", "0.8", "0.8"]
    achieved = sorted(float(r.data.params["data.train.negative_ratio"]) for r in children)
    assert achieved == pytest.approx([128 / 256, 128 / 256, 205 / 256, 205 / 256], abs=1e-6)

    # 3. n_trials is the total to reach: asking for 3 runs exactly one more trial per study, with new parameters
    #    (each trial's sampler is seeded by its trial number, so a new process does not replay the first one's).
    more = run_cli(["-m", *[a for a in args if "n_trials" not in a], "hydra.sweeper.n_trials=3"], outputs, data_cache)
    assert more.returncode == 0, more.stderr[-3000:]
    for name in (first.study_name, second):
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{outputs}/optuna.db")
        done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(done) == 3 and len({t.params["loss.lam"] for t in done}) == 3, name


# Two workers on one study: tests/test_workers.py (mlc sweep --workers, a fresh SQLite store) and
# tests/test_postgres.py (started by hand, as on two machines, on an empty PostgreSQL database).


def test_a_killed_sweep_leaves_no_trial_running(outputs, data_cache, capsys):
    args = [*SURVIVE, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "hydra.sweeper.n_trials=1",
            "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=8",
            "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]"]
    proc = _start(args, outputs, data_cache)
    _run_until(proc, "epoch 2 step 2/")
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: what a lost machine looks like
    killed = time.monotonic()
    proc.wait(timeout=30)
    storage = f"sqlite:///{outputs}/optuna.db"

    def studies(*argv: str) -> str:  # `mlc studies` in this process: read at once, well within the grace period
        capsys.readouterr()
        studies_main([storage, *argv])
        return capsys.readouterr().out

    # alive as far as anyone can tell, for the sweep's 8 s grace period (the default `mlc studies` uses)
    assert "1 running of which 0 stale" in studies()
    time.sleep(max(0.0, killed + 9 - time.monotonic()))
    summary = studies()
    assert "1 running of which 1 stale" in summary and "1 (1 stale)" in summary
    closed = run_cli([storage, "--fail-stale"], outputs, None, module="mlc.cli.studies")
    assert closed.returncode == 0 and "1 stale trial(s) marked FAIL" in closed.stdout, closed.stderr
    (trial, queued) = _study(outputs).get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL and queued.state == optuna.trial.TrialState.WAITING
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # the trial's run and the dead parent
    # Re-running the sweep continues the dead trial from its epoch-1 checkpoint.
    again = run_cli(["-m", *args], outputs, data_cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout and "at epoch 2" in again.stdout
    done = _study(outputs).get_trials()
    assert [t.state for t in done] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]


def test_a_study_whose_every_trial_fails_does_not_abort_the_grid(outputs, data_cache):
    # SGD at lr=1e6 without warm-up diverges at once: every trial of that study fails with a NaN loss, which
    # no config check can foresee; the second study is healthy.
    args = [*SURVIVE, "trainer.max_epochs=1", "hydra.sweeper.n_trials=2", "optimizer=sgd", "scheduler=constant",
            "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]",
            "+hydra.sweeper.study_grid.optimizer.lr=[1e6,0.05]"]
    result = run_cli(["-m", *args], outputs, data_cache)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 studies failed (no trial completed): ")
    (sweep_dir,) = outputs.glob("multirun/*/*")
    studies = json.loads((sweep_dir / "sweep_summary.json").read_text())["studies"]
    assert [(s["fixed"]["optimizer.lr"], s["status"], s["complete"], s["failed"]) for s in studies] == [
        (1e6, "failed", 0, 2), (0.05, "ok", 2, 0)]
    (parent,) = [r for r in mlflow_runs(outputs, "lambda_vs_negative_ratio") if r.data.tags.get("mlc.kind") == "sweep"]
    assert parent.info.status == "FAILED" and "1 of 2 studies failed" in parent.data.tags["mlc.error"]
