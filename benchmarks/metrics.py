"""Exact mAP at scale: ``mlc.metrics.average_precisions`` against scikit-learn (the baseline) and others.

Validation of a COCO-sized split with a 1000-class head is a 100k × 1000 score matrix, and the
trainer computes its exact mAP every epoch. Each implementation runs in a fresh process on the same
seeded scores (float32 probabilities, as the trainer produces them) and reports its wall time, its
peak memory above the input arrays, and its largest |AP difference| from scikit-learn's. Cases: a
COCO-sized split with a 1000-class head and 1% positives (data full of negatives), and dense positives
(20%: many distinct positive thresholds per class).

torchmetrics' exact multi-label AP takes minutes at 100k × 1000, so it is timed on the first 50
classes and its time scaled linearly to the case's class count (marked so in the table); an earlier
full-size measurement here took 268 s, so the linear scaling flatters it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write
from mlc.provenance import machine

CASES = [("100k × 1000, 1% positive", 100_000, 1000, 0.01), ("100k × 200, 20% positive", 100_000, 200, 0.20)]
IMPLEMENTATIONS = ("scikit-learn", "mlc", "per-class sort", "torchmetrics")
TORCHMETRICS_CLASSES = 50


def data(n: int, k: int, density: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = rng.random((n, k), dtype=np.float32) < density
    logits = 1.5 * targets + rng.standard_normal((n, k), dtype=np.float32)
    return (1 / (1 + np.exp(-logits))).astype(np.float32), targets


def per_class_sort(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """mlc's AP before ``average_precisions``: a stable argsort of all N scores per class, in a Python loop."""
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        y = targets[:, c].astype(np.float64)
        if not y.any():
            continue
        order = np.argsort(-scores[:, c].astype(np.float64), kind="mergesort")
        s, y = scores[order, c].astype(np.float64), y[order]
        last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
        tps = np.cumsum(y)[last_of_tie]
        out[c] = float(np.sum(np.diff(np.r_[0.0, tps / tps[-1]]) * tps / (last_of_tie + 1)))
    return out


def measure(name: str, inputs: str, result: str) -> dict:
    """Run one implementation (in this process) on the arrays saved in ``inputs``; save its APs to ``result``.

    The arrays are loaded, not generated, so that the process's peak memory before the call is the
    inputs themselves and the peak after it measures what the implementation added.
    """
    with np.load(inputs) as saved:
        scores, targets = saved["scores"], saved["targets"]
    k = classes = scores.shape[1]
    if name == "scikit-learn":
        from sklearn.metrics import average_precision_score

        def fn():
            return average_precision_score(targets, scores, average=None)
    elif name == "mlc":
        from mlc.metrics import average_precisions

        def fn():
            return average_precisions(scores, targets)
    elif name == "per-class sort":
        def fn():
            return per_class_sort(scores, targets)
    else:
        import torch
        from torchmetrics.functional.classification import multilabel_average_precision

        classes = TORCHMETRICS_CLASSES
        s, t = torch.from_numpy(scores[:, :classes].copy()), torch.from_numpy(targets[:, :classes].astype(np.int64))

        def fn():
            return multilabel_average_precision(s, t, num_labels=classes, average=None).numpy()
    before = _reset_peak_rss_kb()
    start = time.perf_counter()
    ap = np.asarray(fn(), dtype=np.float64)
    seconds = time.perf_counter() - start
    peak_mb = (_status_kb("VmHWM") - before) / 1024 if before is not None else None
    np.save(result, ap)
    return {"seconds": seconds * k / classes, "peak_mb": peak_mb, "scaled": classes != k}


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _reset_peak_rss_kb() -> int | None:
    """Reset this process's peak RSS to its current RSS (Linux: ``clear_refs`` 5); the current RSS in kB.

    Loading the inputs made transient copies; without the reset they would hide what the measured call adds.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except OSError:
        return None


def _status_kb(key: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(key + ":"))
    return int(line.split()[1])


def run() -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, n, k, density in CASES:
            inputs = Path(tmp) / "inputs.npz"
            scores, targets = data(n, k, density)
            np.savez(inputs, scores=scores, targets=targets)
            del scores, targets
            results = {}
            for name in IMPLEMENTATIONS:
                out = Path(tmp) / f"{name}.npy"
                cmd = [sys.executable, "-m", "benchmarks.metrics", name, str(inputs), str(out)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                results[name] = json.loads(done.stdout.strip().splitlines()[-1]) | {"ap": np.load(out)}
            base = results["scikit-learn"]
            for name in IMPLEMENTATIONS:
                r = results[name]
                same = np.nanmax(np.abs(r["ap"] - base["ap"][: len(r["ap"])]))
                rows.append(f"| {label} | {name} | {r['seconds']:.2f}{' (scaled)' if r['scaled'] else ''} | "
                            f"{base['seconds'] / r['seconds']:.1f}× | {same:.1e} | {_mb(r['peak_mb'])} |")
    text = "\n".join([
        "# Exact mAP at scale (`make bench`, benchmarks/metrics.py)", "",
        f"{machine()}", "",
        "Per-class average precision of float32 probabilities, every implementation in a fresh process on the same "
        "seeded data; speed-up against scikit-learn's `average_precision_score(average=None)` measured in the same "
        "run; |ΔAP| = the largest per-class difference from scikit-learn; memory = peak RSS above the input arrays. "
        f"torchmetrics (exact `multilabel_average_precision`) is timed on the first {TORCHMETRICS_CLASSES} classes "
        "and scaled to the case's class count.", "",
        "| case | implementation | seconds | speed-up vs scikit-learn | max abs ΔAP | peak MB |",
        "|---|---|---|---|---|---|", *rows, ""])
    path = write("metrics.md", text)
    return f"{text}\n(written to {path})"


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(json.dumps(measure(*sys.argv[1:])))
    else:
        print(run())
