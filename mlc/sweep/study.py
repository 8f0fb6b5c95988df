"""Optuna studies that survive restarts, kills and a second worker.

What the sweep loop (``mlc.sweep.loop``) and ``python -m mlc.sweep.summary`` share:

- ``open_storage``: the RDB storage with Optuna's **heartbeat** (a thread records each running
  trial's heartbeat every ``heartbeat_interval`` s, in the database's own clock); a RUNNING trial
  whose heartbeat is older than ``grace_period`` belongs to a dead process (``kill -9``, a lost
  machine). Fresh SQLite files are created under ``mlc.stores``' lock.
- ``fail_stale``: such trials become FAIL in Optuna and their MLflow runs (and the dead sweep's
  parent run) KILLED, so nothing stays RUNNING forever.
- ``TrialSeededSampler``: the proposals of trial *n* come from the configured sampler seeded with
  ``seed + n``. Trial numbers are handed out by the storage, unique across processes, so a
  restarted sweep or a second worker never replays the first process's proposals (the same seeded
  TPE in each process proposes the same first point), while one uninterrupted sweep stays
  reproducible.
- ``fingerprint``: what a study's trials must share (the config minus where outputs go and minus the
  searched and grid keys, plus the search space), so that re-running a sweep continues its study
  and a changed config never mixes into it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from mlc.errors import ConfigError, MlcError
from mlc.flat import flatten
from mlc.stores import SQLITE_TIMEOUT_S, check_storage_url, journal_file, opening, sqlite_file
from mlc.sweep import optuna_api
from mlc.tracking import quiet_mlflow_logs

log = logging.getLogger("mlc.sweep")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards n_trials
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 60
# Config keys that say where a trial writes or how fast it runs, not what it computes: a re-run may
# change them and still continue its study.
NOT_IN_FINGERPRINT = ("paths", "tracking", "hydra", "trainer.num_workers", "trainer.device", "trainer.resume",
                      "trainer.log_every_n_steps", "trainer.eval_batch_size", "trainer.checkpoint_every_n_steps",
                      "trainer.compile", "trainer.channels_last", "trainer.cudnn_benchmark", "reproduce")
# Trial user attributes the sweeper sets (read back to find a dead trial's MLflow run).
ATTR_SWEEP_DIR, ATTR_JOB_NUM = "mlc.sweep_dir", "mlc.job_num"
ATTR_TRACKING_URI, ATTR_PARENT_RUN = "mlc.tracking_uri", "mlc.parent_run_id"
ATTR_RUN_DIR, ATTR_ERROR, ATTR_INTERRUPTED = "mlc.run_dir", "mlc.error", "mlc.interrupted"
# Set when a trial is queued to continue an unfinished one: the checkpoint to resume, the trial it continues.
ATTR_CHECKPOINT, ATTR_CONTINUES = "mlc.checkpoint", "mlc.continues"
# A trial of K seeded runs (seeds_per_trial): its value per finished seed, the seed its current run has, and
# (on its continuation) the seed that the checkpoint belongs to.
ATTR_SEED_VALUES, ATTR_RUN_SEED, ATTR_CHECKPOINT_SEED = "mlc.seed_values", "mlc.run_seed", "mlc.checkpoint_seed"
ATTR_RUN_DIRS = "mlc.run_dirs"  # K > 1: {seed: run dir} of each seed's run (mlc.run_dir is the latest one's)
ATTR_OBJECTIVES = "mlc.objectives"  # a study's: the names of its objectives (hydra.sweeper.objectives)
# What a continuation takes over from the trial it continues.
CARRIED = (ATTR_CONTINUES, ATTR_CHECKPOINT, ATTR_CHECKPOINT_SEED, ATTR_SEED_VALUES, ATTR_RUN_DIRS)
# The sweep process that runs a trial (``process_owner``): a re-run on its host takes it over once it is gone.
ATTR_OWNER = "mlc.owner"
# Set on a trial asked beyond n_trials by a worker that lost a race with another (never run, not a failure).
ATTR_SURPLUS = "mlc.surplus"


def open_storage(url: str | None, key: str = "hydra.sweeper.storage",
                 heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S, grace_period: int | None = GRACE_PERIOD_S,
                 must_exist: bool = False) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url`` — an RDB with heartbeats, or a journal file (``journal:///<file>``,
    no heartbeats: only a trial whose process died on this machine is seen to be dead);
    one line naming ``key`` if it cannot be opened."""
    if url is None:  # storage: null — one process, gone when it ends (nothing to continue, no heartbeats)
        return optuna.storages.InMemoryStorage()
    check_storage_url(url, key, must_exist=must_exist)
    journal = journal_file(url)
    if journal is not None:
        try:
            journal.parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        except OSError as err:
            raise ConfigError(key, url, f"cannot open the journal file ({err.strerror or err})") from None
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite_file(url) else {}
    try:
        with opening(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period)
    except MlcError:
        raise
    except Exception as err:  # SQLAlchemy's: server down, bad credentials, a file that is not a database
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ConfigError(key, url, f"cannot open the Optuna storage ({type(err).__name__}: {reason})") from None


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial: optuna.Trial | FrozenTrial) -> Iterator[None]:
    """Record ``trial``'s heartbeat every interval while the block runs (what ``study.optimize`` does
    for its own trials; an ask-and-tell loop has to do it itself)."""
    interval = optuna_api.heartbeat_interval(storage)
    if not interval:
        yield
        return
    trial_id = optuna_api.trial_id(trial)
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as err:  # a busy database: the next beat will do; staleness needs many misses
                log.debug("heartbeat of trial %d not recorded: %s", trial_id, err)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def reclaim(study: optuna.Study) -> list[FrozenTrial]:
    """Close ``study``'s RUNNING trials whose sweep process is dead, each queued to continue; return them.

    Dead means: recorded on this machine and that process is gone (``owner_gone``: at once, no waiting),
    or no heartbeat within the grace period (a lost machine, a kill on another host). Closing is one
    atomic state change in the storage, so of two processes reclaiming at once exactly one closes (and
    queues) each trial. Its MLflow run, and its dead sweep's parent run, end KILLED.
    """
    stale = set(stale_trial_numbers(study))
    closed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        gone = owner_gone(trial.user_attrs.get(ATTR_OWNER))
        if not (gone or trial.number in stale) or not _close_as_failed(study, trial):
            continue
        why = ("its process on this machine is gone" if gone else
               "it had no heartbeat within the grace period (its process died)")
        log.warning("trial #%d of %s: %s: marked FAIL", trial.number, study.study_name, why)
        kill_mlflow_runs(trial, reason=f"Optuna trial #{trial.number} of {study.study_name}: {why}")
        enqueue_continuation(study, trial)
        closed.append(trial)
    return closed


