"""mlc's Hydra callbacks around a multirun (``conf/hydra/default.yaml``), in the order they act:
validate the config and the sweep before anything starts, open and close the parent MLflow run, and
exit with the outcome the sweep recorded from its studies."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mlc.config import check_config, mark_outputs, report_and_exit
from mlc.errors import ConfigError, MlcError
from mlc.sweep.parent import (
    LAUNCHER_PID_ENV,
    PARENT_RUN_FILE,
    SHARED_PARENT_ENV,
    attach_sweep_summary,
    parent_run_id,
    start_sweep_parent,
)
from mlc.sweep.summary import read_outcome
from mlc.tracking import MLflowTracker, tracking_settings

log = logging.getLogger("mlc.tracking")


class PreflightCheck(Callback):
    """Hydra callback: validate the config, and the sweep if its sweeper can, before a multirun starts.

    Runs before any other callback (see ``conf/hydra/default.yaml``), so a bad sweep fails in a second
    without opening an MLflow parent run or a study. A sweeper class opts in with a ``preflight(config)``
    classmethod that raises ``ConfigError``.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import get_class

        task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            check_config(task_cfg)
            target = OmegaConf.select(config, "hydra.sweeper._target_")
            sweeper_cls = get_class(target) if target else None
            if hasattr(sweeper_cls, "preflight"):
                sweeper_cls.preflight(config)
        except ConfigError as err:
            report_and_exit(err, 2)
        mark_outputs(str(config.paths.outputs))  # the sweep writes there from now on


class MultirunTracking(Callback):
    """Hydra callback: a parent MLflow run around a multirun, whose id trials read from the sweep dir."""

    def __init__(self) -> None:
        self.tracker: MLflowTracker | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = tracking_settings(config)
        if not settings.enabled:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        if os.environ.get(SHARED_PARENT_ENV):  # a worker of `mlc sweep --workers N`: the launcher owns the parent
            if parent_run_id(sweep_dir) != os.environ[SHARED_PARENT_ENV]:
                report_and_exit(MlcError(f"{sweep_dir / PARENT_RUN_FILE} does not name the parent run "
                                         f"{os.environ[SHARED_PARENT_ENV]} of this sweep's workers"), 2)
            return
        choices = OmegaConf.to_container(config.hydra.runtime.choices)
        search = choices.get("hparams_search") or "multirun"
        try:  # without its parent run a sweep would orphan its trials: stop before the first one
            self.tracker = start_sweep_parent(settings, sweep_dir, f"{search}-{sweep_dir.name}",
                                              list(config.hydra.overrides.task))
        except MlcError as err:
            report_and_exit(err, 2)
        log.info("MLflow parent run %s (experiment %r)", self.tracker.run_id, settings.experiment)
        atexit.register(self._end, "FAILED", "the multirun did not finish")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.tracker is None:
            self._end_orphaned_parent(config)
            return
        try:
            self._attach_summary(Path(config.hydra.sweep.dir))
        except Exception as err:  # the parent run still ends with the sweep's status below
            log.warning("could not attach the sweep summary to MLflow parent run %s: %s", self.tracker.run_id,
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
        code, message = read_outcome(Path(config.hydra.sweep.dir)) or (0, "")  # (Hydra's own sweepers write none)
        self._end({0: "FINISHED", 130: "KILLED"}.get(code, "FAILED"), message or None)

    @staticmethod
    def _end_orphaned_parent(config: DictConfig) -> None:
        """A worker whose ``--workers`` process died (even by SIGKILL: Linux then sent the worker SIGTERM)
        ends the parent run it shared, KILLED: nobody else is left to end it."""
        launcher, run_id = os.environ.get(LAUNCHER_PID_ENV), os.environ.get(SHARED_PARENT_ENV)
        if not launcher or not run_id or os.getppid() == int(launcher) or not tracking_settings(config).enabled:
            return
        import time

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_settings(config).tracking_uri)
        for attempt in range(3):  # the other workers end their runs in the same store at the same moment
            try:
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_tag(run_id, "mlc.error", f"the `mlc sweep --workers` process (pid {launcher}) died")
                    client.set_terminated(run_id, status="KILLED")
                return
            except Exception as err:
                if attempt == 2:
                    log.warning("could not end the parent run %s of the dead `mlc sweep --workers` process: %s",
                                run_id, str(err).splitlines()[0] if str(err) else type(err).__name__)
                time.sleep(2)

    def _attach_summary(self, sweep_dir: Path) -> None:
        attach_sweep_summary(self.tracker, sweep_dir)

    def _end(self, status: str, error: str | None = None) -> None:
        if self.tracker is not None:
            self.tracker.end(status, error)
            self.tracker = None


class ExitWithOutcome(Callback):
    """The last of mlc's multirun callbacks: the process exits with its sweep's recorded outcome (one line)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        code, message = read_outcome(Path(config.hydra.sweep.dir)) or (0, "")
        if code:
            print(f"error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(code)  # (Hydra's callbacks and CLI wrapper pass SystemExit on)
