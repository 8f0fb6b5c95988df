"""``StudyGridSweeper``: one Optuna study per point of a grid, run by ``mlc.sweep.loop`` (which says what it
guarantees) on Hydra's launcher. This plugin holds what is Hydra's: the config's fields, the launcher, the checks.

Before anything starts (``preflight``, run by mlc's preflight callback ahead of the MLflow parent
run) it checks that the search space fits the config: each grid value and each bound of every
searched parameter is validated like a command-line value (so ``interval(-0.1, 0.5)`` for λ fails at
once, naming ``loss.lam``), intervals must be well-formed for Optuna, the storage must open, a
named study must hold this config, and a ``direction`` set explicitly must agree with ``trainer.monitor_mode``.

The study's direction comes from ``trainer.monitor_mode`` (``max`` -> maximize, ``min`` -> minimize):
one source of truth. ``hydra.sweeper.direction`` is ``null`` (derived) by default; set, it is only checked.
"""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mlc.errors import ConfigError, is_integer, is_real
from mlc.flat import flatten
from mlc.stores import check_storage_url, journal_file, sqlite_file
from mlc.sweep import plan as planner


class StudyGridSweeper(Sweeper):
    def __init__(self, study_grid: DictConfig, sampler: DictConfig, storage: str | None,
                 study_name: str | None, n_trials: int, direction: str | None = None, n_jobs: int = 1,
                 max_failure_rate: float = 1.0, params: DictConfig | None = None, heartbeat_interval: int = 10,
                 grace_period: int = 60, pruner: DictConfig | None = None, phases: Any = None,
                 seeds_per_trial: int = 1, objectives: Any = None) -> None:
        self.study_grid, self.phases = flatten(study_grid), phases  # see mlc.sweep.plan.plan_sweep
        self.sampler_cfg, self.storage = sampler, storage
        self.direction_set = direction  # as configured: None = derived from trainer.monitor_mode
        self.direction = "" if direction is None else str(direction)  # the study's, once setup/preflight saw the config
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, n_jobs
        self.max_failure_rate = max_failure_rate
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.params = flatten(params)
        self.pruner = OmegaConf.to_container(pruner, resolve=True) if pruner else None
        self.seeds_per_trial, self.objectives = seeds_per_trial, objectives  # (read by mlc.sweep.plan.objectives)
        self.config: DictConfig | None = None

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

    # -- the sweep: mlc.sweep.loop ------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        from mlc.sweep.loop import SweepLoop  # deferred: loads Optuna and torch; Hydra imports this plugin in every run

        assert self.config is not None
        SweepLoop(self.config, self.launcher.launch, url=self._url, n_trials=self.n_trials, direction=self.direction,
                  sampler=self.sampler_cfg, pruner=self.pruner, n_jobs=self.n_jobs,
                  heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period,
                  max_failure_rate=self.max_failure_rate, seeds_per_trial=self.seeds_per_trial,
                  objectives=planner.objectives(self.config)).run(arguments)

    # -- checks before any trial ------------------------------------------------------------------

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

    def _check(self, config: DictConfig) -> None:
        self.direction = planner.study_direction(config, self.direction_set)
        planner.objectives(config)  # a malformed list, or one with a pruner, fails here
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