def _close_as_failed(study: optuna.Study, trial: FrozenTrial) -> bool:
    """FAIL a RUNNING trial of another process; False if someone else finished or closed it first."""
    try:
        return optuna_api.storage_of(study).set_trial_state_values(optuna_api.trial_id(trial), state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def process_owner() -> dict[str, Any]:
    """This process, as recorded with each trial it runs: host, pid and a start stamp (pids are reused)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_stamp(os.getpid())}


def owner_gone(owner: dict[str, Any] | None) -> bool:
    """Whether ``owner`` (``process_owner()`` of a trial) ran on this machine and that process has ended.

    Another host's process cannot be seen from here (its heartbeat decides); without ``/proc`` nothing is
    known either way (False)."""
    if not owner or owner.get("host") != socket.gethostname() or not owner.get("start"):
        return False
    return _start_stamp(int(owner["pid"])) != owner["start"]


def _start_stamp(pid: int) -> str | None:
    """Boot id and start time of a live process (``/proc``), None if it has ended (a zombie has ended too)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else f"{boot}:{fields[19]}"


def continue_unfinished(study: optuna.Study) -> None:
    """Queue a continuation of every interrupted trial that has none yet (the sweep was stopped)."""
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get(ATTR_CONTINUES) for t in trials}
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.user_attrs.get(ATTR_INTERRUPTED) and trial.number not in continued:
            enqueue_continuation(study, trial)


