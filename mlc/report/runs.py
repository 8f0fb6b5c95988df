"""Everything the report reads from (and writes to) MLflow, and the plain run records it works on.

The rest of the report never sees an MLflow object: runs become ``RunRecord`` values here (id,
name, group values, seed, metrics, params, tags), so statistics and tables are pure functions that
tests can feed by hand. Store failures and bad options become one-line ``ReportError``s naming the
option and what exists instead (experiment names, metric names, ...), because a report asked of
the wrong store should say so, not print an empty table.
"""

from __future__ import annotations

import difflib
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlc.errors import ConfigError, MlcError
from mlc.stores import check_database_url, opening

RUN_KIND, SWEEP_KIND, REPORT_KIND = "run", "sweep", "report"
KIND_TAG, SWEEP_DIR_TAG = "mlc.kind", "mlc.sweep_dir"
# Set by the trainer (mlc.engine.callbacks.DEGENERATE_TAG) on a run whose best checkpoint's validation
# predictions are degenerate; its value is the rule broken (mlc.metrics.DEGENERATE_RULES).
DEGENERATE_TAG = "mlc.degenerate"
PAGE_SIZE = 1000  # runs per search_runs page (MLflow's own maximum for SQL stores is 50,000)
# A group key ``k`` is the tag ``mlc.<k>``, else the param ``<k>``; these params stand in when a run
# lacks the tag (runs tracked before the tag existed carry only the flattened config).
PARAM_ALIASES = {"backbone": "backbone.name", "lam": "loss.lam", "negative_ratio": "dataset.negative_ratio",
                 "monitor": "trainer.monitor"}
SCORES_ARTIFACT = "scores/test.csv"


class ReportError(MlcError):
    """Bad input to the report (an option naming nothing that exists): printed as one ``error:`` line."""


@dataclass
class RunRecord:
    """One training run as plain data. ``group`` and ``seed`` are filled by ``assign_groups``."""

    run_id: str
    name: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each metric
    group: tuple[str, ...] = ()
    seed: str | None = None
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # filled on demand

    def value(self, key: str) -> str | None:
        """The run's value of a group key: tag ``mlc.<key>``, else param ``<key>``, else its alias param."""
        for found in (self.tags.get(f"mlc.{key}"), self.params.get(key), self.params.get(PARAM_ALIASES.get(key, ""))):
            if found is not None and found != "":
                return found
        return None

    @property
    def seed_value(self) -> str | None:
        return self.tags.get("mlc.seed") or self.params.get("seed")

    @property
    def monitor(self) -> str | None:
        """The validation metric the run selected its checkpoint on, as logged (``val/f2_macro``)."""
        name = self.tags.get("mlc.monitor") or self.params.get("trainer.monitor")
        if not name:
            return None
        return name if "/" in name else f"val/{name}"

    @property
    def lam(self) -> float | None:
        return _number(self.tags.get("mlc.lam") or self.params.get("loss.lam"))

    @property
    def negative_ratio(self) -> float | None:
        return _number(self.tags.get("mlc.negative_ratio") or self.params.get("dataset.negative_ratio"))


def store_uri(tracking_uri: str | None, outputs: str | None) -> str:
    """``--tracking-uri`` wins; else the SQLite store that training writes under ``--outputs``."""
    if tracking_uri:
        return tracking_uri
    outputs = outputs or os.environ.get("MLC_OUTPUTS") or "outputs"
    return f"sqlite:///{outputs}/mlflow.db"


def open_client(uri: str, option: str) -> Any:
    """An ``MlflowClient`` on an existing store; a missing SQLite file is an error, never a new empty store."""
    # deferred: mlc.tracking loads OmegaConf; `mlc report --help` (via mlc.report.cli) loads the stdlib alone
    from mlc.tracking import check_tracking_uri, quiet_mlflow_logs

    quiet_mlflow_logs()
    try:
        check_tracking_uri(uri)
        if uri.startswith(("sqlite", "postgresql", "mysql")):
            check_database_url(uri, option, must_exist=True)
        elif uri.startswith("file:"):
            from urllib.parse import urlparse

            if not Path(urlparse(uri).path).is_dir():
                raise ConfigError(option, uri, f"no such MLflow file store {urlparse(uri).path} (nothing was created)")
        elif uri.startswith(("http://", "https://")):
            # deferred: mlc.tracking loads OmegaConf (see above); one short probe instead of MLflow's minutes of retries
            from mlc.tracking import _probe_server

            _probe_server(uri)
    except ConfigError as err:
        raise ReportError(f"{option}={uri!r}: {err.reason}") from None
    from mlflow.tracking import MlflowClient

    try:
        with opening(uri):  # an old store may be migrated on open: one process at a time, as training does
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except Exception as err:
        raise ReportError(f"{option}={uri!r}: cannot open the MLflow store ({_first_line(err)})") from None
    return client


