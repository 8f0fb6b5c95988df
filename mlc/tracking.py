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

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mlc.errors import ConfigError, MlcError, require
from mlc.provenance import git_commit
from mlc.stores import check_database_url, opening, os_error_reason

log = logging.getLogger("mlc.tracking")

STATUSES = ("FINISHED", "FAILED", "KILLED")
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value
URI_SCHEMES = ("sqlite", "postgresql", "mysql", "http", "https", "file")
SERVER_PROBE_TIMEOUT_S = 5  # an MLflow server that does not answer /health in this time is unreachable
# Opens mlc's experiments in MLflow's model-training view (runs, metrics, charts), not its GenAI one (traces).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


@dataclass
class TrackingSettings:
    """The ``tracking/`` config group."""

    enabled: bool = True
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    artifact_root: str = "outputs/mlartifacts"
    experiment: str = "mlc"
    run_name: str | None = None
    log_checkpoint: str = "best"
    system_metrics: bool = True  # MLflow's system metrics (system/*) while the run trains
    system_metrics_interval: float = 10.0  # seconds between samples

    def __post_init__(self) -> None:
        require(isinstance(self.enabled, bool), "enabled", self.enabled, "must be true or false")
        require(self.log_checkpoint in ("best", "last", "both", "none"), "log_checkpoint", self.log_checkpoint,
                "must be best, last, both or none")
        require(bool(self.experiment), "experiment", self.experiment, "must be a non-empty name")
        require(isinstance(self.system_metrics, bool), "system_metrics", self.system_metrics, "must be true or false")
        require(_is_number(self.system_metrics_interval) and self.system_metrics_interval > 0,
                "system_metrics_interval", self.system_metrics_interval, "must be a positive number of seconds")
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
    def log_datasets(self, inputs: list[tuple[str, str, str, str]]) -> None: ...
    def end(self, status: str = "FINISHED", error: str | None = None) -> None: ...


DATASET_ATTEMPTS = 5  # log_datasets' tries when another process created the same dataset at the same moment


def _duplicate_key(err: BaseException) -> bool:
    """Whether the store refused a row another process inserted first (SQLite, PostgreSQL and MySQL words)."""
    text = str(err).lower()
    return any(w in text for w in ("unique constraint", "duplicate key", "duplicate entry", "integrityerror"))


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
        self._system_metrics: Any = None  # MLflow's SystemMetricsMonitor while the run is open

    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.settings.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND[0]) is None:  # made by an older mlc, or by hand
                self.client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
            return found.experiment_id
        # Through a tracking server the experiment takes the server's artifact root (mlflow-artifacts:/<id>
        # when it proxies artifacts), so that log_artifact uploads over HTTP; a local artifact_root would
        # have this client write artifacts to its own disk instead.
        where = {} if self.uses_server else {"artifact_location": Path(self.settings.artifact_root).resolve().as_uri()}
        try:
            return self.client.create_experiment(name, tags=dict([EXPERIMENT_KIND]), **where)
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
            self._start_system_metrics(resumed=True)
            return resume_run_id
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        self._start_system_metrics(resumed=False)
        return self.run_id

    def _start_system_metrics(self, resumed: bool) -> None:
        """MLflow's system-metrics thread for this run (``tracking.system_metrics``): it samples CPU, memory,
        disk, network and any NVIDIA GPU every ``system_metrics_interval`` s as ``system/*`` metrics, and stops
        with ``end`` (or by itself once the run is no longer RUNNING). A continued run carries on its steps."""
        if not self.settings.system_metrics:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._system_metrics = SystemMetricsMonitor(
                self.run_id, sampling_interval=float(self.settings.system_metrics_interval),
                resume_logging=resumed, tracking_uri=self.settings.tracking_uri)
            self._system_metrics.start()
        except Exception as err:  # monitoring is secondary: the run trains and is tracked without it
            log.warning("system metrics are not logged (%s: %s)", type(err).__name__, str(err).splitlines()[0]
                        if str(err) else "")
            self._system_metrics = None

    def _stop_system_metrics(self) -> None:
        if self._system_metrics is not None:
            self._system_metrics.finish()  # joins the thread (at most one interval) and flushes its last batch
            self._system_metrics = None

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
    def log_datasets(self, inputs: list[tuple[str, str, str, str]]) -> None:
        """MLflow dataset inputs (the runs table's *Dataset* column): (name, digest, profile JSON, split) each,
        the split as MLflow's ``mlflow.data.context`` tag (``mlc.data.lineage``)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        datasets = [DatasetInput(Dataset(name=name, digest=digest, source_type="mlc",
                                         source=json.dumps({"split": split}), profile=profile),
                                 tags=[InputTag("mlflow.data.context", split)])
                    for name, digest, profile, split in inputs]
        for attempt in range(DATASET_ATTEMPTS):
            try:
                self.client.log_inputs(self.run_id, datasets=datasets)
                return
            except Exception as err:
                # MLflow finds-or-creates a dataset in one transaction: two runs logging the same split at
                # once (two sweep workers, same data seed) both create it and the later one hits the store's
                # unique key. Its transaction is rolled back whole; the next attempt finds the dataset.
                if attempt + 1 == DATASET_ATTEMPTS or not _duplicate_key(err):
                    raise
                time.sleep(0.1 * (attempt + 1))

    @_store_call
    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        if self.run_id is None:
            return
        self._stop_system_metrics()
        if error:
            self.set_tags({"mlc.error": error})
        self.client.set_terminated(self.run_id, status=status)


def make_tracker(settings: TrackingSettings) -> MLflowTracker | NullTracker:
    return MLflowTracker(settings) if settings.enabled else NullTracker()


def tracking_settings(config: DictConfig) -> TrackingSettings:
    from hydra.utils import instantiate

    return instantiate(config.tracking)


def git_tags() -> dict[str, str]:
    """The code's commit as MLflow tags (none when mlc does not run from a git checkout)."""
    commit = git_commit()
    return {} if commit is None else {"mlflow.source.git.commit": commit[0], "mlc.git_dirty": str(commit[1]).lower()}


def quiet_mlflow_logs() -> None:
    """MLflow's SQLite store logs every schema migration at INFO; keep the console readable."""
    for name in ("alembic", "mlflow.tracking.fluent", "mlflow.store", "mlflow.system_metrics"):
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
