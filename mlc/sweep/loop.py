"""``SweepLoop``: one Optuna study per point of a grid, run by an ask-and-tell loop on a launch callable.

The question "which λ is best for *this* negative ratio?" is one optimisation per ratio, not one
joint search (a joint search would spend its trials on the easiest ratio). The loop goes over the
grid (``study_grid: {dataset: {negative_ratio: [0.5, 0.8]}}``, nested like the config) and, for each
point, asks Optuna for trials and runs them through ``launch`` (``hydra_plugins/mlc_sweepers``: Hydra's
launcher), with the grid value as a fixed override. Trials of all studies share one sweep directory
(numbered on) and one MLflow parent run. At the end it writes ``sweep_summary.{md,json,png}`` and prints the table.

What it guarantees (Hydra's stock Optuna sweeper does none of it):

- **Re-running continues.** The default study name is stable: ``<preset>@<fingerprint>[<grid point>]``,
  the fingerprint hashing what the trials share (``mlc.sweep.study.fingerprint``); ``n_trials`` is the
  number of finished trials each study should reach, so the same command run again adds only what
  is missing (nothing, once done). A named study that was run with a different config is refused.
- **No repeated proposals**: each trial's sampler is seeded by its trial number (``TrialSeededSampler``).
- **Dead trials do not stay RUNNING**: heartbeats while a trial runs; at the start of each study,
  trials whose process died are marked FAIL and their MLflow runs KILLED.
- **Ctrl-C / SIGTERM stops the sweep**: the trial is recorded as interrupted (FAIL, with its
  checkpoint), the summary is written, the exit code is 130, and the same command resumes — the
  interrupted trial continues from its checkpoint.
- **A study whose every trial fails** is reported as failed; the other studies still run; exit code 1.

With ``hydra.sweeper.objectives`` (two or more validation metrics) each study is multi-objective: a trial's
values are its run's metrics at its best epoch (the mean over its seeds with K > 1), and the summary lists each
study's Pareto front instead of one best trial.

What studies a sweep makes (names, phases, search space) is planned by ``mlc.sweep.plan``; this runs the plan.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from mlc.errors import MlcError, TrainingInterrupted, TrialPruned
from mlc.sweep import optuna_api
from mlc.sweep import plan as planner
from mlc.sweep.parent import ParentLog, parent_run_id
from mlc.sweep.pruning import build_pruner
from mlc.sweep.study import (
    ATTR_CHECKPOINT,
    ATTR_CHECKPOINT_SEED,
    ATTR_ERROR,
    ATTR_INTERRUPTED,
    ATTR_JOB_NUM,
    ATTR_OBJECTIVES,
    ATTR_OWNER,
    ATTR_PARENT_RUN,
    ATTR_RUN_DIR,
    ATTR_RUN_DIRS,
    ATTR_RUN_SEED,
    ATTR_SEED_VALUES,
    ATTR_SURPLUS,
    ATTR_SWEEP_DIR,
    ATTR_TRACKING_URI,
    FINISHED,
    TrialSeededSampler,
    continue_unfinished,
    heartbeat,
    open_storage,
    process_owner,
    reclaim,
    retire_queued,
    withdraw,
    within_budget,
)
from mlc.sweep.summary import StudyRef, write_summary
from mlc.sweep.trial import TrialSpec

log = logging.getLogger("mlc.sweep")

Launch = Callable[[list[tuple[str, ...]], int], Sequence[JobReturn]]  # (overrides per job, initial_job_idx)


class SweepLoop:
    """The sweep of a composed ``config`` (its ``hydra.sweeper`` and ``hydra.sweep.dir``), its trials run by
    ``launch``; the fields are the sweeper config's, ``url`` its storage (None: in memory), ``pruner`` a dict."""

    def __init__(self, config: DictConfig, launch: Launch, *, url: str | None, n_trials: int, direction: str,
                 sampler: Any, pruner: dict | None = None, n_jobs: int = 1, heartbeat_interval: int = 10,
                 grace_period: int = 60, max_failure_rate: float = 1.0, seeds_per_trial: int = 1,
                 objectives: Sequence[tuple[str, str]] = ()) -> None:
        self.config, self.launch, self.url, self.direction, self.sampler_cfg = config, launch, url, direction, sampler
        self.n_trials, self.n_jobs, self.pruner, self.seeds_per_trial = n_trials, n_jobs, pruner, seeds_per_trial
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.max_failure_rate, self.phase_overrides, self._parent = max_failure_rate, {}, None
        self.objectives = list(objectives)  # [(val metric, direction)]: a multi-objective search (plan.objectives)

    def _parent_log(self) -> Any:
        """The multirun's parent MLflow run (opened on the first finished trial; a no-op without tracking)."""
        if self._parent is None:
            self._parent = ParentLog(self.config)
        return self._parent

    def run(self, arguments: list[str]) -> None:
        """Run the sweep of ``arguments`` (the command line's task overrides): what ``Sweeper.sweep`` does."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # mlc logs each study and trial itself
        # Optuna warns that heartbeats are meant for Study.optimize; this loop records them itself.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.optuna_storage = open_storage(self.url, heartbeat_interval=self.heartbeat_interval,
                                           grace_period=self.grace_period)
        plans, distributions, fixed_args = planner.plan_sweep(self.config, arguments)
        studies = self._plan(plans)  # every study checked before the first trial
        previous = _stop_on_sigterm()
        interrupted: str | None = None
        try:
            for number, (ref, study) in enumerate(studies, start=1):
                log.info("study %d/%d: %s", number, len(studies), ref.name)
                interrupted = self._run_study(study, ref, distributions, fixed_args)
                if interrupted:
                    break
            interrupted = interrupted or self._settle(studies, distributions, fixed_args)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM between trials: the summary and the callbacks still run
            interrupted = "interrupted between trials"
        finally:
            with suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)
        monitor = str(OmegaConf.select(self.config, "trainer.monitor", default="objective"))
        tracking = bool(OmegaConf.select(self.config, "tracking.enabled", default=False))
        table, _, _ = write_summary([ref for ref, _ in studies], storage=self.optuna_storage,
                                    storage_url=self.url or "in memory (this process only; storage: null)",
                                    sweep_dir=sweep_dir, monitor=monitor, direction=self.direction,
                                    searched=list(distributions), tracking=tracking,
                                    max_failure_rate=float(self.max_failure_rate), interrupted=interrupted,
                                    objectives=self.objectives)
        print(table, flush=True)  # its recorded outcome is the exit code (ExitWithOutcome)

    def _settle(self, studies: list, distributions: dict, fixed_args: list[str]) -> str | None:
        """After the first pass: run what dead processes left, and wait while other processes' trials run.

        The sweep ends when its studies are complete, not when this process has nothing left to ask: a
        trial of a process that died (on this machine: at once; elsewhere: once its heartbeat is older than
        the grace period) is taken over and continued here, and one that is alive elsewhere (another
        worker or machine) is waited for, with a countdown. Returns the reason if interrupted, else None.
        """
        started, said = time.monotonic(), -math.inf
        try:
            while True:
                for ref, study in studies:
                    if reclaim(study):  # continuations queued: run them now
                        reason = self._run_study(study, ref, distributions, fixed_args)
                        if reason:
                            return reason
                    retire_queued(study, self.n_trials)
                elsewhere = [(ref, t) for ref, study in studies if _counts(study)["finished"] < self.n_trials
                             for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
                if not elsewhere:
                    return None
                owners = [t.user_attrs.get(ATTR_OWNER) or {} for _, t in elsewhere]
                where = ", ".join(f"#{t.number} of {ref.name} (host {o.get('host', '?')}, pid {o.get('pid', '?')})"
                                  for (ref, t), o in zip(elsewhere, owners, strict=True))
                if self.url is None or (not hasattr(self.optuna_storage, "record_heartbeat")
                                        and any(o.get("host") != socket.gethostname() for o in owners)):
                    log.warning("  %d trial(s) still running elsewhere: %s; this storage has no heartbeats, so "
                                "only their own machine can tell whether they died: run the same command there",
                                len(elsewhere), where)
                    return None
                waited = time.monotonic() - started
                if waited - said >= 30:
                    left = self.grace_period - waited
                    log.info("  waiting for %d trial(s) running elsewhere: %s; %s (Ctrl-C stops waiting; the same "
                             "command continues)", len(elsewhere), where,
                             f"if a process is dead, its trial is taken over within {left:.0f} s" if left > 0
                             else "their heartbeats are alive: waiting for them to finish")
                    said = waited
                time.sleep(min(self.heartbeat_interval, 5))
        except KeyboardInterrupt:
            return "interrupted while waiting for trials running elsewhere"

    def _plan(self, plans: Any) -> list[tuple[Any, Any]]:
        """(StudyRef, optuna.Study) per planned study, created or loaded (the preflight checked their configs)."""
        seed, planned = self.sampler_cfg.get("seed"), []
        self.phase_overrides = {p.name: p.overrides for p in plans}  # given to each trial of the study
        for plan in plans:
            sampler = TrialSeededSampler(lambda s: instantiate(self.sampler_cfg, **({} if s is None else {"seed": s})),
                                         seed)
            directions = [d for _, d in self.objectives] or [self.direction]
            study = optuna.create_study(study_name=plan.name, storage=self.optuna_storage, sampler=sampler,
                                        pruner=build_pruner(self.pruner), directions=directions,
                                        load_if_exists=True)
            if study.user_attrs.get("mlc.config") is None:
                study.set_user_attr("mlc.config", plan.config)
                if self.objectives:  # their names, for summaries read from the storage alone (mlc studies)
                    study.set_user_attr(ATTR_OBJECTIVES, [name for name, _ in self.objectives])
                study.set_user_attr("mlc.grace_period", self.grace_period)
            planned.append((StudyRef(name=plan.name, fixed=plan.fixed, n_trials=self.n_trials), study))
        return planned

    def _run_study(self, study: Any, ref: Any, distributions: dict, fixed_args: list[str]) -> str | None:
        """Run the trials ``study`` still needs; the reason if the sweep was interrupted, else None."""
        fixed_args = [*fixed_args, *self.phase_overrides.get(ref.name, ())]  # its phase's own (mlc.sweep.plan)
        reclaim(study)  # trials of dead processes (e.g. a kill -9 of the last run), queued to continue
        continue_unfinished(study)
        counts = _counts(study)
        budget = self.n_trials - counts["finished"] - counts["running"]
        if budget <= 0:
            log.info("  %d/%d trials finished%s: nothing to run", counts["finished"], self.n_trials,
                     f", {counts['running']} running elsewhere" if counts["running"] else "")
            return None
        if counts["finished"] or counts["failed"]:
            log.info("  continuing: %d/%d trials finished, %d failed before; running up to %d more",
                     counts["finished"], self.n_trials, counts["failed"], budget)
        while budget > 0:
            live = _counts(study)  # other workers may be filling the same study
            room = min(budget, int(self.n_jobs), self.n_trials - live["finished"] - live["running"])
            if room <= 0:
                break
            with _signals_deferred() as received:  # a trial in the storage is a trial in hand, or withdrawn
                asked = [study.ask(distributions) for _ in range(room)]
                if received:  # Ctrl-C or SIGTERM while proposing: these never ran (raised when the block ends)
                    for trial in asked:
                        withdraw(study, trial)
                    asked = []
            trials = [t for t in asked if within_budget(study, t, self.n_trials)]  # another worker may be faster
            budget -= room
            if not trials:
                log.info("  another worker took the last trial of %s", ref.name)
                break
            reason = self._run_trials(study, trials, ref, fixed_args)
            if reason:
                return reason
        final = _counts(study)
        log.info("  %s: %d/%d finished, %d failed", ref.name, final["finished"], self.n_trials, final["failed"])
        return None

    def _run_trials(self, study: Any, trials: list, ref: Any, fixed_args: list[str]) -> str | None:
        """Run ``trials`` (asked together) to their end; the reason if the sweep was interrupted, else None.

        With ``seeds_per_trial`` K > 1 a trial is K runs, one per seed, in rounds: each round runs the next
        seed of every trial still open, reports each run's value to its trial as instance k (Optuna's
        intermediate value at step k), then asks the study's pruner whether the trial should stop
        (``hydra/sweeper/pruner=wilcoxon``: significantly worse than the best so far). A trial's value is the
        mean over its seeds. Each seed's value is kept on the trial, so a continued trial runs only the
        seeds it lacks (and the interrupted one from its checkpoint).
        """
        seeds = self._seeds()
        values = {t.number: {int(s): float(v) for s, v in (t.user_attrs.get(ATTR_SEED_VALUES) or {}).items()}
                  for t in trials}
        open_trials, interrupted = {t.number: t for t in trials}, None
        for step, seed in enumerate(seeds):  # a continued trial's seeds done before are its first instances
            for trial in trials:
                if seed in values[trial.number] and not self.objectives:
                    trial.report(values[trial.number][seed], step=step)
        for step, seed in enumerate(seeds or (None,)):
            todo = [t for t in open_trials.values() if seed is None or seed not in values[t.number]]
            results, interrupted = self._launch(study, todo, ref, fixed_args, seed) if todo else ([], None)
            for trial, result in results:
                if isinstance(result, float | list):
                    if seed is None:
                        study.tell(trial, result)
                        log.info("  trial #%d: %s", trial.number, self._said(result))
                        self._chart(ref, study, trial.number, result)
                        open_trials.pop(trial.number)
                        continue
                    values[trial.number][seed] = result
                    trial.set_user_attr(ATTR_SEED_VALUES, {str(s): v for s, v in values[trial.number].items()})
                    if not self.objectives:  # (Optuna keeps no intermediate values of a multi-objective trial)
                        trial.report(result, step=step)
                    log.info("  trial #%d, seed %d: %s", trial.number, seed, self._said(result))
                    continue
                open_trials.pop(trial.number)
                if isinstance(result, TrialPruned):  # stopped by the pruner at an epoch boundary: counts
                    study.tell(trial, state=TrialState.PRUNED)
                    log.info("  trial #%d: %s", trial.number, result)
                elif isinstance(result, TrainingInterrupted):  # "interrupted (SIGINT) at epoch 2, ..."
                    interrupted = interrupted or f"{str(result).split(';')[0]} in trial #{trial.number} of {ref.name}"
                    trial.set_user_attr(ATTR_INTERRUPTED, True)
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    message = str(result).splitlines()[0] if str(result) else type(result).__name__
                    log.warning("  trial #%d failed: %s", trial.number, message)
                    trial.set_user_attr(ATTR_ERROR, message[:1000])
                    study.tell(trial, state=TrialState.FAIL)
            if interrupted:  # the open trials' seeds so far are kept: their continuations run the rest
                for trial in open_trials.values():
                    trial.set_user_attr(ATTR_INTERRUPTED, True)
                    study.tell(trial, state=TrialState.FAIL)
                return interrupted
            if seed is not None and step + 1 < len(seeds) and not self.objectives:
                for number, trial in list(open_trials.items()):
                    if trial.should_prune():
                        study.tell(trial, state=TrialState.PRUNED)
                        log.info("  trial #%d pruned by %s after %d of %d seeds", number,
                                 type(study.pruner).__name__, step + 1, len(seeds))
                        open_trials.pop(number)
        for trial in open_trials.values():  # K > 1: the mean over its seeds (of each objective)
            value = _mean(list(values[trial.number].values()))
            study.tell(trial, value)
            log.info("  trial #%d: %s (mean of %d seeds)", trial.number, self._said(value), len(values[trial.number]))
            self._chart(ref, study, trial.number, value)
        return None

    def _said(self, value: float | list[float]) -> str:
        """A trial's value for the log: ``val/f1_macro_hm_neg = 0.8123``, or each objective's."""
        if isinstance(value, list):
            return ", ".join(f"{name} = {v:.4f}" for (name, _), v in zip(self.objectives, value, strict=True))
        return f"{self.config.trainer.monitor} = {value:.4f}"

    def _chart(self, ref: Any, study: Any, number: int, value: float | list[float]) -> None:
        """The trial's value on the parent run's chart (a multi-objective trial has no one value to chart)."""
        if not isinstance(value, list):
            self._parent_log().trial(ref.fixed, number, value, _best_value(study))

    def _seeds(self) -> tuple[int, ...]:
        """The seeds of every trial with ``seeds_per_trial`` K > 1: the config's seed and the K - 1 after it."""
        k = int(self.seeds_per_trial)
        return tuple(int(self.config.seed) + i for i in range(k)) if k > 1 else ()

    def _launch(self, study: Any, trials: list, ref: Any, fixed_args: list[str], seed: int | None
                ) -> tuple[list[tuple[Any, float | BaseException]], str | None]:
        """One job per trial (with ``seed``, or the config's), launched together: (trial, value or error) for
        each, and the reason if interrupted by a second Ctrl-C (no results then: the trials are still open)."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        first_job = _claim_job_numbers(sweep_dir, len(trials))
        tracking_uri = (OmegaConf.select(self.config, "tracking.tracking_uri")
                        if OmegaConf.select(self.config, "tracking.enabled", default=False) else None)
        overrides, parent, seeds, run_dirs = [], parent_run_id(sweep_dir), self._seeds(), {}
        for offset, trial in enumerate(trials):
            # an interrupted or dead run is continued from its checkpoint (in its own run dir): the trial's
            # own, or with K seeds, the one of the seed it was running
            checkpoint = trial.user_attrs.get(ATTR_CHECKPOINT)
            if checkpoint and trial.user_attrs.get(ATTR_CHECKPOINT_SEED) != seed:
                checkpoint = None
            own_seed = int({"seed": self.config.seed, **ref.fixed, **trial.params}["seed"]) if seed is None else seed
            spec = TrialSpec(study=study.study_name, number=trial.number, storage=self.url, params=dict(trial.params),
                             fixed=dict(ref.fixed), resume=checkpoint, pruner=self.pruner, parent_run_id=parent,
                             seeds=seeds or (own_seed,), seed=seed)
            run_dir = Path(checkpoint).parent.parent if checkpoint else sweep_dir / str(first_job + offset)
            run_dirs[trial.number] = run_dir
            attrs = {ATTR_SWEEP_DIR: str(sweep_dir.resolve()), ATTR_JOB_NUM: str(first_job + offset),
                     ATTR_RUN_DIR: str(run_dir.resolve()), ATTR_RUN_SEED: seed, ATTR_TRACKING_URI: tracking_uri,
                     ATTR_PARENT_RUN: parent, ATTR_OWNER: process_owner()}
            if seed is not None:  # every seed's run, so that the summary can check each one
                attrs[ATTR_RUN_DIRS] = {**(trial.user_attrs.get(ATTR_RUN_DIRS) or {}), str(seed): attrs[ATTR_RUN_DIR]}
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            overrides.append(tuple(spec.overrides(fixed_args)))
            log.info("  trial #%d (job %d)%s: %s", trial.number, first_job + offset,
                     "" if seed is None else f", seed {seed}",
                     " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()))
        results: list[tuple[Any, float | BaseException]] = []
        try:
            with ExitStack() as beats:
                for trial in trials:
                    beats.enter_context(heartbeat(optuna_api.storage_of(study), trial))
                returns = self.launch(overrides, initial_job_idx=first_job)
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop: the caller closes the trials
            return [], f"interrupted (KeyboardInterrupt) in trial #{trials[0].number} of {ref.name}"
        for trial, ret in zip(trials, returns, strict=True):
            try:
                if ret.status != JobStatus.COMPLETED:  # the task's exception, kept by the launcher
                    raise optuna_api.job_error(ret)
                value = float(ret.return_value)
                if not math.isfinite(value):
                    raise ValueError(f"the trial returned {value}")
                results.append((trial, objective_values(run_dirs[trial.number], self.objectives)
                                if self.objectives else value))
            except Exception as err:
                results.append((trial, err))
        return results, None


def objective_values(run_dir: Path, objectives: Sequence[tuple[str, str]]) -> list[float]:
    """The objectives of a multi-objective trial: its run's validation metrics at its best epoch (the one
    ``trainer.monitor`` chose, whose checkpoint is the run's result), from the run's ``result.json``."""
    try:
        result = json.loads((Path(run_dir) / "result.json").read_text())
        record = next(r for r in result["history"] if r.get("epoch") == result["best_epoch"])
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as err:
        raise MlcError(f"cannot read the objectives from {run_dir}/result.json ({type(err).__name__}: {err})") from None
    missing = [name for name, _ in objectives if name not in record]
    if missing:
        raise MlcError(f"hydra.sweeper.objectives: the run has no {', '.join(missing)} (its validation metrics: "
                       f"{', '.join(k for k in record if k.startswith(('val/', 'val_ema/')))})")
    values = [float(record[name]) for name, _ in objectives]
    if not all(map(math.isfinite, values)):
        raise MlcError(f"hydra.sweeper.objectives: not finite at the best epoch: {values}")
    return values


def _mean(values: list) -> float | list[float]:
    """The mean over a trial's seeds: of one value each, or of each objective."""
    if values and isinstance(values[0], list):
        return [sum(v[i] for v in values) / len(values) for i in range(len(values[0]))]
    return sum(values) / len(values)


