"""A sweep's exit code is the state of its studies; dead processes' trials are taken over, with real kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mlc.sweep.study import ATTR_OWNER, ATTR_SURPLUS, owner_gone, process_owner, retire_queued
from mlc.sweep.summary import StudyResult, outcome
from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs, run_cli

# Trials long enough to be killed in the middle, on the tiny data: a whole epoch takes well under a second.
KILLABLE = ["hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]",
            *SMALL, "trainer.log_every_n_steps=1"]


def _result(**counts) -> StudyResult:
    fields = dict(name="s", fixed={}, best_params={}, best_value=0.5, complete=2, pruned=0, failed=0, interrupted=0,
                  running=0, stale=0, waiting=0, n_trials=2, trials=[])
    return StudyResult(**(fields | counts))


def test_the_exit_code_is_the_state_of_the_studies():
    assert outcome([_result()]) == (0, "")
    assert outcome([_result(complete=1, pruned=1)])[0] == 0
    code, message = outcome([_result(), _result(name="t", complete=1, running=1)])
    assert code == 1 and "1 of 2 studies did not reach n_trials (t: 1/2 finished, 0 failed, 0 interrupted, " \
                         "1 running)" in message and message.endswith("run the same command to run the missing trials")
    assert outcome([_result(complete=1, failed=1)])[0] == 1  # a crashed trial leaves its study short
    assert outcome([_result(complete=0, failed=2)]) == (1, "1 of 1 studies failed (no trial completed): s")
    assert outcome([_result()], interrupted="interrupted (SIGTERM)")[0] == 130


def test_a_trial_owner_is_gone_once_its_process_ends_on_this_machine():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stamp = Path(f"/proc/{child.pid}/stat").read_text()
        owner = {**process_owner(), "pid": child.pid}
        owner["start"] = owner["start"].split(":")[0] + ":" + stamp.rsplit(")", 1)[1].split()[19]
        assert not owner_gone(owner) and not owner_gone(process_owner())
        child.kill()
        time.sleep(0.5)  # not yet reaped: a zombie has ended too
        assert owner_gone(owner)
    finally:
        child.kill()
        child.wait()
    assert owner_gone(owner) and not owner_gone({**owner, "host": "another-machine"}) and not owner_gone(None)
    assert owner_gone({**process_owner(), "start": "another-boot:1"})  # the same pid, but another process


def test_a_complete_study_retires_its_queued_continuations(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", study_name="s")
    study.tell(study.ask(), 1.0)
    study.enqueue_trial({"x": 0.5})
    retire_queued(study, n_trials=2)  # not complete yet: the continuation waits for its run
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.WAITING]
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 2.0)  # (takes the queued one)
    study.enqueue_trial({"x": 0.25})
    retire_queued(study, n_trials=2)
    assert [(t.state, t.user_attrs.get(ATTR_SURPLUS)) for t in study.get_trials()] == [
        (TrialState.COMPLETE, None), (TrialState.COMPLETE, None), (TrialState.FAIL, True)]


def _start(args: list[str], outputs: Path, cache: Path, module: str = "mlc.cli.train") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args, f"paths.cache={cache}"], cwd=ROOT,
                            env=cli_env(outputs), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _read_until(proc: subprocess.Popen, *marks: str | tuple[str, ...], timeout: float = 240) -> str:
    """The output of ``proc`` up to the line where every mark has been seen (a tuple: all in one line)."""
    marks = tuple((m,) if isinstance(m, str) else m for m in marks)
    seen, text, end = set(), [], time.monotonic() + timeout
    while len(seen) < len(marks):
        line = proc.stdout.readline()
        assert line and time.monotonic() < end, f"never saw {set(marks) - seen}:\n{''.join(text)[-3000:]}"
        text.append(line)
        seen |= {m for m in marks if all(part in line for part in m)}
    return "".join(text)


def _study(outputs: Path) -> optuna.Study:
    storage = f"sqlite:///{outputs}/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
def test_a_rerun_right_after_a_kill_takes_the_dead_trial_over_at_once(outputs, data_cache):
    """Default heartbeat grace period (60 s): the re-run sees that the trial's process is gone from this
    machine and continues it from its checkpoint at once, instead of "1 running elsewhere: nothing to run"."""
    args = ["-m", *KILLABLE, "trainer.max_epochs=3", "hydra.sweeper.n_trials=1"]
    proc = _start(args, outputs, data_cache)
    _read_until(proc, "epoch 2 step 2/")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    (trial,) = _study(outputs).get_trials()
    assert trial.state == TrialState.RUNNING and trial.user_attrs[ATTR_OWNER]["pid"] == proc.pid
    again = run_cli(args, outputs, data_cache, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "its process on this machine is gone: marked FAIL" in again.stdout and "resumed from" in again.stdout
    assert [t.state for t in _study(outputs).get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.slow
def test_a_worker_killed_by_a_signal_is_named_and_the_others_finish_its_trial(outputs, data_cache):
    proc = _start(["sweep", "--workers", "2", *KILLABLE, "trainer.max_epochs=4", "hydra.sweeper.n_trials=3",
                   "hydra.sweeper.heartbeat_interval=1"], outputs, data_cache, "mlc.cli")
    _read_until(proc, "[worker 0] [", ("[worker 1] ", "epoch 2 step 1/"))  # worker 1 halfway through a trial
    victim = _children(proc.pid)[1]
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    assert f"warning: worker 1 (pid {victim}) was killed by SIGKILL; the other workers finished its trial" in out
    assert "its process on this machine is gone: marked FAIL" in out
    trials = [t for t in _study(outputs).get_trials() if not t.user_attrs.get(ATTR_SURPLUS)]
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1, states
    (parent,) = [r for r in mlflow_runs(outputs, "lambda_vs_negative_ratio") if r.data.tags.get("mlc.kind") == "sweep"]
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_killing_the_workers_parent_stops_its_workers_and_closes_the_parent_run(outputs, data_cache):
    args = ["sweep", "--workers", "2", *KILLABLE, "trainer.max_epochs=5", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.heartbeat_interval=1"]
    proc = _start(args, outputs, data_cache, "mlc.cli")
    _read_until(proc, ("[worker 0] ", "epoch 1 step"), ("[worker 1] ", "epoch 1 step"))  # both in their trials
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs in the parent
    proc.wait(timeout=30)
    end = time.monotonic() + 120
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "workers left running without their parent"
    assert {t.state for t in _study(outputs).get_trials()} == {TrialState.FAIL}  # both interrupted, none RUNNING
    (parent,) = [r for r in mlflow_runs(outputs, "lambda_vs_negative_ratio") if r.data.tags.get("mlc.kind") == "sweep"]
    assert parent.info.status == "KILLED" and "process (pid" in parent.data.tags["mlc.error"]
    (sweep_dir,) = outputs.glob("multirun/*/*")
    again = run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], outputs, data_cache, module="mlc.cli", timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["outcome"] == {"code": 0, "message": ""} and summary["studies"][0]["complete"] == 2


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_a_trial_running_on_another_host_is_waited_for_then_taken_over_once_its_heartbeat_stops(outputs, data_cache):
    from mlc.sweep.study import heartbeat, open_storage

    storage = open_storage(f"sqlite:///{outputs}/optuna.db", heartbeat_interval=1, grace_period=5)
    study = optuna.create_study(study_name="t[dataset.negative_ratio=0.5]", storage=storage, direction="maximize")
    lost = study.ask({"loss.lam": optuna.distributions.FloatDistribution(0.001, 0.5, log=True)})
    lost.set_user_attr(ATTR_OWNER, {"host": "another-machine", "pid": 1, "start": "boot:1"})
    args = ["-m", *KILLABLE, "trainer.max_epochs=1", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=t",
            "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=5"]
    with heartbeat(storage, lost):  # alive on its machine until the sweep has started; then that machine is lost
        proc = _start(args, outputs, data_cache)
        seen = _read_until(proc, "study 1/1")
    out = seen + proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert ("waiting for 1 trial(s) running elsewhere: #0 of t[dataset.negative_ratio=0.5] (host another-machine, "
            "pid 1); if a process is dead, its trial is taken over within") in out
    assert "no heartbeat within the grace period" in out
    (dead, continued) = _study(outputs).get_trials()
    assert dead.state == TrialState.FAIL and continued.state == TrialState.COMPLETE
    assert continued.params == dead.params  # the same λ, continued (from the start: it wrote no checkpoint)
