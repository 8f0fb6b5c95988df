"""MLflow tracking of every run, and one parent run per multirun.

Default store: SQLite at ``outputs/mlflow.db`` with artifacts beside it in ``outputs/mlartifacts``;
``make ui`` serves both. A run logs the resolved config (flattened into params), the command-line
overrides, the git commit, dataset statistics, per-epoch metrics, the best checkpoint, the config
files and a plot of the learning curves. It ends FINISHED, FAILED (with the error as a tag) or KILLED.

Multiruns (``-m``): the ``MultirunTracking`` Hydra callback opens a parent run before the first
trial and writes its id into the sweep directory; each trial finds it there and nests under it (this
works for any launcher, in-process or not). The parent gets the sweep's summary files at the end.

Everything goes through ``MlflowClient`` with explicit run ids — no global "active run" — so that
in-process sweep trials cannot leak state into each other.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mlc.errors import ConfigError, MlcError, require
from mlc.stores import check_database_url, opening

log = logging.getLogger("mlc.tracking")

PARENT_RUN_FILE = "mlflow_parent_run_id"
# Set by `mlc sweep --workers N` for its workers: the parent run it owns (workers attach, never end it).
SHARED_PARENT_ENV = "MLC_SWEEP_PARENT_RUN"
LAUNCHER_PID_ENV = "MLC_SWEEP_LAUNCHER_PID"  # the `mlc sweep --workers` process that owns that parent run
STATUSES = ("FINISHED", "FAILED", "KILLED")
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value
SWEEP_SUMMARY_GLOB = "sweep_summary*"
URI_SCHEMES = ("sqlite", "postgresql", "mysql", "http", "https", "file")
SERVER_PROBE_TIMEOUT_S = 5  # an MLflow server that does not answer /health in this time is unreachable


@dataclass
class TrackingSettings:
    """The ``tracking/`` config group."""

    enabled: bool = True
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    artifact_root: str = "outputs/mlartifacts"
    experiment: str = "mlc"
    run_name: str | None = None
    log_checkpoint: str = "best"

    def __post_init__(self) -> None:
        require(isinstance(self.enabled, bool), "enabled", self.enabled, "must be true or false")
        require(self.log_checkpoint in ("best", "last", "both", "none"), "log_checkpoint", self.log_checkpoint,
                "must be best, last, both or none")
        require(bool(self.experiment), "experiment", self.experiment, "must be a non-empty name")
        if self.enabled:
            check_tracking_uri(self.tracking_uri)


def check_tracking_uri(uri: object) -> None:
    """The URI's form (scheme, SQLite file, server host), without contacting anything: a typo fails in
    the config check instead of after the data is built."""
    import difflib
    from urllib.parse import urlparse

    require(isinstance(uri, str) and bool(uri.strip()), "tracking_uri", uri, "must be an MLflow tracking URI")
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in URI_SCHEMES:
        close = difflib.get_close_matches(scheme, URI_SCHEMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError("tracking_uri", uri, f"unknown scheme '{scheme}'{hint}: use sqlite:///<file>, "
                                               f"http://<host>:<port> or another of {', '.join(URI_SCHEMES)}")
    if scheme in ("sqlite", "postgresql", "mysql"):
        check_database_url(uri, "tracking_uri")
    elif scheme in ("http", "https"):
        require(bool(urlparse(uri).hostname), "tracking_uri", uri, "an MLflow server URI needs a host")


class NullTracker:
    """Tracking switched off (``tracking=none``): the same interface, doing nothing."""

    run_id = None

    def start(self, *args: Any, **kwargs: Any) -> None:
        return None

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def end(self, status: str = "FINISHED", error: str | None = None) -> None: ...


class TrackingError(MlcError):
    """The MLflow store failed during a run (a full disk, a server gone): one line, not MLflow's traceback."""