def _counts(study: Any) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(ATTR_SURPLUS)]
    return {"finished": sum(s in FINISHED for s in states), "running": states.count(TrialState.RUNNING),
            "failed": states.count(TrialState.FAIL)}


def _best_value(study: Any) -> float | None:
    try:
        return float(study.best_value)
    except (ValueError, RuntimeError):  # no complete trial yet (or several objectives: no one best)
        return None


def _claim_job_numbers(sweep_dir: Path, count: int) -> int:
    """The first of ``count`` consecutive job numbers whose folders this process created: ``mkdir`` is
    atomic, so workers sharing a sweep directory never get the same trial folder."""
    while True:
        first, made = _next_job_number(sweep_dir), []
        try:
            for k in range(count):
                (sweep_dir / str(first + k)).mkdir()
                made.append(sweep_dir / str(first + k))
            return first
        except FileExistsError:  # another worker claimed it first: release ours and look again
            for folder in made:
                folder.rmdir()


def _next_job_number(sweep_dir: Path) -> int:
    """Trials are numbered on after those already in the sweep directory (a re-used ``hydra.sweep.dir``
    never writes into an earlier trial's folder)."""
    taken = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(taken, default=-1) + 1


@contextmanager
def _signals_deferred() -> Iterator[list[str]]:
    """Hold SIGINT and SIGTERM while the block runs (the list names those received), then raise
    KeyboardInterrupt. Asking Optuna for a trial writes a RUNNING trial before it proposes parameters: an
    interrupt in between would leave a trial that no process owns and that a re-run would wait for."""
    received: list[str] = []

    def hold(signum, _frame):
        received.append(signal.Signals(signum).name)

    try:
        previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals cannot arrive here anyway
        yield received
        return
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise KeyboardInterrupt(received[0])


def _stop_on_sigterm() -> Any:
    """SIGTERM between trials stops the sweep like Ctrl-C (the trainer handles it during training)."""
    def stop(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        return signal.SIG_DFL
