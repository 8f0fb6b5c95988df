"""The stores behind tracking and sweeps: fresh SQLite files opened by many processes at once, URL checks."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from mlc.errors import ConfigError
from mlc.stores import check_database_url, file_lock
from mlc.tracking import check_tracking_uri
from tests.conftest import ROOT, cli_env

# One process: open the store, create a run in the shared experiment, finish it.
OPEN_AND_LOG = """
import sys
from mlc.tracking import MLflowTracker, TrackingSettings
out = sys.argv[1]
tracker = MLflowTracker(TrackingSettings(tracking_uri=f"sqlite:///{out}/mlflow.db", artifact_root=f"{out}/mlartifacts"))
tracker.start(run_name=f"worker-{sys.argv[2]}")
tracker.log_metrics({"x": 1.0})
tracker.end()
"""


@pytest.mark.slow
def test_processes_starting_together_on_a_fresh_mlflow_store_all_succeed(outputs):
    # Without the creation lock, MLflow migrates a fresh SQLite schema in every process at once and most of
    # them crash ("table runs already exists"); measured here before the fix: 2 of 3 failed.
    workers = [subprocess.Popen([sys.executable, "-c", OPEN_AND_LOG, str(outputs), str(i)], cwd=ROOT,
                                env=cli_env(outputs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(4)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=180)
        assert worker.returncode == 0, stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("mlc").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"worker-{i}" for i in range(4)]
    assert all(r.info.status == "FINISHED" for r in runs)
    with sqlite3.connect(outputs / "mlflow.db") as conn:  # and the file is in WAL mode for concurrent writers
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_file_lock_excludes_another_process(tmp_path):
    lock = tmp_path / "x.lock"
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")
    with file_lock(lock):
        held = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout
    free = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout
    assert (held.strip(), free.strip()) == ("held", "free")


@pytest.mark.parametrize("url,reason", [
    ("sqlite:///outputs/optuna.db", None),
    ("sqlite:////abs/path/optuna.db", None),
    ("postgresql://user@localhost:5432/optuna", None),
    ("mysql+pymysql://user@db.example.org/optuna", None),
    ("sqlite://optuna.db", "a SQLite URL names a file after three slashes"),
    ("sqlite://", "a SQLite URL names a file"),
    ("sqlite:///:memory:", "a SQLite URL names a file"),
    ("postgres-ql://u@h/db", "not a database URL"),
    ("postgress://u@h/db", "unsupported database 'postgress' (did you mean postgresql?)"),
    ("postgresql:///db", "a postgresql URL needs a host"),
    ("outputs/optuna.db", "not a database URL"),
    ("", "must be a database URL"),
])
def test_database_urls(url, reason):
    if reason is None:
        assert check_database_url(url, "storage") == url
    else:
        with pytest.raises(ConfigError, match=re.escape(reason)) as err:
            check_database_url(url, "storage")
        assert err.value.key == "storage"


def test_a_store_that_must_exist_is_not_created(tmp_path):
    url = f"sqlite:///{tmp_path}/missing.db"
    with pytest.raises(ConfigError, match="no such database file"):
        check_database_url(url, "storage", must_exist=True)
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("uri,reason", [
    ("sqlite:///outputs/mlflow.db", None),
    ("http://127.0.0.1:5000", None),
    ("file:///tmp/mlruns", None),
    ("sqllite:///outputs/mlflow.db", "unknown scheme 'sqllite' (did you mean sqlite?)"),
    ("htp://localhost:5000", "unknown scheme 'htp' (did you mean http?)"),
    ("http://", "an MLflow server URI needs a host"),
    ("sqlite://mlflow.db", "a SQLite URL names a file after three slashes"),
])
def test_tracking_uris_are_checked_without_contacting_anything(uri, reason):
    if reason is None:
        check_tracking_uri(uri)
    else:
        with pytest.raises(ConfigError, match=re.escape(reason)):
            check_tracking_uri(uri)


def test_optuna_storage_urls_journal_and_memory(tmp_path):
    import optuna

    from mlc.errors import ConfigError
    from mlc.stores import check_storage_url
    from mlc.sweep.study import open_storage

    url = f"journal:///{tmp_path}/j/optuna.log"
    assert check_storage_url(url, "k") == url
    for bad, reason in (("journal://x.log", "three slashes"), (f"journal:///{tmp_path}", "names a file"),
                        ("journl:///x.log", "unsupported database")):
        with pytest.raises(ConfigError, match=reason):
            check_storage_url(bad, "k")
    with pytest.raises(ConfigError, match="no such journal file"):
        check_storage_url(f"journal:///{tmp_path}/none.log", "k", must_exist=True)
    # Two handles on one journal file (two processes would do the same) see each other's trials.
    first, second = open_storage(url), open_storage(url)
    study = optuna.create_study(study_name="s", storage=first)
    study.tell(study.ask(), 1.0)
    assert len(optuna.load_study(study_name="s", storage=second).get_trials()) == 1
    assert isinstance(open_storage(None), optuna.storages.InMemoryStorage)