def find_experiment(client: Any, name: str) -> Any:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found
    names = sorted(e.name for e in _all_experiments(client))
    hint = difflib.get_close_matches(name, names, n=1)
    raise ReportError(f"--experiment={name!r}: no such experiment in the store"
                      f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; it has: {', '.join(names) or 'none'}")


def search_runs(client: Any, experiment_id: str, filter_string: str | None, all_statuses: bool) -> list[Any]:
    """Every training run (``mlc.kind=run``) matching the filter, all pages, oldest first."""
    parts = [f"tags.`{KIND_TAG}` = '{RUN_KIND}'"]
    if not all_statuses:
        parts.append("attributes.status = 'FINISHED'")
    if filter_string and filter_string.strip():
        parts.append(filter_string.strip())
    try:
        return _all_pages(client, experiment_id, " and ".join(parts))
    except Exception as err:  # MLflow's parser names the bad token
        raise ReportError(f"--filter={filter_string!r}: MLflow rejected the search ({_first_line(err)})") from None


def describe_experiment(client: Any, experiment_id: str) -> str:
    """What the experiment holds, by kind and status: the context of a "no matching runs" error."""
    runs = _all_pages(client, experiment_id, "")
    counts = Counter((r.data.tags.get(KIND_TAG), r.info.status) for r in runs)
    parts = [f"{n} {status} {f'{KIND_TAG}={kind}' if kind else f'without an {KIND_TAG} tag'}"
             for (kind, status), n in sorted(counts.items(), key=lambda kv: (kv[0][0] or "~", kv[0][1]))]
    return f"{len(runs)} runs: {', '.join(parts)}" if runs else "no runs"


def to_record(run: Any) -> RunRecord:
    return RunRecord(run_id=run.info.run_id, name=run.info.run_name or run.info.run_id[:8], status=run.info.status,
                     start_time=int(run.info.start_time or 0), tags=dict(run.data.tags),
                     params=dict(run.data.params), metrics={k: float(v) for k, v in run.data.metrics.items()})


def get_run_record(client: Any, run_id: str) -> RunRecord | None:
    try:
        return to_record(client.get_run(run_id))
    except Exception:
        return None


def load_history(client: Any, record: RunRecord, key: str) -> list[tuple[int, float]]:
    """The metric's values by step (the last logged value of a step wins: a resumed run may repeat one)."""
    if key not in record.histories:
        by_step: dict[int, tuple[int, float]] = {}
        for m in client.get_metric_history(record.run_id, key):
            if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
                by_step[m.step] = (m.timestamp, float(m.value))
        record.histories[key] = sorted((step, v) for step, (_, v) in by_step.items())
    return record.histories[key]


def download_scores(client: Any, run_id: str, dst: Path) -> Path | None:
    """The run's test scores file (and its sidecar) in ``dst``, or None when the run has none."""
    dst.mkdir(parents=True, exist_ok=True)
    with _no_progress_bars():
        try:
            path = Path(client.download_artifacts(run_id, SCORES_ARTIFACT, str(dst)))
        except Exception:
            return None
        try:  # optional: read_scores works without it, only with less metadata
            client.download_artifacts(run_id, SCORES_ARTIFACT + ".json", str(dst))
        except Exception:
            pass
    return path if path.is_file() else None


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded file; a report prints one line per file it writes instead."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def log_report_run(client: Any, experiment_id: str, name: str, directory: Path, tags: dict[str, str]) -> str:
    """A FINISHED run tagged ``mlc.kind=report`` holding every file of ``directory`` as artifacts."""
    run = client.create_run(experiment_id, run_name=name, tags={KIND_TAG: REPORT_KIND, **tags})
    try:
        client.log_artifacts(run.info.run_id, str(directory))
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _all_pages(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=PAGE_SIZE,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _all_experiments(client: Any) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_experiments(max_results=PAGE_SIZE, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "None", "null") else None
    except ValueError:
        return None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__
