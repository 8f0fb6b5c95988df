"""Shared test helpers: run the real CLI in a subprocess against a temporary outputs/ directory."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.forked_cli import Zygote

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


ZYGOTE = Zygote()
atexit.register(ZYGOTE.close)


def run_cli(args: list[str], outputs: Path, cache: Path | None, timeout: int = 300, module: str = "mlc.cli.train",
            **env: str) -> subprocess.CompletedProcess:
    """``python -m <module> <args> [paths.cache=<cache>]`` with MLC_OUTPUTS=<outputs>; output captured.

    The process is forked from a zygote that has imported the third-party stack (tests/forked_cli.py; ~6 s of
    CPU less per command); ``MLC_TEST_FRESH=1`` starts a fresh interpreter instead."""
    return run_module(module, [*args, *([f"paths.cache={cache}"] if cache else [])], cli_env(outputs, **env), timeout)


def run_module(module: str, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in the repository with exactly ``env``: a child of the zygote, or with
    ``MLC_TEST_FRESH=1`` a fresh interpreter; output captured as text."""
    if os.environ.get("MLC_TEST_FRESH"):
        return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    return ZYGOTE.run(module, args, env, ROOT, timeout)


@pytest.fixture(autouse=True)
def warm_reproduce_sweeps(monkeypatch):
    """``mlc reproduce`` (run in the test process by the tests) starts each sweep as a child of the zygote, as
    ``run_module`` does; its output goes to the test's captured output. ``MLC_TEST_FRESH=1``: fresh processes."""
    if os.environ.get("MLC_TEST_FRESH"):
        return
    from mlc.cli import reproduce

    def run_python(module_and_args: list[str], env: dict) -> int:
        done = run_module(module_and_args[0], module_and_args[1:], env, timeout=3600)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode

    monkeypatch.setattr(reproduce, "run_python", run_python)


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