def enqueue_continuation(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial``'s parameters again, to resume from its last checkpoint if it wrote one.

    The queued trial is the next that ``study.ask`` hands out, in this process or another worker.
    """
    attrs: dict[str, Any] = {ATTR_CONTINUES: trial.number}
    if trial.user_attrs.get(ATTR_SEED_VALUES):  # the seeds it finished are not run again
        attrs[ATTR_SEED_VALUES] = trial.user_attrs[ATTR_SEED_VALUES]
    run_dir = trial.user_attrs.get(ATTR_RUN_DIR)
    last = Path(run_dir) / "checkpoints" / "last.pt" if run_dir else None
    if last is not None and last.is_file():
        attrs[ATTR_CHECKPOINT] = str(last)
        attrs[ATTR_CHECKPOINT_SEED] = trial.user_attrs.get(ATTR_RUN_SEED)
    study.enqueue_trial(dict(trial.params), user_attrs=attrs, skip_if_exists=False)
    log.info("trial #%d of %s queued to continue%s", trial.number, study.study_name,
             f" from {attrs[ATTR_CHECKPOINT]}" if ATTR_CHECKPOINT in attrs else " (no checkpoint: from the start)")


def within_budget(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """Whether ``trial``, just asked, is one of the study's first ``n_trials`` trials; else it is told FAIL
    as surplus (``mlc.surplus``) and never runs.

    Workers on one study count, then ask: two of them can both see room for the last trial. Trial
    numbers are handed out atomically by the storage, so the trials that count — finished or running,
    not surplus — with a smaller number than this one decide for every worker alike: a trial runs only
    if fewer than ``n_trials`` of them precede it, and the study ends with exactly ``n_trials`` finished
    trials (unless one fails: the workers then ask again). A trial that precedes this one and is itself
    surplus but not yet marked has ``n_trials`` counted trials before it, so it changes no decision.
    """
    counted = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number
               and (t.state in FINISHED or t.state == TrialState.RUNNING) and not t.user_attrs.get(ATTR_SURPLUS)]
    if len(counted) < n_trials:
        return True
    withdraw(study, trial)
    return False


def withdraw(study: optuna.Study, trial: optuna.Trial) -> None:
    """Close a trial that was asked but will never run (``mlc.surplus``: not counted, not a failure); a queued
    continuation it took over is queued again, so that it is not lost."""
    trial.set_user_attr(ATTR_SURPLUS, True)
    storage, key = optuna_api.storage_of(study), optuna_api.trial_id(trial)
    continues = storage.get_trial(key).user_attrs.get(ATTR_CONTINUES)
    study.tell(trial, state=TrialState.FAIL)
    if continues is not None:  # a queued continuation must not be lost to the race: queue it again
        frozen = storage.get_trial(key)
        attrs = {k: v for k, v in frozen.user_attrs.items() if k in CARRIED}
        study.enqueue_trial(dict(frozen.params), user_attrs=attrs, skip_if_exists=False)


def retire_queued(study: optuna.Study, n_trials: int) -> None:
    """Retire the queued continuations of a study that is already complete, as surplus: one lost a race to
    a fresh trial (``within_budget`` queues it again) and would otherwise stay WAITING for good."""
    finished = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(ATTR_SURPLUS))
    if finished < n_trials:
        return
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()  # hands out a waiting trial first
        trial.set_user_attr(ATTR_SURPLUS, True)
        study.tell(trial, state=TrialState.FAIL)


def stale_trial_numbers(study: optuna.Study) -> list[int]:
    """Numbers of the RUNNING trials whose heartbeat is older than the grace period (read only)."""
    ids = optuna_api.stale_trial_ids(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t.number for t in running if ids and optuna_api.trial_id(t) in ids]


def kill_mlflow_runs(trial: FrozenTrial, reason: str) -> None:
    """End the MLflow run of a dead trial, and its dead sweep's parent run, as KILLED."""
    uri = trial.user_attrs.get(ATTR_TRACKING_URI)
    if not uri:
        return
    try:
        from mlflow.tracking import MlflowClient

        quiet_mlflow_logs()
        client = MlflowClient(uri)
        where = (f"tags.`{ATTR_SWEEP_DIR}` = '{trial.user_attrs.get(ATTR_SWEEP_DIR)}' and "
                 f"tags.`{ATTR_JOB_NUM}` = '{trial.user_attrs.get(ATTR_JOB_NUM)}' and attributes.status = 'RUNNING'")
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, filter_string=where) if experiments else []
        parent = trial.user_attrs.get(ATTR_PARENT_RUN)
        if parent and client.get_run(parent).info.status == "RUNNING":
            runs.append(client.get_run(parent))
        for run in runs:
            client.set_tag(run.info.run_id, "mlc.error", reason[:5000])
            client.set_terminated(run.info.run_id, status="KILLED")
            log.info("MLflow run %s (%s) ended KILLED", run.info.run_id, run.info.run_name)
    except Exception as err:  # tracking is secondary: the Optuna side is already consistent
        log.warning("could not end the MLflow runs of stale trial #%d: %s", trial.number,
                    str(err).splitlines()[0] if str(err) else type(err).__name__)


