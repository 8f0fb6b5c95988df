"""The loss benchmark's building blocks (no timing is asserted: ratios are measured by ``make bench``)."""

from __future__ import annotations

import math

import torch

from mlc.bench.common import median_ratio
from mlc.bench.losses import BATCH, batch, bce_sum, count_calls, fwd_bwd
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

    from mlc.bench.metrics import IMPLEMENTATIONS, data, per_class_sort
    from tests.conftest import ROOT

    scores, targets = data(400, 60, 0.05)
    assert scores.dtype == np.float32 and 0.02 < targets.mean() < 0.08
    np.savez(tmp_path / "inputs.npz", scores=scores, targets=targets)
    from sklearn.metrics import average_precision_score

    want = average_precision_score(targets, scores, average=None)
    np.testing.assert_allclose(per_class_sort(scores, targets), want, atol=1e-12)  # the old kernel, as measured
    for name in IMPLEMENTATIONS:
        out = tmp_path / f"{name}.npy"
        done = subprocess.run([sys.executable, "-m", "mlc.bench.metrics", name, str(tmp_path / "inputs.npz"),
                               str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        got = np.load(out)
        np.testing.assert_allclose(got, want[: len(got)], atol=1e-6)  # torchmetrics: float32, first 50 classes
