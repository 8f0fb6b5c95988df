"""``StudyGridSweeper``: one Optuna study per point of a grid, each run by Hydra's Optuna sweeper.

The question "which λ is best for *this* negative ratio?" is one optimisation per ratio, not one
joint search (a joint search would spend its trials on the easiest ratio). This sweeper loops over
the grid (``study_grid: {dataset: {negative_ratio: [0.5, 0.8]}}``, nested like the config) and, for each point, runs the
unmodified ``hydra_plugins.hydra_optuna_sweeper`` with the grid value as a fixed override and its
own study name in the same RDB storage. Trials of all studies share one sweep directory (numbered
on) and one MLflow parent run. At the end it writes ``sweep_summary.{md,json,png}`` to the sweep
directory and prints the table: the best parameters and metric per grid point.

Before anything starts (``preflight``, run by mlc's preflight callback ahead of the MLflow parent
run) it checks that the search space fits the config: each grid value and each bound of every
searched parameter is validated like a command-line value (so ``interval(-0.1, 0.5)`` for λ fails at
once, naming ``loss.lam``), and the direction must agree with ``trainer.monitor_mode``.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("mlc.sweep")


class StudyGridSweeper(Sweeper):
    def __init__(self, study_grid: DictConfig, sampler: DictConfig, direction: str, storage: str | None,
                 study_name: str, n_trials: int, n_jobs: int = 1, max_failure_rate: float = 0.0,
                 params: DictConfig | None = None, custom_search_space: str | None = None) -> None:
        self.study_grid = _flatten_leaves(OmegaConf.to_container(study_grid, resolve=True) if study_grid else {})
        self.sampler_cfg, self.direction, self.storage = sampler, str(direction), storage
        self.study_name, self.n_trials, self.n_jobs = study_name, int(n_trials), int(n_jobs)
        self.max_failure_rate, self.custom_search_space = float(max_failure_rate), custom_search_space
        self.params = _flatten_leaves(OmegaConf.to_container(params, resolve=True) if params else {})
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    @classmethod
    def preflight(cls, config: DictConfig) -> None:
        """Validate the sweep against the config before anything starts (called by ``mlc.config.PreflightCheck``).

        Raises ``ConfigError`` for a direction that disagrees with ``trainer.monitor_mode``, a grid key
        that is not in the config, or any grid value or search-space bound (from ``hydra.sweeper.params``
        or the command line) that the config would reject.
        """
        sweeper = cls(**{k: v for k, v in config.hydra.sweeper.items() if not k.startswith("_")})
        sweeper._check(config)
        sweeper._check_values(config, [(k, v) for k, vs in sweeper.study_grid.items() for v in vs],
                              "hydra.sweeper.study_grid")
        sweeper._check_values(config, [(k, v) for k, spec in sweeper.params.items() for v in _extremes(k, spec)],
                              "hydra.sweeper.params.{key}")
        arguments = list(config.hydra.overrides.task)
        sweeper._check_values(config, [(k, v) for arg in arguments for k, v in _argument_extremes(arg)],
                              "the command-line search space of {key}")

    def sweep(self, arguments: list[str]) -> None:
        from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

        from mlc.sweeps import StudyRef, write_summary

        assert self.config is not None
        import optuna

        # The Optuna sweeper builds Optuna-2-style distributions, deprecated (not removed) in Optuna 5.
        warnings.filterwarnings("ignore", message=r".*Distribution has been deprecated", category=FutureWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # Hydra already logs each study and trial
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if self.storage and str(self.storage).startswith("sqlite:///"):
            Path(str(self.storage)[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.study_grid)
        points = list(itertools.product(*(self.study_grid[k] for k in keys))) or [()]
        studies: list[StudyRef] = []
        job_idx = 0
        for number, values in enumerate(points, start=1):
            fixed = dict(zip(keys, values, strict=True))
            label = ", ".join(f"{k}={v}" for k, v in fixed.items())
            name = f"{self.study_name}[{label}]" if label else self.study_name
            log.info("study %d/%d: %s (%d trials)", number, len(points), name, self.n_trials)
            optuna_sweeper = OptunaSweeper(
                sampler=instantiate(self.sampler_cfg), direction=self.direction, storage=self.storage,
                study_name=name, n_trials=self.n_trials, n_jobs=self.n_jobs,
                max_failure_rate=self.max_failure_rate, search_space=None,
                custom_search_space=self.custom_search_space, params=OmegaConf.create(self.params))
            optuna_sweeper.setup(hydra_context=self.hydra_context, task_function=self.task_function,
                                 config=self.config)
            optuna_sweeper.sweeper.job_idx = job_idx  # trials of all studies numbered on in one sweep dir
            optuna_sweeper.sweep([*arguments, *(f"{k}={v}" for k, v in fixed.items())])
            job_idx = optuna_sweeper.sweeper.job_idx
            results = sweep_dir / "optimization_results.yaml"
            if results.exists():  # the Optuna sweeper writes one file per sweep; keep each study's
                results.replace(sweep_dir / f"optimization_results-{number}.yaml")
            studies.append(StudyRef(name=name, fixed=fixed))
        monitor = str(OmegaConf.select(self.config, "trainer.monitor", default="objective"))
        table = write_summary(studies, storage=self.storage, sweep_dir=sweep_dir, monitor=monitor,
                              direction=self.direction, searched=list(self.params))
        print(table, flush=True)

    # -- checks before any trial ------------------------------------------------------------------

    def _check(self, config: DictConfig) -> None:
        from mlc.errors import ConfigError

        mode = OmegaConf.select(config, "trainer.monitor_mode")
        expected = {"maximize": "max", "minimize": "min"}.get(self.direction)
        if expected is None:
            raise ConfigError("hydra.sweeper.direction", self.direction, "must be maximize or minimize")
        if mode != expected:
            raise ConfigError("hydra.sweeper.direction", self.direction,
                              f"disagrees with trainer.monitor_mode={mode} ({config.trainer.monitor})")
        clash = [a for a in config.hydra.overrides.task if a.split("=", 1)[0].lstrip("+~") in self.study_grid]
        if clash:
            key, _, value = clash[0].partition("=")
            raise ConfigError(key, value, "is swept by hydra.sweeper.study_grid; change the grid instead")
        for key, values in self.study_grid.items():
            if OmegaConf.select(config, key, default="__missing__") == "__missing__":
                raise ConfigError(f"hydra.sweeper.study_grid.{key}", values, f"'{key}' is not a config key")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"hydra.sweeper.study_grid.{key}", values, "must be a non-empty list")
        if self.n_trials < 1:
            raise ConfigError("hydra.sweeper.n_trials", self.n_trials, "must be >= 1")

    @staticmethod
    def _check_values(config: DictConfig, probes: list[tuple[str, Any]], source: str) -> None:
        """Validate the config with each (key, value) in turn, as if given on the command line."""
        from mlc.config import check_config
        from mlc.errors import ConfigError

        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        for key, value in probes:
            probe = task.copy()
            OmegaConf.update(probe, key, value, force_add=False)
            try:
                check_config(probe)
            except ConfigError as err:
                raise ConfigError(err.key, err.value, f"{err.reason} (a value of {source.format(key=key)})") from None


def _flatten_leaves(grid: dict, prefix: str = "") -> dict[str, list]:
    """``{dataset: {negative_ratio: [..]}}`` -> ``{"dataset.negative_ratio": [..]}`` (a non-dict is a leaf).

    Grid and search space are written nested, like the config they address, so that one entry can be
    overridden from the command line (``hydra.sweeper.params.loss.lam='interval(0.01, 0.2)'``).
    """
    out: dict[str, list] = {}
    for key, value in grid.items():
        if isinstance(value, dict):
            out |= _flatten_leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _argument_extremes(argument: str) -> list[tuple[str, Any]]:
    """(key, value) probes for a sweep given as a command-line argument; none for a plain override."""
    override = OverridesParser.create().parse_override(argument)
    if not override.is_sweep_override():
        return []
    key = override.get_key_element()
    return [(key, v) for v in _values_at_edges(override.value())]


def _extremes(key: str, spec: Any) -> list[Any]:
    """The values at the edges of a search-space entry such as ``tag(log, interval(0.001, 0.5))``."""
    return _values_at_edges(OverridesParser.create().parse_override(f"{key}={spec}").value())


def _values_at_edges(sweep: Any) -> list[Any]:
    if isinstance(sweep, IntervalSweep):
        return [sweep.start, sweep.end]
    if isinstance(sweep, RangeSweep):
        return [sweep.start, sweep.stop - (sweep.step or 1)]
    if isinstance(sweep, ChoiceSweep):
        return list(sweep.list)
    return [sweep]
