"""The sweep's parent MLflow run: opened before the first trial, its id written into the sweep folder
(``mlflow_parent_run_id``) where every trial finds it, whatever the launcher; each finished trial's
value charted on it while the sweep runs; the sweep summary attached at the end, with each study's best value,
its trials' mean and std and its best params as the parent's own metrics and params (``study_results``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mlc.errors import MlcError
from mlc.tracking import MLflowTracker, TrackingSettings, git_tags, tracking_settings

log = logging.getLogger("mlc.tracking")

PARENT_RUN_FILE = "mlflow_parent_run_id"
# Set by `mlc sweep --workers N` for its workers: the parent run it owns (workers attach, never end it).
SHARED_PARENT_ENV = "MLC_SWEEP_PARENT_RUN"
LAUNCHER_PID_ENV = "MLC_SWEEP_LAUNCHER_PID"  # the `mlc sweep --workers` process that owns that parent run
SWEEP_SUMMARY_GLOB = "sweep_summary*"


def parent_run_id(sweep_dir: str | Path) -> str | None:
    path = Path(sweep_dir) / PARENT_RUN_FILE
    return path.read_text().strip() if path.exists() else None


def start_sweep_parent(settings: TrackingSettings, sweep_dir: Path, run_name: str, overrides: list[str],
                       **tags: str) -> MLflowTracker:
    """The MLflow parent run of a multirun, its id written into the sweep directory for the trials. It logs no
    system metrics: its trials do, each for its own run."""
    tracker = MLflowTracker(dataclasses.replace(settings, system_metrics=False))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    run_id = tracker.start(run_name=run_name, tags={"mlc.kind": "sweep", "mlc.sweep_dir": str(sweep_dir.resolve()),
                                                    "mlc.overrides": " ".join(overrides), **tags, **git_tags()})
    (sweep_dir / PARENT_RUN_FILE).write_text(run_id)
    return tracker


def attach_sweep_summary(tracker: MLflowTracker, sweep_dir: Path) -> None:
    for path in sorted(sweep_dir.glob(SWEEP_SUMMARY_GLOB)):
        tracker.log_artifact(path)
    summary = sweep_dir / "sweep_summary.json"
    if summary.exists():  # what each study found, visible in the runs table and on the parent's charts
        params, metrics = study_results(json.loads(summary.read_text()))
        tracker.log_params(params)
        tracker.log_metrics(metrics)


def study_results(summary: dict) -> tuple[dict[str, Any], dict[str, float]]:
    """(params, metrics) the parent run gets at the end, from the sweep's summary (``sweep_summary.json``).

    Per study: its best value and its finished trials' mean and sample std (std from two trials on), so the
    runs table answers "how good, and how much do trials differ?" without opening the summary:
    ``study/<grid point>/best``, ``.../mean``, ``.../std``, ``.../n`` (the trials the mean is over; pruned ones
    have no final value). The best params stay where earlier sweeps put them, ``best/<grid point>/<param>``, with
    ``best/<grid point>/value``. A sweep without a grid has one study: ``study/best``, ``best/value``, ... A
    multi-objective study has no one best trial: each objective gets its own best, mean and std
    (``study/<grid point>/<objective>/best``, ...), and ``study/<grid point>/pareto`` counts its Pareto front.
    """
    studies = summary["studies"]
    objectives = [(str(name), str(direction)) for name, direction in summary.get("objectives") or []]
    params: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    for study, key in zip(studies, study_keys(studies), strict=True):
        best = "/".join(p for p in ("best", key) if p)
        params |= {f"{best}/{mlflow_key(k)}": v for k, v in study["best_params"].items()}
        prefix = "/".join(p for p in ("study", key) if p)
        trials = study.get("trials") or []
        if study["best_value"] is not None:
            metrics[f"{best}/value"] = metrics[f"{prefix}/best"] = study["best_value"]
        if not objectives:
            metrics |= _spread(prefix, [float(t["value"]) for t in trials if t.get("value") is not None])
            continue
        metrics[f"{prefix}/pareto"] = sum(bool(t.get("pareto")) for t in trials)
        for i, (name, direction) in enumerate(objectives):
            values = [float(t["values"][i]) for t in trials if t.get("values")]
            path = "/".join(map(mlflow_key, name.split("/")))
            metrics |= _spread(f"{prefix}/{path}", values)
            if values:
                metrics[f"{prefix}/{path}/best"] = (max if direction == "maximize" else min)(values)
    return params, metrics


def _spread(prefix: str, values: list[float]) -> dict[str, float]:
    """The mean of ``values``, their count and, from two on, their sample std (ddof=1, as mlc report's over seeds)."""
    out = {f"{prefix}/mean": statistics.fmean(values), f"{prefix}/n": len(values)} if values else {}
    return out | ({f"{prefix}/std": statistics.stdev(values)} if len(values) >= 2 else {})


def study_keys(studies: list[dict]) -> list[str]:
    """Each study's part of the parent's metric and param names: its grid point (``study_label``), or, where two
    studies share one (phases with the same grid point), its own name made a legal key; one study without a
    grid point: ''."""
    labels = [study_label(s["fixed"]) for s in studies]
    return [label if labels.count(label) == 1 else mlflow_key(s["name"]) for label, s in zip(labels, studies,
                                                                                            strict=True)]


def study_label(fixed: dict) -> str:
    """A study's grid point as an MLflow key part, ``<key>_<value>`` per grid key, joined by ``/``."""
    return "/".join(f"{mlflow_key(k)}_{mlflow_key(v)}" for k, v in fixed.items())


def mlflow_key(text: Any) -> str:
    """``text`` with what MLflow refuses in a metric or param name made ``_``: it allows letters, digits and
    ``_ - . space :`` (``/`` nests; a grid value's own ``/`` or ``,`` or ``=`` would not be legal or would nest)."""
    return re.sub(r"[^\w.\- :]", "_", str(text))


class ParentLog:
    """What a sweeper logs on its multirun's parent run while trials finish: each trial's value and the
    study's best so far (step = trial number), so the parent run's charts fill in during the sweep and
    the experiment's chart view is not empty until one expands a parent."""

    def __init__(self, config: DictConfig):
        self.tracker: MLflowTracker | None = None
        settings = tracking_settings(config)
        run_id = parent_run_id(config.hydra.sweep.dir) if settings.enabled else None
        if run_id:
            try:
                self.tracker = MLflowTracker(settings)
                self.tracker.run_id = run_id
            except MlcError as err:
                log.warning("the parent run's trial chart stays empty: %s", err)
                self.tracker = None

    def trial(self, fixed: dict, number: int, value: float, best: float | None) -> None:
        if self.tracker is None:
            return
        prefix = "/".join(p for p in ("trial", study_label(fixed)) if p)
        metrics = {f"{prefix}/value": value} | ({f"{prefix}/best": best} if best is not None else {})
        try:
            self.tracker.log_metrics(metrics, step=number)
        except MlcError as err:  # the dashboard's chart is a convenience: the sweep goes on
            log.warning("could not log trial #%d on the parent run: %s", number, err)