class TrialSeededSampler(BaseSampler):
    """Delegates to ``make(seed + trial.number)``: reproducible per trial, never the same stream twice.

    Optuna's model-based samplers (TPE, random, QMC, CMA-ES) read the study's history from the storage
    at each trial and keep at most their seed in the object, so a fresh instance per trial proposes
    what the long-lived one would, except for the random stream.
    """

    def __init__(self, make: Callable[[int | None], BaseSampler], seed: int | None):
        self.make, self.seed = make, seed
        self._cache: dict[int, BaseSampler] = {}

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number not in self._cache:
            if len(self._cache) > 8:  # trials finish in order; keep the few that may still call back
                self._cache.pop(min(self._cache))
            self._cache[trial.number] = self.make(None if self.seed is None else self.seed + trial.number)
        return self._cache[trial.number]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to reseed: each trial's seed is derived from its number."""


def fingerprint(task_config: dict[str, Any], exclude: Sequence[str], search_space: dict[str, str],
                direction: str, seeds_per_trial: int = 1,
                objectives: Sequence[tuple[str, str]] = ()) -> tuple[str, dict[str, Any]]:
    """(short hash, flat config) of what every trial of a study shares. A trial scored over K > 1 seeds
    is another objective (the mean of K runs): another study; so is a multi-objective search."""
    def excluded(key: str) -> bool:
        return key.endswith("cache_dir") or any(key == p or key.startswith(p + ".")
                                                for p in (*NOT_IN_FINGERPRINT, *exclude))

    flat = {k: v for k, v in flatten(task_config).items() if not excluded(k)}
    flat |= {f"search:{k}": str(v) for k, v in sorted(search_space.items())} | {"direction": direction}
    if seeds_per_trial > 1:  # (one seed adds nothing: the names of studies run before K existed stay)
        flat["seeds_per_trial"] = int(seeds_per_trial)
    if objectives:  # (the monitor still picks each run's best epoch, at which the objectives are read)
        flat["objectives"] = [f"{name}:{direction}" for name, direction in objectives]
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return digest, flat


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    key = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    return f"{key}={old.get(key, '<unset>')!r} there, {new.get(key, '<unset>')!r} now"
