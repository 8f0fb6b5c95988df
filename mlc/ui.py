"""``python -m mlc.ui [--optuna]``: the MLflow dashboard over mlc's runs, or optuna-dashboard over its sweeps.

``python -m mlc.ui [--outputs outputs] [--host 127.0.0.1] [--port 5000]`` serves the MLflow tracking store
(``<outputs>/mlflow.db``) and its artifacts, so runs, sweeps (parent run with nested trials), per-epoch
curves and checkpoints can be compared in a browser. ``make ui`` runs this with the default ``outputs/``.

``python -m mlc.ui --optuna [--storage URL] [--outputs outputs] [--host 127.0.0.1] [--port 8080]`` serves
optuna-dashboard (its own command line, run with this interpreter) over the sweeps' Optuna studies: by
default ``sqlite:///<outputs>/optuna.db``, where ``hydra/sweeper=study_grid`` stores them. A SQLite store
that does not exist is refused (exit 2) rather than created empty at a mistyped path; other storage URLs
(PostgreSQL, MySQL, journal files, ...) are handed to optuna-dashboard as given.

Both bind to 127.0.0.1 unless ``--host`` says otherwise; ``--outputs`` defaults to ``$MLC_OUTPUTS`` or
``outputs``, as for training.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

MLFLOW_PORT = 5000
OPTUNA_PORT = 8080


class UsageError(Exception):
    """A bad option value: reported as one ``error: ...`` line, exit code 2."""


def server_command(outputs: Path, host: str = "127.0.0.1", port: int = MLFLOW_PORT, workers: int = 1) -> list[str]:
    outputs = outputs.resolve()
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
            "--backend-store-uri", f"sqlite:///{outputs / 'mlflow.db'}",
            "--default-artifact-root", (outputs / "mlartifacts").as_uri()]


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
    parser = argparse.ArgumentParser(prog="python -m mlc.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default=os.environ.get("MLC_OUTPUTS", "outputs"), type=Path,
                        help="mlc's outputs folder (default: $MLC_OUTPUTS or outputs)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", default=None, type=int,
                        help=f"port (default: {MLFLOW_PORT} for MLflow, {OPTUNA_PORT} with --optuna)")
    parser.add_argument("--optuna", action="store_true", help="serve optuna-dashboard over the sweeps' studies")
    parser.add_argument("--storage", default=None,
                        help="with --optuna: Optuna storage URL (default: sqlite:///<outputs>/optuna.db)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.port is not None and not 0 < args.port < 65536:
            raise UsageError(f"--port {args.port}: must be in 1..65535")
        if args.optuna:
            cmd = optuna_main(args)
        else:
            if args.storage is not None:
                raise UsageError("--storage: only with --optuna (the MLflow store is <outputs>/mlflow.db)")
            cmd = mlflow_main(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.execv(cmd[0], cmd)
    return 0  # not reached: execv replaces this process


def mlflow_main(args: argparse.Namespace) -> list[str]:
    port = MLFLOW_PORT if args.port is None else args.port
    args.outputs.mkdir(parents=True, exist_ok=True)
    if not (args.outputs / "mlflow.db").exists():
        print(f"note: no runs yet in {args.outputs}/mlflow.db; the dashboard will show them as they are logged")
    print(f"MLflow dashboard: http://{args.host}:{port}  (store {args.outputs}/mlflow.db; Ctrl-C to stop)",
          flush=True)
    return server_command(args.outputs, args.host, port)


def optuna_main(args: argparse.Namespace) -> list[str]:
    port = OPTUNA_PORT if args.port is None else args.port
    storage = args.storage if args.storage is not None else default_optuna_storage(args.outputs)
    check_optuna_storage(storage)
    cmd = optuna_dashboard_command(storage, args.host, port)
    print(f"Optuna dashboard: http://{args.host}:{port}  (storage {storage}; Ctrl-C to stop)", flush=True)
    return cmd


if __name__ == "__main__":
    sys.exit(main())
