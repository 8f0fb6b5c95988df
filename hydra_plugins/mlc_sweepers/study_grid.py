"""``StudyGridSweeper``: one Optuna study per point of a grid, run by an ask-and-tell loop on Hydra's launcher.

The question "which λ is best for *this* negative ratio?" is one optimisation per ratio, not one
joint search (a joint search would spend its trials on the easiest ratio). This sweeper loops over
the grid (``study_grid: {dataset: {negative_ratio: [0.5, 0.8]}}``, nested like the config) and, for
each point, asks Optuna for trials and runs them through Hydra's configured launcher, with the grid
value as a fixed override. Trials of all studies share one sweep directory (numbered on) and one
MLflow parent run. At the end it writes ``sweep_summary.{md,json,png}`` and prints the table.

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

Before anything starts (``preflight``, run by mlc's preflight callback ahead of the MLflow parent
run) it checks that the search space fits the config: each grid value and each bound of every
searched parameter is validated like a command-line value (so ``interval(-0.1, 0.5)`` for λ fails at
once, naming ``loss.lam``), intervals must be well-formed for Optuna, the storage must open, a
named study must hold this config, and a ``direction`` set explicitly must agree with ``trainer.monitor_mode``.

The study's direction comes from ``trainer.monitor_mode`` (``max`` -> maximize, ``min`` -> minimize):
one source of truth. ``hydra.sweeper.direction`` is ``null`` (derived) by default; set, it is only checked.
What studies a sweep makes (names, phases, search space) is planned by ``mlc.sweep.plan``; this runs the plan.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import warnings
from contextlib import suppress
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mlc.errors import ConfigError, TrainingInterrupted, TrialPruned, is_integer, is_real
from mlc.flat import flatten
from mlc.stores import check_storage_url, journal_file, sqlite_file
from mlc.sweep import plan as planner
from mlc.sweep.parent import ParentLog, parent_run_id
from mlc.sweep.summary import StudyRef, write_summary
from mlc.sweep.trial import TrialSpec

log = logging.getLogger("mlc.sweep")


class StudyGridSweeper(Sweeper):
    def __init__(self, study_grid: DictConfig, sampler: DictConfig, storage: str | None,
                 study_name: str | None, n_trials: int, direction: str | None = None, n_jobs: int = 1,
                 max_failure_rate: float = 1.0, params: DictConfig | None = None, heartbeat_interval: int = 10,
                 grace_period: int = 60, pruner: DictConfig | None = None, phases: Any = None,
                 seeds_per_trial: int = 1) -> None:
        self.study_grid, self.phases = flatten(study_grid), phases  # see mlc.sweep.plan.plan_sweep
        self.sampler_cfg, self.storage = sampler, storage
        self.direction_set = direction  # as configured: None = derived from trainer.monitor_mode
        self.direction = "" if direction is None else str(direction)  # the study's, once setup/preflight saw the config
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, n_jobs
        self.max_failure_rate = max_failure_rate
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.params = flatten(params)
        self.pruner = OmegaConf.to_container(pruner, resolve=True) if pruner else None
        self.seeds_per_trial = seeds_per_trial
        self.config: DictConfig | None = None
        self._parent: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.direction = planner.study_direction(config, self.direction_set)
        in_process = str(OmegaConf.select(config, "hydra.launcher._target_", default="")).startswith("hydra._internal")
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context,
            task_function=task_function if in_process else _importable(task_function))

    @property
    def _url(self) -> str | None:
        return planner.storage_url(self.storage)

    def _parent_log(self) -> Any:
        """The multirun's parent MLflow run (opened on the first finished trial; a no-op without tracking)."""
        if self._parent is None:
            self._parent = ParentLog(self.config)
        return self._parent

    @classmethod
    def preflight(cls, config: DictConfig) -> None:
        """Validate the sweep against the config before anything starts (from the PreflightCheck callback).

        Raises ``ConfigError`` for a bad sweeper field, a direction set explicitly that disagrees with
        ``trainer.monitor_mode``, a grid key that is not in the config, a malformed storage URL, a
        search space Optuna rejects (reversed bounds, log scale from 0), a malformed phase, any grid value,
        search-space bound or phase override that the config would reject, a storage that cannot be opened,
        or a study named explicitly that was run with another config.
        """
        sweeper = cls(**{k: v for k, v in config.hydra.sweeper.items() if not k.startswith("_")})
        sweeper._check(config)
        arguments, grids = list(config.hydra.overrides.task), planner.phases(sweeper.study_grid, sweeper.phases)
        sweeper._check_values(config, [(k, v) for grid, _ in grids for k, vs in grid.items() for v in vs],
                              "hydra.sweeper.study_grid")
        sweeper._check_values(config, [e for k, s in sweeper.params.items()
                                       for e in planner.extremes(f"{k}={s}", plain=True)], "hydra.sweeper.params.{key}")
        sweeper._check_values(config, [e for arg in arguments for e in planner.extremes(arg)],
                              "the command-line search space of {key}")
        studies = planner.plan_sweep(config, arguments).studies  # composes each phase's config
        sweeper._check_values(config, [(o.key_or_group, o.value()) for _, extra in grids
                                       for o in planner.parse(list(extra))], "hydra.sweeper.phases")
        sweeper._check_studies(studies)

    # -- the sweep ----------------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        from mlc.sweep.study import open_storage  # deferred: loads Optuna; Hydra imports this plugin in every run

        assert self.config is not None
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # mlc logs each study and trial itself
        # Optuna warns that heartbeats are meant for Study.optimize; this loop records them itself.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.optuna_storage = open_storage(self._url, heartbeat_interval=self.heartbeat_interval,
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
                                    storage_url=self._url or "in memory (this process only; storage: null)",
                                    sweep_dir=sweep_dir, monitor=monitor, direction=self.direction,
                                    searched=list(distributions), tracking=tracking,
                                    max_failure_rate=float(self.max_failure_rate), interrupted=interrupted)
        print(table, flush=True)  # its recorded outcome is the exit code (ExitWithOutcome)

    def _settle(self, studies: list, distributions: dict, fixed_args: list[str]) -> str | None:
        """After the first pass: run what dead processes left, and wait while other processes' trials run.

        The sweep ends when its studies are complete, not when this process has nothing left to ask: a
        trial of a process that died (on this machine: at once; elsewhere: once its heartbeat is older than
        the grace period) is taken over and continued here, and one that is alive elsewhere (another
        worker or machine) is waited for, with a countdown. Returns the reason if interrupted, else None.
        """
        import time

        from optuna.trial import TrialState

        # deferred: mlc.sweep.study loads Optuna; Hydra imports this plugin in every run
        from mlc.sweep.study import ATTR_OWNER, reclaim, retire_queued

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
                if self._url is None or (not hasattr(self.optuna_storage, "record_heartbeat")
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

    def _check_studies(self, studies: Any) -> None:
        """Refuse, before anything is created, a named study that was run with another config (and a
        storage that cannot be opened). A SQLite file that does not exist yet holds no study."""
        import optuna

        # deferred: mlc.sweep.study loads Optuna; Hydra imports this plugin in every run
        from mlc.sweep.study import first_difference, open_storage

        if self._url is None:
            return  # in memory: a new, empty storage
        path = sqlite_file(self._url) or journal_file(self._url)
        if path is not None and not path.is_file():
            return
        storage = open_storage(self._url, heartbeat_interval=None, grace_period=None)
        recorded = {s.study_name: s.user_attrs.get("mlc.config") for s in optuna.get_all_study_summaries(storage)}
        for study in studies:  # mlc.sweep.plan.StudyPlan
            if recorded.get(study.name) not in (None, study.config):
                raise ConfigError("hydra.sweeper.study_name", study.name, f"this study was run with another config "
                                  f"({first_difference(recorded[study.name], study.config)}); leave study_name "
                                  "unset for a name derived from the config, or pick a new one")

    def _plan(self, plans: Any) -> list[tuple[Any, Any]]:
        """(StudyRef, optuna.Study) per planned study, created or loaded (the preflight checked their configs)."""
        import optuna

        from mlc.sweep.pruning import build_pruner  # deferred: loads torch; Hydra imports this plugin in every run
        from mlc.sweep.study import TrialSeededSampler  # deferred: loads Optuna; Hydra imports this plugin in every run

        seed, planned = self.sampler_cfg.get("seed"), []
        self.phase_overrides = {p.name: p.overrides for p in plans}  # given to each trial of the study
        for plan in plans:
            sampler = TrialSeededSampler(lambda s: instantiate(self.sampler_cfg, **({} if s is None else {"seed": s})),
                                         seed)
            study = optuna.create_study(study_name=plan.name, storage=self.optuna_storage, sampler=sampler,
                                        pruner=build_pruner(self.pruner), direction=self.direction,
                                        load_if_exists=True)
            if study.user_attrs.get("mlc.config") is None:
                study.set_user_attr("mlc.config", plan.config)
                study.set_user_attr("mlc.grace_period", self.grace_period)
            planned.append((StudyRef(name=plan.name, fixed=plan.fixed, n_trials=self.n_trials), study))
        return planned

    def _run_study(self, study: Any, ref: Any, distributions: dict, fixed_args: list[str]) -> str | None:
        """Run the trials ``study`` still needs; the reason if the sweep was interrupted, else None."""
        # deferred: mlc.sweep.study loads Optuna; Hydra imports this plugin in every run
        from mlc.sweep.study import continue_unfinished, reclaim, within_budget

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
            asked = [study.ask(distributions) for _ in range(room)]
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
        from optuna.trial import TrialState

        # deferred: mlc.sweep.study loads Optuna; Hydra imports this plugin in every run
        from mlc.sweep.study import ATTR_ERROR, ATTR_INTERRUPTED, ATTR_SEED_VALUES

        seeds = self._seeds()
        values = {t.number: {int(s): float(v) for s, v in (t.user_attrs.get(ATTR_SEED_VALUES) or {}).items()}
                  for t in trials}
        open_trials, interrupted = {t.number: t for t in trials}, None
        for step, seed in enumerate(seeds):  # a continued trial's seeds done before are its first instances
            for trial in trials:
                if seed in values[trial.number]:
                    trial.report(values[trial.number][seed], step=step)
        for step, seed in enumerate(seeds or (None,)):
            todo = [t for t in open_trials.values() if seed is None or seed not in values[t.number]]
            results, interrupted = self._launch(study, todo, ref, fixed_args, seed) if todo else ([], None)
            for trial, result in results:
                if isinstance(result, float):
                    if seed is None:
                        study.tell(trial, result)
                        log.info("  trial #%d: %s = %.4f", trial.number, self.config.trainer.monitor, result)
                        self._parent_log().trial(ref.fixed, trial.number, result, _best_value(study))
                        open_trials.pop(trial.number)
                        continue
                    values[trial.number][seed] = result
                    trial.set_user_attr(ATTR_SEED_VALUES, {str(s): v for s, v in values[trial.number].items()})
                    trial.report(result, step=step)
                    log.info("  trial #%d, seed %d: %s = %.4f", trial.number, seed, self.config.trainer.monitor,
                             result)
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
            if seed is not None and step + 1 < len(seeds):
                for number, trial in list(open_trials.items()):
                    if trial.should_prune():
                        study.tell(trial, state=TrialState.PRUNED)
                        log.info("  trial #%d pruned by %s after %d of %d seeds", number,
                                 type(study.pruner).__name__, step + 1, len(seeds))
                        open_trials.pop(number)
        for trial in open_trials.values():  # K > 1: the mean over its seeds
            value = sum(values[trial.number].values()) / len(values[trial.number])
            study.tell(trial, value)
            log.info("  trial #%d: %s = %.4f (mean of %d seeds)", trial.number, self.config.trainer.monitor, value,
                     len(values[trial.number]))
            self._parent_log().trial(ref.fixed, trial.number, value, _best_value(study))
        return None

    def _seeds(self) -> tuple[int, ...]:
        """The seeds of every trial with ``seeds_per_trial`` K > 1: the config's seed and the K - 1 after it."""
        k = int(self.seeds_per_trial)
        return tuple(int(self.config.seed) + i for i in range(k)) if k > 1 else ()

    def _launch(self, study: Any, trials: list, ref: Any, fixed_args: list[str], seed: int | None
                ) -> tuple[list[tuple[Any, float | BaseException]], str | None]:
        """One job per trial (with ``seed``, or the config's), launched together: (trial, value or error) for
        each, and the reason if interrupted by a second Ctrl-C (no results then: the trials are still open)."""
        from contextlib import ExitStack

        from hydra.core.utils import JobStatus

        from mlc.sweep import optuna_api  # deferred: loads Optuna; Hydra imports this plugin in every run

        # deferred: mlc.sweep.study loads Optuna; Hydra imports this plugin in every run
        from mlc.sweep.study import (
            ATTR_CHECKPOINT,
            ATTR_CHECKPOINT_SEED,
            ATTR_JOB_NUM,
            ATTR_OWNER,
            ATTR_PARENT_RUN,
            ATTR_RUN_DIR,
            ATTR_RUN_SEED,
            ATTR_SWEEP_DIR,
            ATTR_TRACKING_URI,
            heartbeat,
            process_owner,
        )

        sweep_dir = Path(self.config.hydra.sweep.dir)
        first_job = _claim_job_numbers(sweep_dir, len(trials))
        tracking_uri = (OmegaConf.select(self.config, "tracking.tracking_uri")
                        if OmegaConf.select(self.config, "tracking.enabled", default=False) else None)
        overrides, parent, seeds = [], parent_run_id(sweep_dir), self._seeds()
        for offset, trial in enumerate(trials):
            # an interrupted or dead run is continued from its checkpoint (in its own run dir): the trial's
            # own, or with K seeds, the one of the seed it was running
            checkpoint = trial.user_attrs.get(ATTR_CHECKPOINT)
            if checkpoint and trial.user_attrs.get(ATTR_CHECKPOINT_SEED) != seed:
                checkpoint = None
            own_seed = int({"seed": self.config.seed, **ref.fixed, **trial.params}["seed"]) if seed is None else seed
            spec = TrialSpec(study=study.study_name, number=trial.number, storage=self._url, params=dict(trial.params),
                             fixed=dict(ref.fixed), resume=checkpoint, pruner=self.pruner, parent_run_id=parent,
                             seeds=seeds or (own_seed,), seed=seed)
            run_dir = Path(checkpoint).parent.parent if checkpoint else sweep_dir / str(first_job + offset)
            attrs = {ATTR_SWEEP_DIR: str(sweep_dir.resolve()), ATTR_JOB_NUM: str(first_job + offset),
                     ATTR_RUN_DIR: str(run_dir.resolve()), ATTR_RUN_SEED: seed, ATTR_TRACKING_URI: tracking_uri,
                     ATTR_PARENT_RUN: parent, ATTR_OWNER: process_owner()}
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
                returns = self.launcher.launch(overrides, initial_job_idx=first_job)
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop: the caller closes the trials
            return [], f"interrupted (KeyboardInterrupt) in trial #{trials[0].number} of {ref.name}"
        for trial, ret in zip(trials, returns, strict=True):
            try:
                if ret.status != JobStatus.COMPLETED:  # the task's exception, kept by the launcher
                    raise optuna_api.job_error(ret)
                value = float(ret.return_value)
                if not math.isfinite(value):
                    raise ValueError(f"the trial returned {value}")
                results.append((trial, value))
            except Exception as err:
                results.append((trial, err))
        return results, None

    # -- checks before any trial ------------------------------------------------------------------

    def _check(self, config: DictConfig) -> None:
        self.direction = planner.study_direction(config, self.direction_set)
        grids = [grid for grid, _ in planner.phases(self.study_grid, self.phases)]  # a bad phase fails here
        clash = [a for a in config.hydra.overrides.task if any(a.split("=", 1)[0].lstrip("+~") in g for g in grids)]
        if clash:
            key, _, value = clash[0].partition("=")
            raise ConfigError(key, value, "is swept by hydra.sweeper.study_grid; change the grid instead")
        for key, values in (item for grid in grids for item in grid.items()):
            if OmegaConf.select(config, key, default="__missing__") == "__missing__":
                raise ConfigError(f"hydra.sweeper.study_grid.{key}", values, f"'{key}' is not a config key")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"hydra.sweeper.study_grid.{key}", values, "must be a non-empty list")
        for field, low in (("n_trials", 1), ("n_jobs", 1), ("heartbeat_interval", 1), ("grace_period", 1),
                           ("seeds_per_trial", 1)):
            value = getattr(self, field)
            if not is_integer(value) or value < low:
                raise ConfigError(f"hydra.sweeper.{field}", value, f"must be an integer >= {low}")
        if self.seeds_per_trial > 1:
            swept = [k for g in grids for k in g] + list(self.params) + [
                a.split("=", 1)[0].lstrip("+~") for a in config.hydra.overrides.task if "," in a or "(" in a]
            if "seed" in swept:
                raise ConfigError("hydra.sweeper.seeds_per_trial", self.seeds_per_trial,
                                  "gives each trial its seeds (seed, seed+1, ...): do not sweep seed as well")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError("hydra.sweeper.grace_period", self.grace_period,
                              f"must exceed heartbeat_interval={self.heartbeat_interval} (else live trials look dead)")
        if not is_real(self.max_failure_rate) or not 0 <= self.max_failure_rate <= 1:
            raise ConfigError("hydra.sweeper.max_failure_rate", self.max_failure_rate, "must be in [0, 1]")
        if self.study_name is not None and (not isinstance(self.study_name, str) or not self.study_name.strip()):
            raise ConfigError("hydra.sweeper.study_name", self.study_name, "must be a non-empty name, or null")
        from mlc.sweep.pruning import build_pruner  # deferred: loads torch; Hydra imports this plugin in every run

        pruner = build_pruner(self.pruner)  # an unknown pruner or a bad field fails before any trial
        if self._url is None:
            import optuna

            if not isinstance(pruner, optuna.pruners.NopPruner) and self.seeds_per_trial == 1:
                raise ConfigError("hydra.sweeper.storage", None, "pruning needs a storage the trials can reach "
                                  "(a SQLite, journal or PostgreSQL URL), not an in-memory study")
        else:
            check_storage_url(self.storage, "hydra.sweeper.storage")

    @staticmethod
    def _check_values(config: DictConfig, probes: list[tuple[str, Any]], source: str) -> None:
        """Validate the config with each (key, value) in turn, as if given on the command line."""
        from mlc.config import check_config  # deferred: loads torch; Hydra imports this plugin in every run

        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        groups = set(OmegaConf.select(config, "hydra.runtime.choices", default=None) or {})
        for key, value in probes:
            try:
                if key in groups:  # a config group (loss: [bce, focal]): the whole option, composed as a job would
                    probe = planner.compose_with(config, list(config.hydra.overrides.task), [f"{key}={value}"])
                else:
                    probe = task.copy()
                    OmegaConf.update(probe, key, value, force_add=False)
                check_config(probe)
            except ConfigError as err:
                raise ConfigError(err.key, err.value, f"{err.reason} (a value of {source.format(key=key)})") from None


