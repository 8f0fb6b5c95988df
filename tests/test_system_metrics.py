"""Every tracked run logs MLflow's system metrics (``tracking.system_metrics``): CPU, memory, disk and network as
``system/*`` metrics while it is open (GPU ones where an NVIDIA GPU is present), switchable off; on a real SQLite
store, and through a real training run in tests/test_train_e2e.py."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from mlc.errors import ConfigError
from mlc.tracking import MLflowTracker, TrackingSettings

CPU_SIDE = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/system_memory_usage_percentage", "system/disk_usage_percentage"}


def tracked_run(tmp_path, seconds: float, **settings) -> tuple[MlflowClient, str]:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MLflowTracker(TrackingSettings(tracking_uri=store, artifact_root=str(tmp_path / "mlartifacts"),
                                             **settings))
    run_id = tracker.start(run_name="r")
    time.sleep(seconds)  # a run that trains this long
    tracker.end()
    return MlflowClient(store), run_id


def test_a_run_logs_cpu_memory_and_disk_at_the_configured_interval(tmp_path):
    client, run_id = tracked_run(tmp_path, 2.2, system_metrics_interval=0.5)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert CPU_SIDE <= set(run.data.metrics), sorted(run.data.metrics)
    steps = [m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage")]
    assert steps == list(range(len(steps))) and 3 <= len(steps) <= 6  # one point per 0.5 s of the 2.2 s
    assert 0 <= run.data.metrics["system/cpu_utilization_percentage"] <= 100


def test_system_metrics_can_be_switched_off(tmp_path):
    client, run_id = tracked_run(tmp_path, 1.2, system_metrics=False, system_metrics_interval=0.5)
    assert not [m for m in client.get_run(run_id).data.metrics if m.startswith("system/")]


@pytest.mark.parametrize(("settings", "says"), [({"system_metrics": "yes"}, "must be true or false"),
                                                ({"system_metrics_interval": 0}, "positive number of seconds")])
def test_bad_system_metrics_settings_are_refused(settings, says):
    with pytest.raises(ConfigError, match=says):
        TrackingSettings(**settings)
