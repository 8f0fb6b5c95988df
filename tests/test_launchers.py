"""Sweep trials on Hydra's process-based launchers: joblib (local parallel trials) and submitit_local run for
real; the SLURM presets (conf/hydra/launcher/slurm_*.yaml) composed and turned into sbatch scripts."""

from __future__ import annotations

import pickle
import re

import optuna
import pytest

from tests.conftest import SMALL, mlflow_runs, run_cli

SWEEP = ["hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]", *SMALL]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2"]
# Each trial's train.log names the process it ran in.
PID_LOG = "hydra.job_logging.formatters.file.format='[pid %(process)d] %(message)s'"


def _studies(outputs) -> dict[str, optuna.Study]:
    storage = f"sqlite:///{outputs}/optuna.db"
    return {s.study_name.partition("[")[2].rstrip("]"): optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def _parent_and_children(outputs) -> tuple:
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    (parent,) = [r for r in runs if r.data.tags.get("mlc.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(children)
    return parent, children


@pytest.mark.slow
def test_joblib_runs_two_trials_at_once_under_one_parent_run(outputs, data_cache):
    result = run_cli(["-m", *SWEEP, *JOBLIB, "trainer.max_epochs=1", PID_LOG], outputs, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    (study,) = _studies(outputs).values()
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 2
    # Two worker processes, at the same time.
    (sweep_dir,) = outputs.glob("multirun/*/*")
    pids = [set(re.findall(r"^\[pid (\d+)\]", (sweep_dir / str(n) / "train.log").read_text(), re.M)) for n in (0, 1)]
    assert all(len(p) == 1 for p in pids) and pids[0] != pids[1], pids
    parent, children = _parent_and_children(outputs)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in children)
    assert max(r.info.start_time for r in children) < min(r.info.end_time for r in children)  # they overlapped
    assert sorted(float(r.data.params["loss.lam"]) for r in children) == sorted(t.params["loss.lam"]
                                                                                for t in study.get_trials())


# (A failing trial's error crossing the joblib boundary is the pickling test below; a pruned trial's
# identity crossing a process boundary through hydra.job.env_set is tests/test_workers.py.)


@pytest.mark.slow
def test_submitit_local_runs_a_ddp_trial_in_its_own_job(outputs, data_cache):
    # The trial is a 2-rank DDP job (trainer.nproc=2) started inside the submitit job, as with slurm_ddp: the
    # ranks, spawned by torch's elastic launcher, must find the task's code from the job's process.
    args = [*SWEEP, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.sweeper.n_trials=1",
            "trainer.max_epochs=1", "trainer.nproc=2"]
    result = run_cli(["-m", *args], outputs, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    (study,) = _studies(outputs).values()
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    (sweep_dir,) = outputs.glob("multirun/*/*")
    assert list((sweep_dir / ".submitit").glob("*/*_result.pkl")), "the trial did not run as a submitit job"
    parent, (child,) = _parent_and_children(outputs)
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    assert float(child.data.params["loss.lam"]) == trial.params["loss.lam"]
    assert child.data.tags["mlc.world_size"] == "2"
    assert "| 2 process(es) on " in (sweep_dir / "0" / "train.log").read_text()


# -- fast checks ----------------------------------------------------------------------------------------------------


def _errors() -> list[Exception]:
    from mlc.cli.infer import RunNotFound
    from mlc.engine.trainer import TrainingInterrupted
    from mlc.errors import CheckpointError, ConfigError, DataError, MlcError, NonFiniteLossError
    from mlc.report.runs import ReportError
    from mlc.scores import ScoresError
    from mlc.sweep.pruning import TrialPruned
    from mlc.tracking import TrackingError

    return [ConfigError("loss.lam", -0.1, "must be > 0"), MlcError("m"), NonFiniteLossError("m"),
            CheckpointError("m"), DataError("m"), TrialPruned("m"), TrainingInterrupted("m"), TrackingError("m"),
            ReportError("m"), RunNotFound("m"), ScoresError("m")]


@pytest.mark.parametrize("err", _errors(), ids=lambda e: type(e).__name__)
def test_mlc_errors_survive_the_launchers_pickling(err):
    """joblib and submitit pickle a failed trial's exception back to the sweeper, which records its message."""
    err.before_training = True  # (what mlc.cli.train marks a refusal before training with)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err) and back.before_training is True
    if hasattr(err, "key"):
        assert (back.key, back.value, back.reason) == (err.key, err.value, err.reason)


def _sbatch(monkeypatch, tmp_path, overrides: list[str]) -> tuple:
    """(the composed hydra.launcher, the sbatch script the launcher would submit for 2 trials), without SLURM."""
    import submitit.slurm.slurm as slurm
    from hydra.core.plugins import Plugins

    from mlc.config import compose_config

    config = compose_config(["hparams_search=lambda_vs_negative_ratio", f"hydra.sweep.dir={tmp_path}", *overrides],
                            hydra=True)
    launcher = Plugins.instance().instantiate_launcher(hydra_context=None, task_function=lambda cfg: 0.0,
                                                       config=config)
    scripts = []

    class Submitted(Exception):
        pass

    def submit(self, command):
        scripts.append(self._make_submission_file_text(command, "test"))
        raise Submitted

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is there"
    monkeypatch.setattr(slurm.SlurmExecutor, "_submit_command", submit)
    with pytest.raises(Submitted):
        launcher.launch([["loss.lam=0.1"], ["loss.lam=0.2"]], initial_job_idx=0)
    (script,) = scripts
    return config.hydra.launcher, set(re.findall(r"^#SBATCH (\S+)$", script, re.M))


def test_slurm_gpu_preset_asks_one_gpu_per_trial(monkeypatch, tmp_path):
    launcher, sbatch = _sbatch(monkeypatch, tmp_path, ["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"])
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert {"--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--partition=gpu", "--cpus-per-task=8",
            "--mem=32GB", "--time=120", "--array=0-1%2"} <= sbatch


def test_slurm_ddp_preset_gives_one_task_all_gpus_of_trainer_nproc(monkeypatch, tmp_path):
    launcher, sbatch = _sbatch(monkeypatch, tmp_path, ["hydra/launcher=slurm_ddp", "trainer.nproc=4"])
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 1, 1)
    assert {"--gpus-per-node=4", "--ntasks-per-node=1", "--nodes=1", "--cpus-per-task=32", "--time=240"} <= sbatch
    assert not any(s.startswith("--partition") for s in sbatch)  # null: the cluster's default
