"""What a sweep runs, from its composed config alone: one study per grid point of each phase, named stably (a
re-run finds its study by name), and the search space. mlc's sweeper (``hydra_plugins/mlc_sweepers``) runs this
plan and ``mlc reproduce`` reads it before anything runs: one planner, so that both mean the same studies."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from omegaconf import DictConfig, OmegaConf

from mlc.errors import ConfigError
from mlc.flat import flatten

DIRECTIONS = {"max": "maximize", "min": "minimize"}  # trainer.monitor_mode -> the studies' Optuna direction


@dataclass(frozen=True)
class StudyPlan:
    """One study: its name; its grid point and its phase's overrides, which its trials get after the command
    line's (``[*fixed_args, *overrides, *fixed, *sampled]``); and the config they share, recorded in the study."""

    name: str
    fixed: dict[str, Any]
    overrides: tuple[str, ...]
    config: dict[str, Any]


class SweepPlan(NamedTuple):
    studies: list[StudyPlan]
    distributions: dict[str, Any]  # the search space: Optuna distributions by key
    fixed_args: list[str]  # the command line's plain overrides, given to every trial


def plan_sweep(config: DictConfig, arguments: Sequence[str] | None = None) -> SweepPlan:
    """The sweep ``config.hydra.sweeper`` describes (``arguments``: the command line's task overrides).

    Phases (``hydra.sweeper.phases``) are more sets of studies in the same sweep: a phase's ``study_grid``
    replaces those lists of the grid, and its ``overrides`` act as if that phase were a sweep of its own with
    them on the command line (its trials get them, and its studies' names hash them, as such a sweep did)."""
    # deferred: mlc.sweep.study loads Optuna; the sweeper plugin imports this module in every Hydra run
    from mlc.sweep.study import fingerprint

    sweeper = config.hydra.sweeper
    arguments = list(config.hydra.overrides.task if arguments is None else arguments)
    params, direction = flatten(sweeper.get("params")), study_direction(config, sweeper.get("direction"))
    distributions, fixed_args = search_space(params, arguments)
    spec = {k: str(v) for k, v in params.items()} | {
        o.key_or_group: o.input_line.partition("=")[2] for o in parse(arguments) if o.is_sweep_override()}
    choices, name = config.hydra.runtime.choices, sweeper.get("study_name")
    studies = []
    for grid, overrides in phases(flatten(sweeper.get("study_grid")), sweeper.get("phases")):
        task = compose_with(config, arguments, overrides) if overrides else config
        task = OmegaConf.to_container(OmegaConf.masked_copy(task, [k for k in task if k != "hydra"]), resolve=True)
        digest, shared = fingerprint(task, [*grid, *distributions], spec, direction,
                                     int(sweeper.get("seeds_per_trial") or 1), objectives(config))
        shared = json.loads(json.dumps(shared, default=str))  # as it reads back from Optuna's JSON user attributes
        base = str(name) if name else \
            f"{choices.get('experiment') or choices.get('hparams_search') or 'sweep'}@{digest}"
        for values in itertools.product(*grid.values()):
            fixed = dict(zip(grid, values, strict=True))
            label = ", ".join(f"{k}={v}" for k, v in fixed.items())
            studies.append(StudyPlan(f"{base}[{label}]" if label else base, fixed, overrides, shared))
    names = [s.name for s in studies]
    if len(set(names)) < len(names):
        raise ConfigError("hydra.sweeper.phases", next(n for n in names if names.count(n) > 1),
                          "two phases plan this study; give them different grid points or leave study_name unset")
    return SweepPlan(studies, distributions, fixed_args)


