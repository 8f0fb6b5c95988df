"""The loss benchmark's building blocks (no timing is asserted: ratios are measured by ``make bench``)."""

from __future__ import annotations

import math

import torch

from benchmarks.common import median_ratio
from benchmarks.losses import BATCH, batch, bce_sum, count_calls, fwd_bwd
from mlc.losses import AnyClassPresenceLoss


def test_benchmark_batch_is_negative_heavy_and_reproducible():
    logits, targets = batch(80)
    assert logits.shape == targets.shape == (BATCH, 80)
    assert (targets[: BATCH // 2] == 0).all() and 0.02 < targets[BATCH // 2:].mean() < 0.08
    torch.testing.assert_close(batch(80)[0], logits)


def test_count_calls_counts_top_level_operator_calls_of_a_step():
    logits, targets = batch(20)
    baseline = count_calls(fwd_bwd(bce_sum, logits, targets))
    loss = AnyClassPresenceLoss([10.0] * 20, 100.0)
    assert 1 <= baseline < count_calls(fwd_bwd(loss, logits, targets))
    assert count_calls(fwd_bwd(bce_sum, logits, targets)) == baseline   # deterministic


def test_median_ratio_returns_a_positive_ratio_and_the_baseline_time():
    logits, targets = batch(20)
    step = fwd_bwd(bce_sum, logits, targets)
    ratio, seconds = median_ratio(step, step, rounds=5, min_time=0.005, warmup=1)
    assert math.isfinite(ratio) and ratio > 0 and math.isfinite(seconds) and seconds > 0


def test_metrics_bench_runs_each_implementation_on_saved_inputs(tmp_path):
    import subprocess
    import sys

    import numpy as np

    from benchmarks.metrics import IMPLEMENTATIONS, data, per_class_sort
    from tests.conftest import ROOT

    scores, targets = data(400, 60, 0.05)
    assert scores.dtype == np.float32 and 0.02 < targets.mean() < 0.08
    np.savez(tmp_path / "inputs.npz", scores=scores, targets=targets)
    from sklearn.metrics import average_precision_score

    want = average_precision_score(targets, scores, average=None)
    np.testing.assert_allclose(per_class_sort(scores, targets), want, atol=1e-12)  # the old kernel, as measured
    for name in IMPLEMENTATIONS:
        out = tmp_path / f"{name}.npy"
        done = subprocess.run([sys.executable, "-m", "benchmarks.metrics", name, str(tmp_path / "inputs.npz"),
                               str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        got = np.load(out)
        np.testing.assert_allclose(got, want[: len(got)], atol=1e-6)  # torchmetrics: float32, first 50 classes


def test_sweeps_bench_reads_trial_folders_and_computes_the_overhead(tmp_path):
    """The sweep benchmark's parsing and arithmetic on fabricated trial folders (its sweeps run in ``make bench``)."""
    import json
    import os
    from datetime import datetime

    from benchmarks.sweeps import Sweep, read_trials, render

    t0 = datetime(2026, 12, 1, 12, 0, 0).timestamp()

    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]

    sweep_dir = tmp_path / "sweep"
    for n in range(3):  # trial n: job start at 10n + 1, fit 10n + 1.5 .. 10n + 6.5 (5 s), last line at 10n + 7
        run_dir = sweep_dir / str(n)
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text("{}")
        os.utime(run_dir / ".hydra" / "config.yaml", (t0 + 10 * n + 1,) * 2)
        (run_dir / "train.log").write_text("\n".join([
            f"[{stamp(t0 + 10 * n + 1.2)}][mlc.data.digits][INFO] loading",
            f"[{stamp(t0 + 10 * n + 1.5)}][mlc][INFO] any_bce | mlc_cnn_small | digits | train 128 (50% negative) "
            f"val 64 test 64 | 1 process(es) on cpu | run dir {run_dir}",
            f"[{stamp(t0 + 10 * n + 4)}][mlc.trainer][INFO] epoch 1/1 ...",
            f"[{stamp(t0 + 10 * n + 7)}][mlc][INFO] best val/f1_macro = 0.1299 at epoch 1 | run dir {run_dir}", ""]))
        (run_dir / "result.json").write_text(json.dumps({"best_value": 0.1}))
        os.utime(run_dir / "result.json", (t0 + 10 * n + 6.5,) * 2)
    (sweep_dir / "3").mkdir()  # a surplus trial's folder: never ran, not counted
    trials = read_trials(sweep_dir)
    assert len(trials) == 3 and all(abs(t.own - 5.0) < 1e-3 for t in trials)
    s = Sweep("SQLite", launched=t0 - 4, exited=t0 + 28, trials=trials, load=1.0)
    assert abs(s.wall - 32) < 1e-9 and abs(s.startup - 5.5) < 1e-3 and abs(s.wind_down - 1.5) < 1e-3
    assert abs(s.between - 5.0) < 1e-3                      # fit end 6.5 -> next fit start 11.5
    assert abs(s.all_in - (32 - 15) / 3) < 1e-3             # = (start-up + 2 gaps + wind-down) / 3
    assert all(abs(a - b) < 1e-3 for a, b in zip(s.parts(), (0.5, 0.5, 4.0), strict=True))  # prepare, finish, sweeper
    assert abs(s.per_minute - 60 * 3 / 32) < 1e-9 and abs(s.per_minute_running - 60 * 3 / 26.5) < 1e-3
    fast = Sweep("2", launched=t0 - 4, exited=t0 + 16, trials=trials, load=3.0)
    text = render([("SQLite", s)], [(1, s), (2, fast)], help_s=3.0, notes=["a note"], start_load=0.5,
                  header="machine · git abc")
    assert "| SQLite | 32.0 | 5.00 | 5.5 | 5.00 ✗ | 0.50 / 0.50 / 4.00 | 1.5 | 5.67 | 1.0 |" in text
    assert "| 2 | 20.0 | 5.5 | 5.00 | 9.0 | 1.60× | 12.4 | 1.83× | 3.0 |" in text
    assert "- a note" in text and "the highest at the end of a sweep: 3.0" in text and "busy with other work" in text
