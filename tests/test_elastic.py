"""``trainer.nproc=N``: a run or sweep trial that is itself an N-process DDP job (torch's elastic launcher)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from mlc.cli.evaluate import evaluate_checkpoint
from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs, run_cli

pytestmark = pytest.mark.slow


def ranks_of(pid: int) -> list[int]:
    """The rank processes the elastic launcher spawned under ``pid`` (not multiprocessing's resource tracker)."""
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line]


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_sweep_trial_with_two_ranks_returns_rank_zeros_metric_under_one_run(outputs, data_cache):
    args = ["-m", "hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.n_trials=1",
            "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]", "trainer.nproc=2", "trainer.max_epochs=2", *SMALL]
    result = run_cli(args, outputs, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting 2 ranks (trainer.nproc=2)" in result.stdout and "2 process(es) on cpu" in result.stdout
    storage = f"sqlite:///{outputs}/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    (trial,) = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    (run_dir,) = [p.parent.parent for p in outputs.glob("multirun/*/*/0/checkpoints/last.pt")]
    result_json = json.loads((run_dir / "result.json").read_text())
    assert trial.value == result_json["best_value"] and sorted(trial.intermediate_values) == [1, 2]
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    (run,) = [r for r in runs if r.data.tags.get("mlc.kind") == "run"]  # rank 0 logs; one run for the trial
    (parent,) = [r for r in runs if r.data.tags.get("mlc.kind") == "sweep"]
    assert run.data.tags["mlc.world_size"] == "2" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert not list(run_dir.glob(".elastic*"))  # the launcher's (empty) bookkeeping is not left in the run
    # Honest DDP metrics: what the two ranks logged equals one process scoring the same weights.
    single = evaluate_checkpoint(str(run_dir / "checkpoints" / "last.pt"), "val")
    last = result_json["history"][-1]
    for key in ("f1_macro", "f2_macro", "map", "f1_neg"):
        assert single[key] == pytest.approx(last[f"val/{key}"], abs=1e-6), key


def test_ctrl_c_stops_every_rank_after_saving_and_a_ranks_error_is_one_line(outputs, data_cache):
    cmd = [sys.executable, "-m", "mlc.cli.train", "trainer.nproc=2", "trainer.max_epochs=200", *SMALL,
           f"paths.cache={data_cache}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(outputs), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group, as in a terminal
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "epoch 1/200" in line:
            break
    ranks = ranks_of(proc.pid)
    assert len(ranks) == 2, "".join(seen)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    started = time.monotonic()
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + rest
    assert time.monotonic() - started < 60  # the ranks stop at the next step, not at the launcher's timeout
    assert "error: interrupted" in rest and "resume with trainer.resume=" in rest
    (last,) = outputs.glob("runs/*/*/checkpoints/last.pt")
    assert last.stat().st_size > 0
    assert not any(running(pid) for pid in ranks)  # no rank left behind
    (run,) = mlflow_runs(outputs)
    assert run.info.status == "KILLED"
    # An error in the ranks (here a loss DDP cannot run) comes back as that error: one line, exit 1.
    before = sorted(outputs.glob("runs/*/*"))
    failed = run_cli(["trainer.nproc=2", "trainer.max_epochs=1", "loss=role", *SMALL], outputs, data_cache)
    assert failed.returncode == 1, failed.stderr[-3000:]
    lines = failed.stderr.strip().splitlines()
    assert lines[-1].startswith("error: loss 'role' keeps per-instance state that DDP would not keep in sync"), \
        failed.stderr[-3000:]
    assert sorted(outputs.glob("runs/*/*")) == before  # refused before training: no run folder left


@pytest.mark.parametrize("chosen", [None, "3"])
def test_ranks_share_the_cores_unless_the_user_chose_a_thread_count(monkeypatch, chosen):
    import os

    from mlc.engine.elastic import _threads_per_rank

    if chosen is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", chosen)
    with _threads_per_rank(2):  # what the spawned ranks inherit
        inside = os.environ.get("OMP_NUM_THREADS")
    assert inside == (chosen or str(max(1, len(os.sched_getaffinity(0)) // 2)))
    assert os.environ.get("OMP_NUM_THREADS") == chosen  # put back as it was
