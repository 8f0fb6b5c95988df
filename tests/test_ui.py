"""`make ui`: the MLflow server over the default store serves runs, metrics and artifacts; ``--optuna``
serves optuna-dashboard over the sweeps' study store."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from mlc.cli.ui import default_optuna_storage, main, optuna_dashboard_command, server_command
from mlc.tracking import MLflowTracker, TrackingSettings
from tests.conftest import ROOT, cli_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dashboard_serves_tracked_runs(outputs, tmp_path):
    tracker = MLflowTracker(TrackingSettings(tracking_uri=f"sqlite:///{outputs}/mlflow.db",
                                             artifact_root=str(outputs / "mlartifacts")))
    run_id = tracker.start(run_name="probe")
    tracker.log_metrics({"val/f1_macro": 0.5}, step=1)
    tracker.log_text("hello", "notes/hello.txt")
    tracker.end()

    port = free_port()
    server = subprocess.Popen(server_command(outputs, port=port), cwd=ROOT, env=cli_env(outputs),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"MLflow server did not start:\n{server.stdout.read()}") from None
                time.sleep(0.5)
        with urllib.request.urlopen(base + "/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(base)
        run = client.get_run(run_id)
        assert run.info.run_name == "probe" and run.data.metrics["val/f1_macro"] == 0.5
        local = client.download_artifacts(run_id, "notes/hello.txt", str(tmp_path))
        assert open(local).read() == "hello"
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_http(url: str, server: subprocess.Popen, timeout: float = 60.0) -> bytes:
    """GET ``url`` until it answers 200 (or the server exits / ``timeout`` s pass: AssertionError)."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return r.read()
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            server.kill()
            raise AssertionError(f"server did not answer {url}:\n{server.communicate()[0]}")
        time.sleep(0.3)


def make_study(storage: str, name: str, n_trials: int = 3) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("lam", 0.001, 0.5, log=True), n_trials=n_trials)


@pytest.mark.slow
def test_optuna_dashboard_serves_sweep_studies(outputs):
    make_study(default_optuna_storage(outputs), "any_bce@probe[dataset.negative_ratio=0.5]")
    port = free_port()
    # Default storage: <MLC_OUTPUTS>/optuna.db, as the study_grid sweeper writes it.
    server = subprocess.Popen([sys.executable, "-m", "mlc.cli.ui", "--optuna", "--port", str(port)], cwd=ROOT,
                              env=cli_env(outputs), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = wait_for_http(f"http://127.0.0.1:{port}/api/studies", server)
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["any_bce@probe[dataset.negative_ratio=0.5]"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}",
                                    timeout=10) as r:
            trials = json.loads(r.read())["trials"]
        assert len(trials) == 3 and all(t["state"] == "Complete" for t in trials)
        # Bound to 127.0.0.1 only: a wildcard (0.0.0.0) bind would also accept 127.0.0.2 on Linux.
        with socket.socket() as probe, pytest.raises(OSError):
            probe.settimeout(2)
            probe.connect(("127.0.0.2", port))
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()


def test_optuna_dashboard_command_binds_loopback_by_default():
    cmd = optuna_dashboard_command("sqlite:///x.db")
    assert cmd[0] == sys.executable and "sqlite:///x.db" in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8080"


@pytest.mark.parametrize("args", [
    ["--optuna", "--storage", "sqlite:///{tmp}/typo.db"],
    ["--optuna", "--outputs", "{tmp}"],                    # default store <outputs>/optuna.db not there yet
    ["--optuna", "--storage", "sqlite:///:memory:"],
    ["--optuna", "--storage", "{tmp}"],                    # a folder, not a store
    ["--optuna", "--storage", "sqlite:///{tmp}/x.db", "--port", "0"],
    ["--storage", "sqlite:///{tmp}/x.db"],                 # --storage without --optuna
])
def test_optuna_bad_storage_is_refused_in_one_line(args, tmp_path, capsys):
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: --")
    assert ("--port" if "--port" in args else "--storage") in err
    assert list(tmp_path.iterdir()) == []                  # nothing created at a mistyped path
