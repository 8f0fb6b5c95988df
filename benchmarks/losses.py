"""Forward + backward time of every loss option relative to ``binary_cross_entropy_with_logits(reduction="sum")``.

CPU, float32, B = 256 and C ∈ {20, 80, 1000}; targets with ~5% positive labels and half the rows
negative (all-zero), as in negative-heavy data; class counts of a matching training set. Every
``conf/loss/*.yaml`` option is measured as configured. A loss whose cost comes from the math (e.g.
per-instance state) says why in a ``cost_note`` class attribute, shown in the table.

Why one fresh process per loss: on the machine of the committed table, ``log1p`` (inside PyTorch's
``softplus``, ``logsigmoid`` and BCE-with-logits) runs ~10× slower in a freshly started process than
after the process has once run a large ``torch.pow`` with a fractional exponent (200 → 20 µs for
256 × 80 floats; it stays fast from then on, per thread). A training run stays in the slow state
(checked after a full epoch of the default model), and a loss that calls ``pow`` (ASL) would switch
every later measurement of a shared process to the fast one. A fresh process per loss measures each
loss, and its BCE baseline, in the state a training run has.

A second effect of the machine, at C = 1000: every fresh (B, C) float32 temporary is 1 MB, which glibc's
malloc serves with ``mmap`` and gives back on free, so each one costs page faults and zeroing on the next
allocation, about as much as the arithmetic of a pass. The fused kernels therefore work in place where a
temporary is free again. Measured on GR before that change: 2.6× BCE at C = 1000 with the default malloc,
1.2× with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised to 4 GB (same-process ratios). The
table uses the default malloc, as the trainer does.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from benchmarks.common import median_ratio, write
from mlc.config import compose_config
from mlc.provenance import machine

LOSS_OPTIONS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "loss").glob("*.yaml"))
BATCH, CLASSES = 256, (20, 80, 1000)


def batch(c: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(BATCH, c, generator=g) * 3
    targets = (torch.rand(BATCH, c, generator=g) < 0.05).float()
    targets[: BATCH // 2] = 0.0
    return logits, targets


def fwd_bwd(fn, logits, targets, **kwargs):
    """One forward + backward of ``fn`` on a fresh leaf copy of ``logits`` (the timed step)."""
    x = logits.clone().requires_grad_(True)

    def step():
        x.grad = None
        fn(x, targets, **kwargs).backward()

    return step


def bce_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(x, y, reduction="sum")


def count_calls(step) -> int:
    """PyTorch operator calls made by one ``step`` (top-level ``aten::`` ops, forward and backward).

    Why: at C = 20 a step costs mostly the fixed dispatch of each call (a few µs on this CPU), not arithmetic;
    this column makes that visible next to the ratios.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::")
               and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def measure(option: str) -> dict:
    """Ratios of one loss option against BCE for every C, in this process (``python -m benchmarks.losses --one``)."""
    torch.set_num_threads(1)  # the ratio measures work, not how well each op spreads over 2 busy cores
    result = {"ratios": {}, "baseline_us": {}, "note": "", "calls": 0, "baseline_calls": 0}
    for c in CLASSES:
        logits, targets = batch(c)
        counts = (torch.rand(c, generator=torch.Generator().manual_seed(c)) * 1000 + 1).round().tolist()
        loss = instantiate(compose_config([f"loss={option}"]).loss, class_counts=counts,
                           negative_count=5000, num_samples=10000)
        loss.set_epoch(1, 10)
        extra = {"indices": torch.arange(BATCH)} if loss.needs_indices else {}
        step, baseline = fwd_bwd(loss, logits, targets, **extra), fwd_bwd(bce_sum, logits, targets)
        ratio, base = median_ratio(step, baseline)
        result["ratios"][c], result["baseline_us"][c] = ratio, base * 1e6
        result["note"] = getattr(loss, "cost_note", "")
        if c == CLASSES[0]:
            first = (step, baseline)
    # after all the timing, which the profiler must not disturb
    result["calls"], result["baseline_calls"] = count_calls(first[0]), count_calls(first[1])
    return result


def run(options: list[str] | None = None) -> str:
    """Measure every option in a fresh process of its own (see the module docstring for why) and write the table."""
    options = options or LOSS_OPTIONS
    results = {}
    for option in options:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.losses", "--one", option], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"loss bench of {option} failed: {proc.stderr.strip().splitlines()[-1:]}")
        results[option] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {option}: " + ", ".join(f"{r:.2f}x" for r in results[option]["ratios"].values())
              + f" ({results[option]['calls']} calls)", flush=True)
    base_us = {c: statistics.median(r["baseline_us"][str(c)] for r in results.values()) for c in CLASSES}
    baseline_calls = max(r["baseline_calls"] for r in results.values())
    lines = [
        "# Loss benchmark: forward + backward, relative to BCE (sum)", "",
        f"Measured by `make bench` ({machine()}; the losses run on 1 thread).", "",
        f"Batch {BATCH}, float32 on CPU, ~5% positive labels, half the rows negative. Each cell: the median over "
        "15 rounds of time(one forward + backward of the loss as configured in `conf/loss/`) / time(the same for "
        "`F.binary_cross_entropy_with_logits(reduction='sum')`), the two timed back to back in each round, "
        "each loss in a fresh process of its own (lower is better; 1.00× = as fast as BCE). *Calls*: PyTorch "
        "operator calls per forward + backward (top-level `aten::` ops, profiled once after the timing).", "",
        f"Targets (the loss-zoo issue): `any_bce` ≤ 1.3× and every loss ≤ 3× at C = 80 and 1000, except where "
        f"the math needs per-instance state (see the note). At C = {CLASSES[0]} ({BATCH * CLASSES[0]:,} logits) "
        f"BCE is {base_us[CLASSES[0]]:.0f} µs for {baseline_calls} calls, and a step costs mostly the fixed "
        "dispatch of each call (a few µs here), not arithmetic: the ratios there follow the *calls* column "
        "rather than the math, and shrink as C grows.", "",
        "| loss | " + " | ".join(f"C = {c}" for c in CLASSES) + " | calls | note |",
        "|---|" + "---|" * len(CLASSES) + "---|---|",
        "| *BCE sum (baseline)* | " + " | ".join(f"{base_us[c]:.0f} µs" for c in CLASSES)
        + f" | {baseline_calls} | median over the processes |"]
    for option in options:
        lines.append(f"| `{option}` | " + " | ".join(f"{results[option]['ratios'][str(c)]:.2f}×" for c in CLASSES)
                     + f" | {results[option]['calls']} | {results[option]['note']} |")
    text = "\n".join(lines) + "\n"
    if options == LOSS_OPTIONS:  # a partial run (python -m benchmarks.losses any_bce bce) only prints
        write("losses.md", text)
    return text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure(sys.argv[2])))
    else:
        print(run(sys.argv[1:] or None))
