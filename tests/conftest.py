"""Shared test helpers: run the real CLI in a subprocess against a temporary outputs/ directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# One torch (OpenMP) thread per process, for the test processes and every process they start (inherited): the
# suite runs two test processes on 2 cores, each often with a CLI run, DDP ranks or sweep workers beside it,
# and there a second thread per process mostly spins (up to half the CPU of a small run). No test depends on
# the thread count; a value set by the caller is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
# A small digits configuration: a whole epoch takes well under a second on 2 CPU cores.
SMALL = ["dataset.train_size=256", "dataset.val_size=128", "dataset.test_size=128", "trainer.batch_size=32"]


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One digits cache for the whole session: each configuration is generated once."""
    return tmp_path_factory.mktemp("digits-cache")


@pytest.fixture
def outputs(tmp_path) -> Path:
    out = tmp_path / "outputs"
    out.mkdir()
    return out


def cli_env(outputs: Path, **extra: str) -> dict[str, str]:
    return os.environ | {"MLC_OUTPUTS": str(outputs), "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"} | extra


def run_cli(args: list[str], outputs: Path, cache: Path | None, timeout: int = 300, module: str = "mlc.cli.train",
            **env: str) -> subprocess.CompletedProcess:
    """``python -m <module> <args> [paths.cache=<cache>]`` with MLC_OUTPUTS=<outputs>; output captured."""
    cmd = [sys.executable, "-m", module, *args, *([f"paths.cache={cache}"] if cache else [])]
    return subprocess.run(cmd, cwd=ROOT, env=cli_env(outputs, **env), capture_output=True, text=True,
                          timeout=timeout)


def mlflow_runs(outputs: Path, experiment: str = "mlc") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} in {outputs}"
    return client.search_runs([exp.experiment_id])


def compose(overrides: list[str] | None = None):
    """The task config as `python -m mlc.cli.train <overrides>` would see it (in-process, no run)."""
    from mlc.config import compose_config

    return compose_config(overrides)


from tests.postgres import postgres_db, postgres_url  # noqa: E402,F401  (fixtures: a real PostgreSQL server)