def _store_call(method: Any) -> Any:
    """Report a failure of the MLflow store inside ``method`` as a one-line ``TrackingError``."""
    import functools

    @functools.wraps(method)
    def call(self: MLflowTracker, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except MlcError:
            raise
        except Exception as err:
            from mlc.stores import os_error_reason

            cause = next((e for e in (err, err.__cause__, err.__context__) if isinstance(e, OSError)), None)
            text = os_error_reason(cause) if cause is not None else (str(err).strip().splitlines() or [""])[0][:300]
            raise TrackingError(f"MLflow store {self.settings.tracking_uri} failed in {method.__name__} "
                                f"({type(err).__name__}: {text})") from None

    return call


class MLflowTracker:
    """One MLflow run, addressed by id through ``MlflowClient``."""

    def __init__(self, settings: TrackingSettings):
        quiet_mlflow_logs()
        from mlflow.tracking import MlflowClient

        self.settings = settings
        uri = settings.tracking_uri
        self.uses_server = uri.startswith(("http://", "https://"))
        if self.uses_server:
            _probe_server(uri)
        else:
            Path(settings.artifact_root).mkdir(parents=True, exist_ok=True)
        try:
            with opening(uri):  # a fresh SQLite store is created (and migrated) by one process at a time
                self.client = MlflowClient(tracking_uri=uri)
                self.client.search_experiments(max_results=1)  # builds the store now, under the lock
        except MlcError:
            raise
        except Exception as err:  # the store's own message: bad credentials, a foreign database, ...
            text = str(err).strip()
            reason = f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__
            raise ConfigError("tracking.tracking_uri", uri, f"cannot open the MLflow store ({reason})") from None
        self.run_id: str | None = None

    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.settings.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # Through a tracking server the experiment takes the server's artifact root (mlflow-artifacts:/<id>
        # when it proxies artifacts), so that log_artifact uploads over HTTP; a local artifact_root would
        # have this client write artifacts to its own disk instead.
        where = {} if self.uses_server else {"artifact_location": Path(self.settings.artifact_root).resolve().as_uri()}
        try:
            return self.client.create_experiment(name, **where)
        except MlflowException:  # created concurrently by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    @_store_call
    def start(self, run_name: str | None = None, tags: dict[str, str] | None = None,
              parent_run_id: str | None = None, resume_run_id: str | None = None) -> str:
        if resume_run_id:
            self.client.update_run(resume_run_id, status="RUNNING")
            self.run_id = resume_run_id
            moved = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}  # a continued sweep trial
            self.set_tags({"mlc.resumed": "true"} | (tags or {}) | moved)
            return resume_run_id
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        return self.run_id

    @_store_call
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    @_store_call
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if _is_number(v)]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    @_store_call
    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _param_value(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i:i + 100])

    @_store_call
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    @_store_call
    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    @_store_call
    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        if self.run_id is None:
            return
        if error:
            self.set_tags({"mlc.error": error})
        self.client.set_terminated(self.run_id, status=status)


def make_tracker(settings: TrackingSettings) -> MLflowTracker | NullTracker:
    return MLflowTracker(settings) if settings.enabled else NullTracker()


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
                from mlc.config import report_and_exit

                report_and_exit(MlcError(f"{sweep_dir / PARENT_RUN_FILE} does not name the parent run "
                                         f"{os.environ[SHARED_PARENT_ENV]} of this sweep's workers"), 2)
            return
        choices = OmegaConf.to_container(config.hydra.runtime.choices)
        search = choices.get("hparams_search") or "multirun"
        try:  # without its parent run a sweep would orphan its trials: stop before the first one
            self.tracker = start_sweep_parent(settings, sweep_dir, f"{search}-{sweep_dir.name}",
                                              list(config.hydra.overrides.task))
        except MlcError as err:
            from mlc.config import report_and_exit

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
        from mlc.sweeps import read_outcome

        code, message = read_outcome(Path(config.hydra.sweep.dir)) or (0, "")  # (Hydra's own sweepers write none)
        self._end({0: "FINISHED", 130: "KILLED"}.get(code, "FAILED"), message or None)

    @staticmethod
    def _end_orphaned_parent(config: DictConfig) -> None:
        """A worker whose ``--workers`` process died (even by SIGKILL: Linux then sent the worker SIGTERM)
        ends the parent run it shared, KILLED: nobody else is left to end it."""
        launcher, run_id = os.environ.get(LAUNCHER_PID_ENV), os.environ.get(SHARED_PARENT_ENV)
        if not launcher or not run_id or os.getppid() == int(launcher) or not tracking_settings(config).enabled:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_settings(config).tracking_uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "mlc.error", f"the `mlc sweep --workers` process (pid {launcher}) died")
            client.set_terminated(run_id, status="KILLED")

    def _attach_summary(self, sweep_dir: Path) -> None:
        attach_sweep_summary(self.tracker, sweep_dir)

    def _end(self, status: str, error: str | None = None) -> None:
        if self.tracker is not None:
            self.tracker.end(status, error)
            self.tracker = None


def start_sweep_parent(settings: TrackingSettings, sweep_dir: Path, run_name: str, overrides: list[str],
                       **tags: str) -> MLflowTracker:
    """The MLflow parent run of a multirun, its id written into the sweep directory for the trials."""
    tracker = MLflowTracker(settings)
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


def tracking_settings(config: DictConfig) -> TrackingSettings:
    from hydra.utils import instantiate

    return instantiate(config.tracking)


def parent_run_id(sweep_dir: str | Path) -> str | None:
    path = Path(sweep_dir) / PARENT_RUN_FILE
    return path.read_text().strip() if path.exists() else None


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay whole values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def git_tags() -> dict[str, str]:
    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": sha, "mlc.git_dirty": str(bool(dirty)).lower()}


def quiet_mlflow_logs() -> None:
    """MLflow's SQLite store logs every schema migration at INFO; keep the console readable."""
    for name in ("alembic", "mlflow.tracking.fluent", "mlflow.store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Its ERROR record repeats, with a traceback, a database exception that mlc reports itself in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def _probe_server(uri: str) -> None:
    """One GET of the server's /health with a short timeout: MLflow's own client would retry an
    unreachable server with back-off for minutes before saying so."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_PROBE_TIMEOUT_S) as reply:
            if reply.status == 200:
                return
            reason = f"/health answered HTTP {reply.status}"
    except urllib.error.HTTPError as err:
        reason = f"/health answered HTTP {err.code}: not an MLflow server?"
    except (urllib.error.URLError, OSError) as err:
        reason = str(getattr(err, "reason", err))
    raise ConfigError("tracking.tracking_uri", uri, f"cannot reach the MLflow server ({reason})")


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