def _counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    from mlc.sweep.study import ATTR_SURPLUS, FINISHED  # deferred: loads Optuna; Hydra imports this plugin in every run

    states = [t.state for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(ATTR_SURPLUS)]
    return {"finished": sum(s in FINISHED for s in states), "running": states.count(TrialState.RUNNING),
            "failed": states.count(TrialState.FAIL)}


def _importable(task_function: TaskFunction) -> TaskFunction:
    """The task function as its module's own, importable object, for a launcher that runs trials in other
    processes (joblib, submitit). Run as ``python -m mlc.cli.train``, the task is defined in ``__main__``, which
    such a worker cannot import (its ``__main__`` is the worker's own): the function travels by value, and
    whatever it hands on by name fails there, e.g. the ranks of ``trainer.nproc=N``, spawned by torch's
    elastic launcher ("attribute lookup _rank_main on __main__ failed")."""
    import importlib
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(task_function, "__module__", None) != "__main__" or spec is None or not spec.name:
        return task_function
    module = importlib.import_module(spec.name)  # the same file, imported under its own name
    own = getattr(getattr(module, task_function.__name__, None), "__wrapped__", None)  # under @hydra.main
    return own if getattr(own, "__qualname__", None) == task_function.__qualname__ else task_function


def _best_value(study: Any) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no complete trial yet
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


def _stop_on_sigterm() -> Any:
    """SIGTERM between trials stops the sweep like Ctrl-C (the trainer handles it during training)."""
    def stop(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        return signal.SIG_DFL
