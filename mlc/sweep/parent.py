"""The sweep's parent MLflow run: opened before the first trial, its id written into the sweep folder
(``mlflow_parent_run_id``) where every trial finds it, whatever the launcher; each finished trial's
value charted on it while the sweep runs; the sweep summary attached at the end."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

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
    if summary.exists():  # the best parameters and value of each study, visible in the runs table
        params, metrics = {}, {}
        for study in json.loads(summary.read_text())["studies"]:
            # MLflow keys allow letters, digits, _ - . space : / (no comma or =)
            label = "/".join(p for p in ("best", study_label(study["fixed"])) if p)
            params |= {f"{label}/{k}": v for k, v in study["best_params"].items()}
            if study["best_value"] is not None:
                metrics[f"{label}/value"] = study["best_value"]
        tracker.log_params(params)
        tracker.log_metrics(metrics)


def study_label(fixed: dict) -> str:
    """A study's grid point as an MLflow key part (keys allow letters, digits, _ - . space : /; no , or =)."""
    return "/".join(f"{k}_{v}" for k, v in fixed.items())


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
