"""`mlc ui --serve` / `make server`: a real MLflow tracking server with proxied artifacts; runs and sweeps
log to it through HTTP (tracking.tracking_uri=http://...), their artifacts end up on the server's side."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mlc.cli.ui import main, tracking_server_command
from mlc.engine import checkpoint as ckpt
from tests.conftest import ROOT, SMALL, cli_env, run_cli
from tests.test_ui import free_port


def start_server(outputs: Path, server_dir: Path, port: int) -> tuple[subprocess.Popen, Path]:
    """``python -m mlc.cli.ui --serve`` with its store and artifacts in ``server_dir``; its output goes to a file
    (a pipe nobody reads would fill up with request logs and stall the server)."""
    log = server_dir / "server.log"
    cmd = [sys.executable, "-m", "mlc.cli.ui", "--serve", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{server_dir / 'store.db'}",
           "--artifacts-destination", str(server_dir / "artifacts")]
    with log.open("w") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(outputs), stdout=out, stderr=subprocess.STDOUT)
    return server, log


def wait_healthy(base: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            raise AssertionError(f"the tracking server did not answer {base}/health:\n{log.read_text()}")
        time.sleep(0.3)


def stop(server: subprocess.Popen) -> None:
    server.terminate()  # mlflow server forwards SIGTERM to its uvicorn process
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.slow
def test_runs_and_sweeps_log_through_the_tracking_server(outputs, data_cache, tmp_path):
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server, log = start_server(outputs, server_dir, port)
    try:
        wait_healthy(base, server, log)
        assert f"tracking.tracking_uri={base}\n" in log.read_text()  # the override it tells users to pass
        # Bound to 127.0.0.1 only: a wildcard (0.0.0.0) bind would also accept 127.0.0.2 on Linux.
        with socket.socket() as probe, pytest.raises(OSError):
            probe.settimeout(2)
            probe.connect(("127.0.0.2", port))

        uri = f"tracking.tracking_uri={base}"
        result = run_cli(["trainer.max_epochs=1", *SMALL, uri], outputs, data_cache)
        assert result.returncode == 0, result.stderr
        from mlflow.tracking import MlflowClient

        client = MlflowClient(base)
        exp = client.get_experiment_by_name("mlc")
        assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's proxied root, not a path
        (run,) = client.search_runs([exp.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.params["loss.lam"] == "0.02" and run.data.params["data.train.num_samples"] == "256"
        assert {"val/f1_macro", "test/f1_macro", "best/val/f1_macro"} <= set(run.data.metrics)
        local = client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(tmp_path / "download"))
        state = ckpt.load(local)
        assert state["epoch"] == 1 and state["mlflow_run_id"] == run.info.run_id and "model" in state
        # Uploaded through HTTP: the files sit in the server's destination, none in the client's outputs.
        stored = list((server_dir / "artifacts").rglob("best.pt"))
        assert [p.parent.name for p in stored] == ["checkpoints"] and run.info.run_id in str(stored[0])
        assert not (outputs / "mlartifacts").exists() and not (outputs / "mlflow.db").exists()

        result = run_cli(["-m", "seed=0,1", "trainer.max_epochs=1", *SMALL, uri], outputs, data_cache)
        assert result.returncode == 0, result.stderr
        runs = client.search_runs([exp.experiment_id], "tags.`mlc.kind` = 'sweep'")
        (parent,) = runs
        children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert parent.info.status == "FINISHED" and len(children) == 2
        assert sorted(c.data.params["seed"] for c in children) == ["0", "1"]
        assert all(c.info.status == "FINISHED" for c in children)
        assert len(list((server_dir / "artifacts").rglob("best.pt"))) == 3
        assert not (outputs / "mlartifacts").exists()
    finally:
        stop(server)


def test_tracking_server_command_proxies_artifacts_on_loopback():
    cmd = tracking_server_command("sqlite:////tmp/s.db", "file:///tmp/a")
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5000"
    assert "--serve-artifacts" in cmd and cmd[cmd.index("--artifacts-destination") + 1] == "file:///tmp/a"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:////tmp/s.db"


@pytest.mark.parametrize("args, option", [
    (["--port", "70000"], "--port"),
    (["--backend-store-uri", "postgressql://u@db.example/mlc"], "--backend-store-uri"),  # typo'd scheme
    (["--backend-store-uri", "sqlite:///{tmp}/no/such/dir/store.db"], "--backend-store-uri"),
    (["--backend-store-uri", "sqlite:///:memory:"], "--backend-store-uri"),
    (["--backend-store-uri", "postgresql:///mlc"], "--backend-store-uri"),             # no host
    (["--artifacts-destination", "{tmp}/no/such/dir"], "--artifacts-destination"),
    (["--host", "10.255.255.254"], "--host"),                                          # not this machine
    (["--optuna"], "--serve"),
    (["--storage", "sqlite:///{tmp}/x.db"], "--storage"),
])
def test_bad_server_options_are_refused_in_one_line(args, option, tmp_path, capsys):
    argv = ["--serve", "--outputs", str(tmp_path / "outputs"), *(a.format(tmp=tmp_path) for a in args)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith(f"error: {option}")
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the default outputs folder


@pytest.mark.parametrize("args", [["--backend-store-uri", "sqlite:///x.db"], ["--artifacts-destination", "x"]])
def test_server_options_need_serve(args, capsys):
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(f"error: {args[0]}: only with --serve")


def test_a_port_in_use_is_refused(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--serve", "--outputs", str(tmp_path / "o"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --port {port}: already in use") and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_exposed_host_is_warned_about(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("os.execv", lambda *a: None)  # everything up to the exec, no server
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "unset")  # restored after the test
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION")
    assert main(["--serve", "--outputs", str(tmp_path / "o"), "--host", "0.0.0.0", "--port", str(free_port())]) == 0
    out, err = capsys.readouterr()
    (warning,) = err.splitlines()
    assert warning.startswith("warning: --host 0.0.0.0:") and "no authentication" in warning
    assert "tracking.tracking_uri=http://127.0.0.1:" in out
    assert (tmp_path / "o" / "mlartifacts-server").is_dir()
    assert os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # MLflow's GenAI job runner stays off


def test_serving_a_store_of_local_runs_is_warned_about(tmp_path, capsys, monkeypatch):
    from mlc.tracking import MLflowTracker, TrackingSettings

    store = f"sqlite:///{tmp_path}/mlflow.db"  # what local runs write: experiments with a file:// location
    tracker = MLflowTracker(TrackingSettings(tracking_uri=store, artifact_root=str(tmp_path / "mlartifacts")))
    tracker.start(run_name="local")
    tracker.end()
    monkeypatch.setattr("os.execv", lambda *a: None)
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    assert main(["--serve", "--outputs", str(tmp_path), "--backend-store-uri", store, "--port", str(free_port())]) == 0
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"warning: {store} holds experiments with a local artifact location") and "mlc" in warning
