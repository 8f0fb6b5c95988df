"""``make gpu-check``: it skips cleanly without a GPU, and its checks run (on CPU, tiny) so that it cannot rot."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from benchmarks.gpu_check import Profile, main, run


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the check would run")
def test_without_a_gpu_it_skips_in_one_line_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("gpu-check: skipped: no CUDA GPU visible (torch.cuda.is_available() is False); "
                                     "nothing was run")


def test_the_checks_run_on_cpu_in_tiny_form(tmp_path):
    out = tmp_path / "gpu.md"
    checks, rows = run(Profile.tiny(), out, skip=("compile",))  # compile: tests/test_trainer_options.py
    status = {c.name: c.status for c in checks}
    assert status.pop("fp16 AMP + GradScaler") == "SKIP" and status.pop("compile") == "SKIP"
    assert set(status.values()) == {"PASS"}, checks
    assert "fused losses vs autograd" in status and "1-process DDP (gloo)" in status
    assert len(rows) == 1 and rows[0]["bare"] > 0 and rows[0]["trainer"] > 0
    text = out.read_text()
    assert "| fused losses vs autograd | PASS |" in text and "| `mlc_cnn_small` |" in text


def test_a_failing_check_fails_the_command(monkeypatch, capsys):
    import benchmarks.gpu_check as gpu_check

    def broken(profile):
        raise RuntimeError("NCCL error: unhandled system error")

    monkeypatch.setattr(gpu_check, "check_ddp", broken)
    # Only the broken check runs (fp16 skips itself on CPU): the others are the test above's.
    code = main(["--tiny", "--skip", "compile", "--skip", "throughput", "--skip", "fused", "--skip", "bf16",
                 "--skip", "channels", "--skip", "no per-step"])
    assert code == 1
    captured = capsys.readouterr()
    assert "1-process DDP (gloo): FAIL (RuntimeError: NCCL error: unhandled system error)" in captured.out
    assert "no per-step host sync: SKIP (--skip no per-step)" in captured.out
    assert "error: gpu-check: 1 check(s) failed: 1-process DDP (gloo)" in captured.err
