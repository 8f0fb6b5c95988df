"""End-to-end training through the real CLI: tracking, resume after an interruption, NaN, DDP, AMP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlc.cli.evaluate import evaluate_checkpoint
from mlc.engine import checkpoint as ckpt
from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs, run_cli

pytestmark = pytest.mark.slow


def run_dirs(outputs: Path) -> list[Path]:
    return sorted(p.parent.parent for p in outputs.glob("runs/*/*/checkpoints/last.pt"))


def test_one_epoch_run_leaves_an_mlflow_run_with_metrics_and_checkpoint(outputs, data_cache, tmp_path):
    result = run_cli(["trainer.max_epochs=1", "tracking.system_metrics_interval=0.5", *SMALL], outputs, data_cache)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stdout and "best val/f1_macro" in result.stdout
    (run,) = mlflow_runs(outputs)
    assert run.info.status == "FINISHED"
    assert {"val/f1_macro", "val/f2_macro", "val/map", "val/f1_neg", "val/f1_micro", "val/loss", "train/loss",
            "test/f1_macro", "best/val/f1_macro"} <= set(run.data.metrics)
    # MLflow's system metrics, on by default (tracking.system_metrics), sampled while the run trained
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/disk_usage_percentage"} <= set(run.data.metrics)
    # its splits as MLflow dataset inputs (the runs table's Dataset column): name, digest, profile per split
    inputs = {t.value: i.dataset for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert set(inputs) == {"train", "val", "test"} and inputs["train"].name == "digits neg=0.5"
    assert json.loads(inputs["train"].profile)["instances"] == 256 and len({d.digest for d in inputs.values()}) == 3
    # a readable name (loss, λ, negative ratio, backbone, dataset, seed); the experiment opens in the training view
    assert run.info.run_name == f"{run.data.tags['mlc.loss']} λ=0.02 neg=0.5 mlc_cnn_small digits s0", run.info.run_name
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    params = run.data.params
    assert params["loss.lam"] == "0.02" and params["loss.beta"] == "0.9999"
    assert params["data.train.num_samples"] == "256"
    assert params["data.train.negative_ratio"] == "0.5" and "data.train.class_counts" in params
    assert run.data.tags["mlflow.source.git.commit"] and run.data.tags["mlc.overrides"].startswith("trainer.max")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "config", "dataset_stats.json", "curves.png", "result.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "config")} >= {"config/resolved.yaml",
                                                                                   "config/overrides.yaml"}
    local = client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(tmp_path))
    state = ckpt.load(local)
    assert state["epoch"] == 1 and state["mlflow_run_id"] == run.info.run_id and "model" in state
    history = [m.value for m in client.get_metric_history(run.info.run_id, "val/f1_macro")]
    assert history == [state["history"][0]["val/f1_macro"]]


ARGS = ["trainer.max_epochs=3", "dataset.train_size=512", "dataset.val_size=128", "dataset.test_size=128",
        "trainer.batch_size=16", "trainer.log_every_n_steps=1", "seed=5"]


def comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("train/seconds", "train/samples_per_s")} for h in history]


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, data_cache):
    ref_out, out = tmp_path / "reference", tmp_path / "interrupted"
    reference = run_cli(ARGS, ref_out, data_cache)
    assert reference.returncode == 0, reference.stderr
    (ref_dir,) = run_dirs(ref_out)

    # Interrupt a second, identical run mid-way through epoch 2 with a real SIGINT (what Ctrl-C sends).
    proc = subprocess.Popen([sys.executable, "-m", "mlc.cli.train", *ARGS, f"paths.cache={data_cache}"], cwd=ROOT,
                            env=cli_env(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "epoch 2 step 5/" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "error: interrupted (SIGINT) at epoch 2, step" in stderr
    (run_dir,) = run_dirs(out)
    interrupted = ckpt.load(run_dir / "checkpoints" / "last.pt")
    assert interrupted["epoch"] == 1 and 5 <= interrupted["step_in_epoch"] < 32  # stopped inside epoch 2
    (killed,) = mlflow_runs(out)
    assert killed.info.status == "KILLED"

    resumed = run_cli([*ARGS, f"trainer.resume={run_dir / 'checkpoints' / 'last.pt'}"], out, data_cache)
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads((run_dir / "result.json").read_text())
    want = json.loads((ref_dir / "result.json").read_text())
    assert comparable(got["history"]) == comparable(want["history"])
    assert got["test"] == want["test"]
    final, expected = ckpt.load(run_dir / "checkpoints" / "last.pt"), ckpt.load(ref_dir / "checkpoints" / "last.pt")
    assert all(torch.equal(final["model"][k], expected["model"][k]) for k in expected["model"])
    (run,) = mlflow_runs(out)  # the same MLflow run continued, now complete
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    # ... in the same run directory: one run, one folder, one log (the resume's Hydra config beside the first)
    assert list(out.glob("runs/*/*")) == [run_dir] and len(list(run_dir.glob(".hydra/resume-*/config.yaml"))) == 1
    assert (run_dir / "train.log").read_text().count("resumed from") == 1


def test_nan_loss_fails_the_run_with_one_line_and_writes_no_checkpoint(outputs, data_cache):
    result = run_cli(["optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=2", *SMALL], outputs, data_cache)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: loss 'any_bce' became nan at epoch 1, step")
    assert "no checkpoint was written" in lines[0]
    (run,) = mlflow_runs(outputs)
    assert run.info.status == "FAILED" and "became nan" in run.data.tags["mlc.error"]
    assert not run_dirs(outputs)


def test_two_process_gloo_ddp_metrics_equal_single_process_metrics(outputs, data_cache):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mlc.cli.train",
           "trainer.max_epochs=2", "dataset.train_size=512", "dataset.val_size=131", "dataset.test_size=128",
           "trainer.batch_size=32", "trainer.eval_batch_size=50", f"paths.cache={data_cache}"]
    result = subprocess.run(cmd, cwd=ROOT, env=cli_env(outputs), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) on cpu" in result.stdout
    (run,) = mlflow_runs(outputs)  # only rank 0 tracks
    assert run.info.status == "FINISHED" and run.data.tags["mlc.world_size"] == "2"
    (run_dir,) = run_dirs(outputs)
    logged = json.loads((run_dir / "result.json").read_text())["history"][-1]
    single = evaluate_checkpoint(str(run_dir / "checkpoints" / "last.pt"), "val")  # one process, same weights
    for key in ("f1_macro", "f2_macro", "f1_micro", "map", "f1_neg", "loss"):
        assert single[key] == pytest.approx(logged[f"val/{key}"], abs=1e-6), key


def test_bf16_autocast_on_cpu_trains(outputs, data_cache):
    result = run_cli(["trainer.max_epochs=1", "trainer.precision=bf16-mixed", "tracking=none", *SMALL], outputs,
                     data_cache)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(outputs)
    history = json.loads((run_dir / "result.json").read_text())["history"]
    assert all(v == v for v in history[0].values())  # no NaN
    assert not (outputs / "mlflow.db").exists()