def phases(grid: dict[str, list], given: Any) -> list[tuple[dict[str, list], tuple[str, ...]]]:
    """(grid, overrides) of each phase (``hydra.sweeper.phases``; none: the grid alone)."""
    given = OmegaConf.to_container(given, resolve=True) if OmegaConf.is_config(given) else given
    out = []
    for phase in given or [{}]:
        if not isinstance(phase, dict) or set(phase) - {"study_grid", "overrides"} or \
                not all(isinstance(o, str) and "=" in o for o in phase.get("overrides") or []):
            raise ConfigError("hydra.sweeper.phases", phase, "a phase is {study_grid: {...}, overrides: [key=value]}")
        out.append(({**grid, **flatten(phase.get("study_grid"))}, tuple(phase.get("overrides") or ())))
    return out


def compose_with(config: DictConfig, arguments: Sequence[str], overrides: Sequence[str]) -> DictConfig:
    """The task config of the command line's plain ``arguments`` with ``overrides`` on top (the last wins), as a
    trial's is composed (a grid over a config group, a phase); a ``ConfigError`` if Hydra cannot compose it."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException

    # deferred: mlc.config loads torch; the sweeper plugin imports this module in every Hydra run
    from mlc.config import compose_config

    plain = [o.input_line for o in parse(list(arguments)) if not o.is_sweep_override()]
    try:  # inside the Hydra app (the sweep) its own config search path composes; else mlc's conf/
        return compose(config.hydra.job.config_name or "train", overrides=[*plain, *overrides]) \
            if GlobalHydra.instance().is_initialized() else compose_config([*plain, *overrides])
    except ConfigCompositionException as err:
        key, _, value = overrides[-1].partition("=")
        raise ConfigError(key, value, f"no such {key} option" if isinstance(err, MissingConfigException)
                          else str(err).splitlines()[0]) from None


OBJECTIVE_PREFIXES = ("val/", "val_ema/")  # an objective is a validation metric (a test metric would leak)
LOWER_IS_BETTER = ("loss", "fnr", "fpr", "fpr_neg_images", "fpr_pos_images")  # the rest: higher is better


def objectives(config: DictConfig) -> list[tuple[str, str]]:
    """``hydra.sweeper.objectives`` as (validation metric, Optuna direction) pairs; [] for a single-objective
    sweep (``trainer.monitor``). Each entry is ``val/<metric>``, optionally ``:max`` or ``:min``; without one,
    losses and error rates (``LOWER_IS_BETTER``) are minimized and every other metric maximized. A
    multi-objective search finds the Pareto front (e.g. F1 against F1-Neg, the trade-off λ sets), so it needs
    at least two, and an Optuna pruner cannot judge a trial on several values (no pruner with it)."""
    given = OmegaConf.select(config, "hydra.sweeper.objectives", default=None)
    if given is None or (isinstance(given, Sequence) and not isinstance(given, str) and len(given) == 0):
        return []
    key = "hydra.sweeper.objectives"
    if isinstance(given, str) or not isinstance(given, Sequence):
        raise ConfigError(key, given, "must be a list of validation metrics, e.g. [val/f1_macro,val/f1_neg]")
    out = []
    for entry in given:
        name, _, mode = str(entry).partition(":")
        if not name.startswith(OBJECTIVE_PREFIXES) or "/" in name.split("/", 1)[1] or not name.split("/", 1)[1]:
            raise ConfigError(key, list(given), f"{entry!r} is not a validation metric (val/<metric>, e.g. "
                              "val/f1_neg, optionally :max or :min)")
        if mode and mode not in DIRECTIONS:
            raise ConfigError(key, list(given), f"{entry!r}: the direction after ':' must be max or min")
        metric = name.split("/", 1)[1]
        out.append((name, DIRECTIONS[mode] if mode else DIRECTIONS["min" if metric in LOWER_IS_BETTER else "max"]))
    names = [n for n, _ in out]
    if len(out) < 2 or len(set(names)) < len(names):
        raise ConfigError(key, list(given), "needs two or more different metrics (one objective is trainer.monitor)")
    pruner = str(OmegaConf.select(config, "hydra.sweeper.pruner._target_", default=None) or "")
    if pruner and not pruner.endswith(".NopPruner"):
        raise ConfigError(key, list(given), f"Optuna cannot prune a multi-objective trial ({pruner}); use "
                          "hydra/sweeper/pruner=none")
    return out


def study_direction(config: DictConfig, given: str | None) -> str:
    """The studies' direction: ``trainer.monitor_mode``'s (max -> maximize, min -> minimize). A direction set
    explicitly in the sweeper config must agree with it (``ConfigError`` otherwise)."""
    mode = OmegaConf.select(config, "trainer.monitor_mode")
    derived = DIRECTIONS.get(mode)
    if derived is None:
        raise ConfigError("trainer.monitor_mode", mode, f"must be {' or '.join(DIRECTIONS)}")
    if given is not None and given not in DIRECTIONS.values():
        raise ConfigError("hydra.sweeper.direction", given,
                          "must be maximize or minimize, or null to follow trainer.monitor_mode")
    if given is not None and given != derived:
        raise ConfigError("hydra.sweeper.direction", given,
                          f"disagrees with trainer.monitor_mode={mode} ({config.trainer.monitor}); leave it "
                          f"unset: the direction follows trainer.monitor_mode")
    return derived


def storage_url(storage: Any) -> str | None:
    """The storage URL, or None for an in-memory study (``storage: null``: gone when the sweep ends)."""
    return None if storage is None or str(storage) in ("", "None", "null") else str(storage)


def search_space(params: dict[str, Any], arguments: list[str]) -> tuple[dict, list[str]]:
    """(Optuna distributions by key, the plain overrides to pass to every trial).

    The search space is ``hydra.sweeper.params`` plus the sweep overrides of the command line
    (``loss.lam='tag(log, interval(0.01, 0.2))'``, ``seed=0,1,2``), in Hydra's override grammar:
    ``interval`` is a float (int if both ends are) range, ``tag(log, ...)`` samples it on a log scale,
    a choice or ``range`` is categorical/stepped. A space Optuna rejects is a ``ConfigError`` naming the key.
    """
    distributions: dict[str, Any] = {}
    fixed: list[str] = []
    specs = [(f"{k}={v}", f"hydra.sweeper.params.{k}") for k, v in params.items()]
    specs += [(a, None) for a in arguments]
    for text, source in specs:
        (override,) = parse([text])
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(text if source is None else f"{key}={override.get_value_element_as_str()}")
            continue
        try:
            distributions[key] = _distribution(override)
        except (ValueError, TypeError) as err:
            raise ConfigError(source or key, text.partition("=")[2],
                              f"not a valid Optuna search space: {str(err).splitlines()[0]}") from None
    return distributions, fixed


def _distribution(override: Override) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if isinstance(value, RangeSweep) and not value.shuffle:
        step = value.step or 1
        if any(isinstance(x, float) for x in (value.start, value.stop, step)):
            return FloatDistribution(value.start, value.stop - step, step=step)
        return IntDistribution(int(value.start), int(value.stop) - int(step), step=int(step))
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    if not choices:
        raise ValueError("an empty choice")
    return CategoricalDistribution(choices)


def parse(arguments: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(arguments)


def extremes(argument: str, plain: bool = False) -> list[tuple[str, Any]]:
    """(key, value) probes at the edges of a search space ``key=spec``: an interval's or range's ends, each choice;
    a plain value is one probe if ``plain`` (an entry of ``hydra.sweeper.params``), else none (a fixed override)."""
    override = OverridesParser.create().parse_override(argument)
    sweep, key = override.value(), override.get_key_element()
    if isinstance(sweep, IntervalSweep):
        return [(key, sweep.start), (key, sweep.end)]
    if isinstance(sweep, RangeSweep):
        return [(key, sweep.start), (key, sweep.stop - (sweep.step or 1))]
    if isinstance(sweep, ChoiceSweep):
        return [(key, v) for v in sweep.list]
    return [(key, sweep)] if plain else []
