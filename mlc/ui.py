"""``python -m mlc.ui [--outputs outputs] [--port 5000]``: the MLflow dashboard over mlc's store.

Serves the SQLite tracking store (``<outputs>/mlflow.db``) and its artifacts on 127.0.0.1, so runs,
sweeps (parent run with nested trials), per-epoch curves and checkpoints can be compared in a
browser. ``make ui`` runs this with the default ``outputs/``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def server_command(outputs: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    outputs = outputs.resolve()
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
            "--backend-store-uri", f"sqlite:///{outputs / 'mlflow.db'}",
            "--default-artifact-root", (outputs / "mlartifacts").as_uri()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default=os.environ.get("MLC_OUTPUTS", "outputs"), type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=5000, type=int)
    args = parser.parse_args(argv)
    args.outputs.mkdir(parents=True, exist_ok=True)
    if not (args.outputs / "mlflow.db").exists():
        print(f"note: no runs yet in {args.outputs}/mlflow.db; the dashboard will show them as they are logged")
    print(f"MLflow dashboard: http://{args.host}:{args.port}  (store {args.outputs}/mlflow.db; Ctrl-C to stop)",
          flush=True)
    cmd = server_command(args.outputs, args.host, args.port)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
