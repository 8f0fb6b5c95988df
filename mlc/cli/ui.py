"""``python -m mlc.cli.ui [--optuna | --serve]``: MLflow dashboard, optuna-dashboard, or a shared tracking server.

``python -m mlc.cli.ui [--outputs outputs] [--host 127.0.0.1] [--port 5000]`` serves the MLflow tracking store
(``<outputs>/mlflow.db``) and its artifacts, so runs, sweeps (parent run with nested trials), per-epoch
curves and checkpoints can be compared in a browser. ``make ui`` runs this with the default ``outputs/``.

``python -m mlc.cli.ui --optuna [--storage URL] [--outputs outputs] [--host 127.0.0.1] [--port 8080]`` serves
optuna-dashboard (its own command line, run with this interpreter) over the sweeps' Optuna studies: by
default ``sqlite:///<outputs>/optuna.db``, where ``hydra/sweeper=study_grid`` stores them. A SQLite store
that does not exist is refused (exit 2) rather than created empty at a mistyped path; other storage URLs
(PostgreSQL, MySQL, journal files, ...) are handed to optuna-dashboard as given.

``python -m mlc.cli.ui --serve [--backend-store-uri URI] [--artifacts-destination DIR] [--host 127.0.0.1]
[--port 5000]`` (``make server``) runs ``mlflow server`` as a tracking server shared by runs and sweeps
in several processes or on several machines; they log to it with the override it prints,
``tracking.tracking_uri=http://127.0.0.1:5000``. Its backend store defaults to
``sqlite:///<outputs>/mlflow-server.db`` (``postgresql://user@host:5432/db`` for many concurrent
writers), and it proxies artifacts: clients upload checkpoints and files through HTTP, the server
writes them under ``--artifacts-destination`` (default ``<outputs>/mlartifacts-server``; an
``s3://...``-style URI is handed to MLflow as given). The store is deliberately not the local
``<outputs>/mlflow.db``: its experiments were created with a local artifact location
(``<outputs>/mlartifacts``), and runs logged to them through a server would write their artifacts to
that path on each client's own disk instead of uploading them; a store that holds such experiments
is served with a warning naming them. The server runs one worker process (the schema of a fresh
store is created once, not raced by several workers; requests are still served concurrently), and
without MLflow's GenAI job runner (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` unless set).

All modes bind to 127.0.0.1 unless ``--host`` says otherwise; a non-loopback ``--host`` (``0.0.0.0``)
is warned about, as none of these servers has authentication. Clients that reach the tracking server
by a host name rather than localhost or a private IP also need that name in MLflow's allowed hosts
(``MLFLOW_SERVER_ALLOWED_HOSTS=name:5000`` in the server's environment). A port already in use, a host
that cannot be bound or a mistyped store URL is one ``error:`` line and exit code 2. ``--outputs``
defaults to ``$MLC_OUTPUTS`` or ``outputs``, as for training.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sqlite3
import sys
from contextlib import closing
from importlib.metadata import entry_points
from pathlib import Path

from mlc.errors import ConfigError
from mlc.stores import check_database_url, sqlite_file

MLFLOW_PORT = 5000
OPTUNA_PORT = 8080
SERVER_STORE = "mlflow-server.db"  # the tracking server's default backend store, in <outputs>
SERVER_ARTIFACTS = "mlartifacts-server"  # ... and where it writes the artifacts clients upload
PROXIED_ARTIFACTS = ("mlflow-artifacts:", "http://", "https://")  # artifact locations that go through a server


class UsageError(Exception):
    """A bad option value: reported as one ``error: ...`` line, exit code 2."""


def server_command(outputs: Path, host: str = "127.0.0.1", port: int = MLFLOW_PORT, workers: int = 1) -> list[str]:
    outputs = outputs.resolve()
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
            "--backend-store-uri", f"sqlite:///{outputs / 'mlflow.db'}",
            "--default-artifact-root", (outputs / "mlartifacts").as_uri()]


def tracking_server_command(backend_store_uri: str, artifacts_destination: str, host: str = "127.0.0.1",
                            port: int = MLFLOW_PORT) -> list[str]:
    """``mlflow server`` with proxied artifacts: experiments it creates get ``mlflow-artifacts:/<id>``
    (its default artifact root when it serves artifacts), so clients upload through HTTP."""
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
            "--backend-store-uri", backend_store_uri,
            "--serve-artifacts", "--artifacts-destination", artifacts_destination]


def check_backend_store(uri: str, folder_made: bool = False) -> str:
    """``uri`` if it names a database the server can open: a SQLAlchemy URL of a known database whose
    driver is installed, a SQLite file in an existing folder (a fresh server creates the file; with
    ``folder_made``, the caller creates the folder)."""
    try:
        check_database_url(uri, "--backend-store-uri")
    except ConfigError as err:
        raise UsageError(f"--backend-store-uri {uri!r}: {err.reason}") from None
    path = sqlite_file(uri)
    if path is not None and not folder_made and not path.parent.is_dir():
        raise UsageError(f"--backend-store-uri {uri!r}: no such folder {path.parent} (nothing was created; "
                         "check the path)")
    from sqlalchemy.engine import make_url

    try:
        make_url(uri).get_dialect().import_dbapi()
    except ImportError as err:
        raise UsageError(f"--backend-store-uri {uri!r}: its database driver is not installed ({err})") from None
    return uri


def artifacts_destination(value: str, folder_made: bool = False) -> tuple[str, Path | None]:
    """A local folder as an absolute ``file://`` URI and the folder (its parent must exist unless
    ``folder_made``: the caller creates it), or a remote URI (``s3://bucket/path``, ...) handed to
    MLflow as given, and None."""
    from urllib.parse import unquote, urlparse

    if not value.strip():
        raise UsageError(f"--artifacts-destination {value!r}: give a folder or a URI such as s3://bucket/path")
    if "://" in value and not value.startswith("file://"):
        return value, None
    path = Path(unquote(urlparse(value).path) if value.startswith("file://") else value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--artifacts-destination {value!r}: {path} is not a folder")
    if not folder_made and not path.parent.is_dir():
        raise UsageError(f"--artifacts-destination {value!r}: no such folder {path.parent} (nothing was created; "
                         "check the path)")
    return path.as_uri(), path


def local_artifact_experiments(uri: str) -> list[str]:
    """Names of the experiments in an existing SQLite store whose artifacts are not proxied (created by
    local runs, or by a server without --serve-artifacts); [] for other stores or when unreadable."""
    path = sqlite_file(uri)
    if path is None or not path.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
            rows = conn.execute("SELECT name, artifact_location FROM experiments").fetchall()
    except sqlite3.Error:  # not an MLflow store yet (or locked): the server says what it finds
        return []
    return [name for name, location in rows if not str(location or "").startswith(PROXIED_ARTIFACTS)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go: a port in use or an address not of this machine is one line
    here, not a server's traceback after it started. SO_REUSEADDR, as servers set it: a port still in
    TIME_WAIT from a stopped server is free, one that something listens on is not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port}: already in use on {host} (another server? pick another --port)") \
                from None
        raise UsageError(f"--host {host}: cannot listen there ({reason})") from None


def client_uri(host: str, port: int) -> str:
    """The URL that clients on this machine use for a server bound to ``host``."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def default_optuna_storage(outputs: Path) -> str:
    """The sweeps' study store (``conf/hydra/sweeper/study_grid.yaml``: ``sqlite:///${paths.outputs}/optuna.db``)."""
    return f"sqlite:///{(outputs / 'optuna.db').resolve()}"


def sqlite_path(storage: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URL (query string dropped), or None for other storages."""
    if not storage.startswith("sqlite:"):
        return None
    if not storage.startswith("sqlite:///"):
        raise UsageError(f"--storage {storage!r}: a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
    path = storage[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:"):
        raise UsageError(f"--storage {storage!r}: an in-memory SQLite database holds no studies; give a file")
    return Path(path)


def check_optuna_storage(storage: str) -> None:
    """Refuse a SQLite store (or journal file) that does not exist: optuna-dashboard would create it empty."""
    path = sqlite_path(storage)
    if path is None and "://" not in storage:
        path = Path(storage)  # optuna-dashboard reads a plain path as a journal file
    if path is None:
        return
    if not path.exists():
        raise UsageError(f"--storage {storage!r}: no such file {path} (run a sweep first, or point --storage at "
                         "an existing study store)")
    if not path.is_file():
        raise UsageError(f"--storage {storage!r}: {path} is not a file")


def optuna_dashboard_command(storage: str, host: str = "127.0.0.1", port: int = OPTUNA_PORT) -> list[str]:
    """optuna-dashboard's own CLI, through this interpreter (its console-script entry point, not PATH).

    ``--server wsgiref``: one threaded process (gunicorn, picked by default when installed, forks workers
    and opens a control socket under ``~/.gunicorn``), enough for a local dashboard.
    """
    found = entry_points(group="console_scripts", name="optuna-dashboard")
    if not found:
        raise UsageError("--optuna: optuna-dashboard is not installed (pip install -c constraints.txt "
                         "optuna-dashboard)")
    entry = next(iter(found))
    launcher = (f"import sys; from {entry.module} import {entry.attr} as main; "
                "sys.argv[0] = 'optuna-dashboard'; sys.exit(main())")
    return [sys.executable, "-c", launcher, storage, "--host", host, "--port", str(port), "--server", "wsgiref"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlc.cli.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default=os.environ.get("MLC_OUTPUTS", "outputs"), type=Path,
                        help="mlc's outputs folder (default: $MLC_OUTPUTS or outputs)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", default=None, type=int,
                        help=f"port (default: {MLFLOW_PORT} for MLflow, {OPTUNA_PORT} with --optuna)")
    parser.add_argument("--optuna", action="store_true", help="serve optuna-dashboard over the sweeps' studies")
    parser.add_argument("--storage", default=None,
                        help="with --optuna: Optuna storage URL (default: sqlite:///<outputs>/optuna.db)")
    parser.add_argument("--serve", action="store_true",
                        help="run a shared MLflow tracking server (proxied artifacts) for runs and sweeps")
    parser.add_argument("--backend-store-uri", default=None,
                        help=f"with --serve: its store, SQLite or PostgreSQL URL (default: "
                             f"sqlite:///<outputs>/{SERVER_STORE})")
    parser.add_argument("--artifacts-destination", default=None,
                        help=f"with --serve: where it writes uploaded artifacts, a folder or s3://... URI "
                             f"(default: <outputs>/{SERVER_ARTIFACTS})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.port is not None and not 0 < args.port < 65536:
            raise UsageError(f"--port {args.port}: must be in 1..65535")
        if args.serve and args.optuna:
            raise UsageError("--serve: not with --optuna (one server at a time)")
        for given, option in ((args.backend_store_uri, "--backend-store-uri"),
                              (args.artifacts_destination, "--artifacts-destination")):
            if given is not None and not args.serve:
                raise UsageError(f"{option}: only with --serve (the dashboard serves <outputs>/mlflow.db)")
        if args.optuna:
            cmd = optuna_main(args)
        else:
            if args.storage is not None:
                raise UsageError("--storage: only with --optuna (the MLflow store is <outputs>/mlflow.db, or "
                                 "--backend-store-uri with --serve)")
            cmd = serve_main(args) if args.serve else mlflow_main(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.execv(cmd[0], cmd)
    return 0  # not reached: execv replaces this process


def warn_if_exposed(host: str, port: int) -> None:
    if not is_loopback(host):
        print(f"warning: --host {host}: this server has no authentication; anyone who can reach port {port} "
              "can read and change everything it serves", file=sys.stderr, flush=True)


def mlflow_main(args: argparse.Namespace) -> list[str]:
    port = MLFLOW_PORT if args.port is None else args.port
    check_bindable(args.host, port)
    warn_if_exposed(args.host, port)
    args.outputs.mkdir(parents=True, exist_ok=True)
    if not (args.outputs / "mlflow.db").exists():
        print(f"note: no runs yet in {args.outputs}/mlflow.db; the dashboard will show them as they are logged")
    print(f"MLflow dashboard: http://{args.host}:{port}  (store {args.outputs}/mlflow.db; Ctrl-C to stop)\n"
          "  (MLflow opens experiments in its GenAI view: click 'Model training' at the top of its sidebar once; "
          "the browser remembers it)", flush=True)
    return server_command(args.outputs, args.host, port)


def optuna_main(args: argparse.Namespace) -> list[str]:
    port = OPTUNA_PORT if args.port is None else args.port
    storage = args.storage if args.storage is not None else default_optuna_storage(args.outputs)
    check_optuna_storage(storage)
    cmd = optuna_dashboard_command(storage, args.host, port)
    check_bindable(args.host, port)
    warn_if_exposed(args.host, port)
    print(f"Optuna dashboard: http://{args.host}:{port}  (storage {storage}; Ctrl-C to stop)", flush=True)
    return cmd


def serve_main(args: argparse.Namespace) -> list[str]:
    port = MLFLOW_PORT if args.port is None else args.port
    outputs = args.outputs.resolve()
    # The defaults live in <outputs>, created if need be; a given SQLite file's or folder's parent must exist.
    given_store, given_artifacts = args.backend_store_uri, args.artifacts_destination
    backend = check_backend_store(f"sqlite:///{outputs / SERVER_STORE}" if given_store is None else given_store,
                                  folder_made=given_store is None)
    artifacts, folder = artifacts_destination(str(outputs / SERVER_ARTIFACTS) if given_artifacts is None
                                              else given_artifacts, folder_made=given_artifacts is None)
    check_bindable(args.host, port)
    if given_store is None:  # all checked: nothing is created before this point
        outputs.mkdir(parents=True, exist_ok=True)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    warn_if_exposed(args.host, port)
    local = local_artifact_experiments(backend)
    if local:
        print(f"warning: {backend} holds experiments with a local artifact location ({', '.join(local)}): runs "
              f"logged to them through this server write artifacts on the client's disk, not here; serve a fresh "
              f"store (the default is <outputs>/{SERVER_STORE})", file=sys.stderr, flush=True)
    from sqlalchemy.engine import make_url

    shown = make_url(backend).render_as_string(hide_password=True)  # a PostgreSQL password stays off the console
    uri = client_uri(args.host, port)
    elsewhere = f"; from other machines http://<this machine's address>:{port}" if not is_loopback(args.host) else ""
    print(f"MLflow tracking server: {uri}  (store {shown}; artifacts {artifacts}; Ctrl-C to stop)\n"
          f"log runs and sweeps to it with:  tracking.tracking_uri={uri}{elsewhere}", flush=True)
    # MLflow's GenAI job runner (a process tree of task consumers) does nothing for mlc's runs.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return tracking_server_command(backend, artifacts, args.host, port)


if __name__ == "__main__":
    sys.exit(main())
