"""Sweep trials on a real SLURM cluster (``tests/slurm_cluster.py``: munged, slurmctld and slurmd on this
machine, one node): the presets ``hydra/launcher=slurm_cpu`` and ``slurm_ddp`` submit their trials with sbatch,
the trials run as SLURM jobs, and a trial cancelled or warned by SLURM is continued from its ``last.pt``.
Nothing of SLURM is mocked; without slurm-wlm/munge (or root) these tests are skipped."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs, run_cli
from tests.slurm_cluster import slurm_cluster  # noqa: F401  (the fixture: a one-node SLURM cluster)

pytestmark = pytest.mark.slow

SWEEP = ["hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]"]
SLURM_CPU = ["hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=10"]
ONE_TRIAL = ["hydra.sweeper.n_jobs=1", "hydra.sweeper.n_trials=1"]
# A trial long enough to be signalled mid-training once its first epoch wrote last.pt: 32 steps an epoch.
SLOW = [*(a for a in SMALL if not a.startswith("trainer.batch_size=")), "trainer.batch_size=8",
        "trainer.max_epochs=4"]
RESUMED = re.compile(r"resumed from (\S+) at epoch (\d+), step (\d+)")
TIMEOUT_S = 240


def _trials(outputs: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{outputs}/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()


def _parent_and_children(outputs: Path) -> tuple:
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    (parent,) = [r for r in runs if r.data.tags.get("mlc.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(children)
    return parent, children


def _slurm_jobs(sweep_dir: Path, host: str) -> list[str]:
    """The SLURM job ids (``<job>``, or ``<array job>_<task>`` for a batch of trials) the trials of ``sweep_dir``
    ran as, from submitit's folders: each job's own log names the id that SLURM gave it and the node it ran on."""
    ids = sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if (p / f"{p.name}_0_log.out").is_file())
    for job in ids:
        log = (sweep_dir / ".submitit" / job / f"{job}_0_log.out").read_text()
        assert f"job_id={job}, hostname={host}" in log, log[-2000:]
    return ids


def _start_sweep(args: list[str], outputs: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlc.cli.train", *args, f"paths.cache={cache}"], cwd=ROOT,
                            env=cli_env(outputs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _running_trial(sweep: subprocess.Popen, outputs: Path, cluster) -> str:
    """Once the sweep's one trial has finished an epoch (its ``last.pt`` exists) and trains on: its SLURM job."""
    deadline = time.monotonic() + TIMEOUT_S
    while not list(outputs.glob("multirun/*/*/0/checkpoints/last.pt")):
        if sweep.poll() is not None or time.monotonic() > deadline:
            sweep.kill()
            out, err = sweep.communicate()
            pytest.fail(f"the trial wrote no last.pt (exit {sweep.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.05)
    (job,) = [line.split()[0] for line in cluster.jobs() if line.endswith(" RUNNING")]
    return job


def _finish(sweep: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = sweep.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        sweep.kill()
        out, err = sweep.communicate()
    return sweep.returncode, out, err


def test_slurm_cpu_runs_two_trials_at_once_as_slurm_jobs(slurm_cluster, outputs, data_cache):  # noqa: F811
    args = ["-m", *SWEEP, *SMALL, *SLURM_CPU, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
            "trainer.max_epochs=1"]
    result = run_cli(args, outputs, data_cache, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:] + slurm_cluster.logs()
    trials = _trials(outputs)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    (sweep_dir,) = outputs.glob("multirun/*/*")
    # Two tasks of one SLURM job array (the batch of hydra.sweeper.n_jobs=2 trials), on the cluster's node.
    jobs = _slurm_jobs(sweep_dir, slurm_cluster.host)
    arrays, tasks = {j.split("_")[0] for j in jobs}, sorted(j.split("_")[1] for j in jobs)
    assert len(arrays) == 1 and tasks == ["0", "1"], jobs
    parent, children = _parent_and_children(outputs)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in children)
    assert max(r.info.start_time for r in children) < min(r.info.end_time for r in children)  # they overlapped
    assert sorted(float(r.data.params["loss.lam"]) for r in children) == sorted(t.params["loss.lam"] for t in trials)
    assert {(sweep_dir / f"sweep_summary.{ext}").is_file() for ext in ("md", "json", "png")} == {True}
    assert "Sweep result (maximize val/f1_macro_hm_neg; best per study)" in result.stdout  # as on one machine


def test_slurm_ddp_trial_is_two_ranks_in_one_allocation(slurm_cluster, outputs, data_cache):  # noqa: F811
    # slurm_ddp asks one GPU per rank: here, CPU cores instead (gloo); one task, which starts both ranks.
    args = ["-m", *SWEEP, *SMALL, *ONE_TRIAL, "hydra/launcher=slurm_ddp", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.cpus_per_task=2", "hydra.launcher.mem_gb=4", "hydra.launcher.timeout_min=10",
            "trainer.max_epochs=1", "trainer.nproc=2"]
    result = run_cli(args, outputs, data_cache, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:] + slurm_cluster.logs()
    (trial,) = _trials(outputs)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    (sweep_dir,) = outputs.glob("multirun/*/*")
    (job,) = _slurm_jobs(sweep_dir, slurm_cluster.host)
    script = sweep_dir / ".submitit" / job.split("_")[0] / f"{job.split('_')[0]}_submission.sh"  # the sbatch script
    assert "#SBATCH --cpus-per-task=2" in script.read_text() and "--gpus-per-node" not in script.read_text()
    parent, (child,) = _parent_and_children(outputs)
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    assert child.data.tags["mlc.world_size"] == "2"
    assert "| 2 process(es) on cpu" in (sweep_dir / "0" / "train.log").read_text()


def test_scancel_interrupts_a_trial_and_the_same_command_continues_it(slurm_cluster, outputs, data_cache):  # noqa: F811
    args = ["-m", *SWEEP, *SLOW, *SLURM_CPU, *ONE_TRIAL]
    sweep = _start_sweep(args, outputs, data_cache)
    job = _running_trial(sweep, outputs, slurm_cluster)
    slurm_cluster.run("scancel", job)  # SLURM: SIGTERM to the job's processes, SIGKILL after KillWait
    code, out, err = _finish(sweep)
    assert code == 130, err[-3000:]
    assert re.fullmatch(r"error: sweep interrupted \(SIGTERM\) at epoch \d+, step \d+ in trial #0 of .+; "
                        r"run the same command to continue it", err.strip().splitlines()[-1]), err[-2000:]
    (trial,) = _trials(outputs)
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["mlc.interrupted"] is True
    (first,) = outputs.glob("multirun/*/*")
    last = first / "0" / "checkpoints" / "last.pt"
    assert last.is_file()

    result = run_cli(args, outputs, data_cache, timeout=TIMEOUT_S)  # the same command
    assert result.returncode == 0, result.stderr[-3000:] + slurm_cluster.logs()
    interrupted, continued = _trials(outputs)
    assert interrupted.state == optuna.trial.TrialState.FAIL
    assert continued.state == optuna.trial.TrialState.COMPLETE and continued.params == interrupted.params
    assert continued.user_attrs["mlc.continues"] == 0 and continued.user_attrs["mlc.checkpoint"] == str(last)
    (second,) = set(outputs.glob("multirun/*/*")) - {first}
    _slurm_jobs(second, slurm_cluster.host)  # the continuation ran on SLURM too
    resumed = [m for log in second.glob("*/train.log") for m in RESUMED.findall(log.read_text())]
    assert [(Path(p), int(epoch) > 1) for p, epoch, _ in resumed] == [(last, True)], resumed  # in epoch 2 or later
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    assert sorted(r.info.status for r in runs if r.data.tags.get("mlc.kind") == "sweep") == ["FINISHED", "KILLED"]


def test_slurm_warning_signal_checkpoints_and_requeues_the_trial(slurm_cluster, outputs, data_cache):  # noqa: F811
    # SLURM's warning before a time limit or a preemption is USR2 (sbatch --signal=USR2@<signal_delay_s>, which the
    # preset asks for). slurmctld sends it on its own periodic check (up to about 30 s late), so the test sends
    # the same signal through SLURM at once, once the trial trains: `scancel --signal=USR2 <job>`.
    args = ["-m", *SWEEP, *SLOW, *SLURM_CPU, *ONE_TRIAL, "hydra.launcher.signal_delay_s=90"]
    sweep = _start_sweep(args, outputs, data_cache)
    job = _running_trial(sweep, outputs, slurm_cluster)
    (sweep_dir,) = outputs.glob("multirun/*/*")
    assert "#SBATCH --signal=USR2@90" in next((sweep_dir / ".submitit").glob("**/*_submission.sh")).read_text()
    slurm_cluster.run("scancel", "--signal=USR2", job)
    code, out, err = _finish(sweep)
    assert code == 0, err[-3000:] + slurm_cluster.logs()
    (trial,) = _trials(outputs)  # no FAIL: the trial was requeued, not recorded interrupted
    assert trial.state == optuna.trial.TrialState.COMPLETE
    log = (sweep_dir / "0" / "train.log").read_text()  # both runs of the job (Hydra appends)
    assert "SIGUSR2 received: stopping after this step" in log, log[-3000:]
    last = sweep_dir / "0" / "checkpoints" / "last.pt"
    resumed = RESUMED.findall(log)
    assert [(Path(p), int(epoch) > 1) for p, epoch, _ in resumed] == [(last, True)], log[-3000:]
    assert _slurm_jobs(sweep_dir, slurm_cluster.host) == [job]  # the same SLURM job, run again after its requeue
    parent, (child,) = _parent_and_children(outputs)  # one MLflow run for the trial, continued
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    assert child.data.tags.get("mlc.resumed") == "true"
