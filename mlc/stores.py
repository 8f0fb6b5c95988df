"""The databases behind tracking and sweeps: URL checks, and safe creation when processes start together.

mlc keeps two stores, MLflow's (``outputs/mlflow.db``) and Optuna's (``outputs/optuna.db``), SQLite
by default, any SQLAlchemy database by URL. Two things go wrong with them that this module prevents:

- **A fresh SQLite store opened by several processes at once.** MLflow creates and migrates its
  schema when its store is first opened, without a lock; two runs or sweep workers started at the
  same moment both run the migration and one crashes (``table runs already exists``). Every open
  of a SQLite store goes through ``opening(url)``, which holds an exclusive ``flock`` on
  ``<db>.lock`` beside the file while the store is built, so the schema is created exactly once;
  it then switches the file to WAL journaling (readers no longer block the writer; SQLite's
  advice for concurrent access), once. Busy timeouts are set by the callers' engines (MLflow sets
  20 s per session; Optuna's engine gets ``SQLITE_TIMEOUT_S``).
- **A mistyped URL.** ``check_database_url`` rejects what SQLAlchemy cannot parse, an unknown
  database, and SQLite URLs without a file, in one line naming the config key — before anything is
  created (a mistyped SQLite path would otherwise become a new, empty database).
"""

from __future__ import annotations

import difflib
import errno
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlc.errors import ConfigError

MARKER = ".mlc-outputs"  # written by mlc.config.mark_outputs into every outputs folder; mlc.cli.clean cleans no other
MARKER_TEXT = ("mlc writes its runs, sweeps, caches and stores into this folder; `make clean` removes only those, "
               "and only from a folder holding this file.\n")

log = logging.getLogger("mlc.stores")

DATABASES = ("sqlite", "postgresql", "mysql")
SQLITE_TIMEOUT_S = 60  # how long a connection waits for another process's write lock


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URL (``None`` for other URLs)."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


def check_database_url(url: object, key: str, must_exist: bool = False) -> str:
    """``url`` if it names a usable database, else ``ConfigError(key, ...)``; creates nothing.

    ``must_exist``: a SQLite file must already be there (commands that only read a store).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str) or not url.strip():
        raise ConfigError(key, url, "must be a database URL such as sqlite:///outputs/optuna.db")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(key, url, "not a database URL (expected e.g. sqlite:///outputs/optuna.db or "
                                    "postgresql://user@host:5432/db)") from None
    backend = parsed.get_backend_name()
    if backend not in DATABASES:
        close = difflib.get_close_matches(backend, DATABASES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(key, url, f"unsupported database '{backend}'{hint}: use one of {', '.join(DATABASES)}")
    if backend == "sqlite":
        path = sqlite_file(url)
        if path is None or parsed.host or not parsed.database or parsed.database == ":memory:":
            raise ConfigError(key, url, "a SQLite URL names a file after three slashes: sqlite:///path/to/file.db "
                                        "(four for an absolute path)")
        if must_exist and not path.is_file():
            raise ConfigError(key, url, f"no such database file {path} (nothing was created; check the path)")
        if path.is_dir():
            raise ConfigError(key, url, f"{path} is a directory, not a database file")
    elif not parsed.host:
        raise ConfigError(key, url, f"a {backend} URL needs a host: {backend}://user@host:port/database")
    return url


JOURNAL = "journal:///"  # Optuna's JournalStorage on a file: journal:///path/to/optuna.log


def journal_file(url: str) -> Path | None:
    """The log file of a ``journal:///<path>`` URL (``None`` for other URLs)."""
    return Path(url[len(JOURNAL):]) if isinstance(url, str) and url.startswith(JOURNAL) else None


def check_storage_url(url: object, key: str, must_exist: bool = False) -> str:
    """An Optuna storage URL: a database (``check_database_url``) or ``journal:///<file>`` (Optuna's
    append-only journal file, safe for several processes on one machine through file locks)."""
    path = journal_file(url) if isinstance(url, str) else None
    if path is None:
        if isinstance(url, str) and url.startswith("journal:"):
            raise ConfigError(key, url, "a journal URL names a file after three slashes: journal:///path/to/optuna.log")
        return check_database_url(url, key, must_exist)
    if not str(path).strip() or path.is_dir():
        raise ConfigError(key, url, "a journal URL names a file: journal:///path/to/optuna.log")
    if must_exist and not path.is_file():
        raise ConfigError(key, url, f"no such journal file {path} (nothing was created; check the path)")
    return url


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), released when the block ends or the
    process dies — a killed holder never leaves a stale lock behind."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def opening(url: str) -> Iterator[None]:
    """Hold the store's creation lock while the caller builds its store object on ``url``.

    SQLite: a ``flock`` on ``<db>.lock``, then WAL journaling. PostgreSQL: a session advisory lock on
    the server — Optuna and MLflow create their tables without one, and two processes building them
    at once in an empty database collide (``duplicate key ... pg_type_typname_nsp_index``). Other
    URLs: nothing.
    """
    if url.startswith("postgresql"):
        with _postgres_lock(url):
            yield
        return
    path = sqlite_file(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        yield
        _use_wal(path)


def _use_wal(path: Path) -> None:
    """Switch the file to WAL journaling (persistent, so done once per file). Where the file system
    cannot share memory between processes (some network file systems), SQLite refuses and the file
    keeps its rollback journal, which is still correct, only slower under concurrency."""
    if not path.is_file():
        return
    try:
        with sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S) as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.close()
    except sqlite3.Error as err:
        log.debug("%s: journal mode unchanged (%s)", path, err)
        return
    if mode != "wal":
        log.debug("%s: SQLite kept journal mode %s", path, mode)


def os_error_reason(err: OSError) -> str:
    """'no space left on device (ENOSPC)': the reason of an OSError as users search for it."""
    name = errno.errorcode.get(err.errno or 0)
    text = os.strerror(err.errno) if err.errno else str(err)
    return f"{text[:1].lower()}{text[1:]} ({name})" if name else text


SCHEMA_LOCK_KEY = 0x6D6C63  # "mlc": the advisory lock every mlc process takes while building a store's schema


@contextmanager
def _postgres_lock(url: str) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock ``SCHEMA_LOCK_KEY`` for the block (released when the block ends or
    the connection drops). A server that cannot be reached is left to the caller to report."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        conn = engine.connect()
    except Exception:  # the store's own open names the reason (refused, bad credentials, no database)
        engine.dispose()
        yield
        return
    try:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
        yield
    finally:
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK_KEY})
        finally:
            conn.close()
            engine.dispose()
