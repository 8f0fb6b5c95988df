"""`make ui`: the MLflow server over the default store serves runs, metrics and artifacts."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import pytest

from mlc.tracking import MLflowTracker, TrackingSettings
from mlc.ui import server_command
from tests.conftest import ROOT, cli_env

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
