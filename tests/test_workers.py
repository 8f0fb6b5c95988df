"""``mlc sweep --workers N``: N processes fill the same studies to exactly n_trials, under one MLflow parent run."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mlc.sweep.study import ATTR_SURPLUS, within_budget
from mlc.sweep.workers import device_sets, parse
from tests.conftest import SMALL, cli_env, mlflow_runs, run_module


def test_a_trial_asked_beyond_n_trials_in_a_race_is_surplus_and_never_counts(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", study_name="s")
    done = study.ask()
    study.tell(done, 1.0)
    first, second, third = study.ask(), study.ask(), study.ask()  # three workers saw room for one more
    assert within_budget(study, first, n_trials=2)
    assert not within_budget(study, second, n_trials=2) and not within_budget(study, third, n_trials=2)
    states = {t.number: (t.state, t.user_attrs.get(ATTR_SURPLUS)) for t in study.get_trials()}
    assert states == {0: (TrialState.COMPLETE, None), 1: (TrialState.RUNNING, None),
                      2: (TrialState.FAIL, True), 3: (TrialState.FAIL, True)}
    study.tell(first, state=TrialState.FAIL)  # the counted one crashed: the next trial asked has room again
    assert within_budget(study, study.ask(), n_trials=2)


def test_a_surplus_continuation_is_queued_again(tmp_path):
    from mlc.sweep.study import ATTR_CONTINUES

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", study_name="s")
    study.tell(study.ask(), 1.0)
    running = study.ask()
    study.enqueue_trial({"x": 0.5}, user_attrs={ATTR_CONTINUES: 0})
    continuation = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert not within_budget(study, continuation, n_trials=2) and running.number == 1
    again = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # the next ask gets it back
    assert again.params == {"x": 0.5} and again.user_attrs[ATTR_CONTINUES] == 0 and again.number == 3


def test_worker_options_and_devices(monkeypatch):
    assert parse(["--workers", "3", "seed=1"]) == (3, None, ["seed=1"])
    assert parse(["--workers=2", "--gpus-per-worker=1", "a=b"]) == (2, 1, ["a=b"])
    for bad in (["--workers", "0"], ["--workers", "x"], ["--workers"]):
        with pytest.raises(ValueError):
            parse(bad)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert device_sets(2, None) == ["4,5", "6,7"] and device_sets(4, 1) == ["4", "5", "6", "7"]
    assert device_sets(2, 0) == ["", ""]
    with pytest.raises(ValueError, match="needs 6 GPUs; 4 visible"):
        device_sets(3, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device_sets(2, None) == [None, None]  # no GPU: the workers run on the CPU


@pytest.mark.slow
def test_two_workers_fill_one_study_to_exactly_n_trials_under_one_parent_run(outputs, data_cache):
    """With a pruner that stops every trial after its first epoch (F1 never reaches 2), which also
    tests pruning across worker processes: PRUNED in Optuna, counted towards n_trials, KILLED + tagged
    in MLflow, checkpoints of epoch 1 complete."""
    args = ["sweep", "--workers", "2", "hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]", "trainer.max_epochs=3", *SMALL,
            "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=2.0", f"paths.cache={data_cache}",
            "hydra.sweeper.heartbeat_interval=1"]  # a worker done first polls for the other's trial every 1 s, not 5
    result = run_module("mlc.cli", args, cli_env(outputs), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[worker 0]" in result.stdout and "[worker 1]" in result.stdout
    assert "pruned by ThresholdPruner at epoch 1" in result.stdout and "all pruned" in result.stdout
    storage = f"sqlite:///{outputs}/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    counted = [t for t in trials if not t.user_attrs.get(ATTR_SURPLUS)]
    assert [t.state for t in counted] == [TrialState.PRUNED] * 3  # exactly n_trials; none failed or left running
    assert all(list(t.intermediate_values) == [1] for t in counted)  # epoch 1 reported, then stopped
    assert all(t.state == TrialState.FAIL for t in trials if t.user_attrs.get(ATTR_SURPLUS))
    assert len({t.params["loss.lam"] for t in counted}) == 3
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    (parent,) = [r for r in runs if r.data.tags.get("mlc.kind") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["mlc.sweep.workers"] == "2"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and all(r.info.status == "KILLED" and r.data.tags["mlc.pruned"] == "true"
                                      for r in children)
    assert sorted(r.data.tags["mlc.job_num"] for r in children) == ["0", "1", "2"]  # one folder per trial
    for r in children:
        assert (Path(r.data.tags["mlc.run_dir"]) / "checkpoints" / "last.pt").is_file()
    assert "3/3" in result.stdout


def test_workers_need_an_optuna_sweep_and_a_shared_storage(outputs):
    plain = run_module("mlc.cli", ["sweep", "--workers", "2", "seed=0,1"], cli_env(outputs), timeout=120)
    assert plain.returncode == 2 and plain.stderr.strip().startswith("error: --workers=2: needs an Optuna sweep")
    memory = run_module("mlc.cli", ["sweep", "--workers", "2", "hparams_search=lambda_vs_negative_ratio",
                                    "hydra.sweeper.storage=null"], cli_env(outputs), timeout=120)
    assert memory.returncode == 2 and "need a storage they share" in memory.stderr
    assert not list(outputs.glob("multirun/*")) and not (outputs / "mlflow.db").exists()
