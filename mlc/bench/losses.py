"""Forward + backward time of every loss option relative to ``binary_cross_entropy_with_logits(reduction="sum")``.

CPU, float32, B = 256 and C ∈ {20, 80, 1000}; targets with ~5% positive labels and half the rows
negative (all-zero), as in negative-heavy data; class counts of a matching training set. Every
``conf/loss/*.yaml`` option is measured as configured. A loss whose cost comes from the math (e.g.
per-instance state) says why in a ``cost_note`` class attribute, shown in the table.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from mlc.bench.common import machine, median_seconds, write
from mlc.config import compose_config

LOSS_OPTIONS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "loss").glob("*.yaml"))
BATCH, CLASSES = 256, (20, 80, 1000)


def batch(c: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(BATCH, c, generator=g) * 3
    targets = (torch.rand(BATCH, c, generator=g) < 0.05).float()
    targets[: BATCH // 2] = 0.0
    return logits, targets


def time_fwd_bwd(fn, logits, targets, **kwargs) -> float:
    x = logits.clone().requires_grad_(True)

    def step():
        x.grad = None
        fn(x, targets, **kwargs).backward()

    return median_seconds(step)


def run(options: list[str] | None = None) -> str:
    options = options or LOSS_OPTIONS
    ratios: dict[str, dict[int, float]] = {o: {} for o in options}
    notes: dict[str, str] = {}
    base_us = {}
    for c in CLASSES:
        logits, targets = batch(c)
        counts = (torch.rand(c, generator=torch.Generator().manual_seed(c)) * 1000 + 1).round().tolist()
        base = time_fwd_bwd(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="sum"), logits, targets)
        base_us[c] = base * 1e6
        for option in options:
            loss = instantiate(compose_config([f"loss={option}"]).loss, class_counts=counts, negative_count=5000,
                               num_samples=10000)
            loss.set_epoch(1, 10)
            extra = {"indices": torch.arange(BATCH)} if getattr(loss, "needs_indices", False) else {}
            ratios[option][c] = time_fwd_bwd(loss, logits, targets, **extra) / base
            notes[option] = getattr(loss, "cost_note", "")
    lines = [
        "# Loss benchmark: forward + backward, relative to BCE (sum)", "",
        f"Measured by `make bench` ({machine()}).", "",
        f"Batch {BATCH}, float32 on CPU. Each cell: median time of one forward + backward of the loss as "
        "configured in `conf/loss/`, divided by that of `F.binary_cross_entropy_with_logits(reduction='sum')` "
        "measured in the same process (lower is better; 1.00× = as fast as BCE).", "",
        "| loss | " + " | ".join(f"C = {c}" for c in CLASSES) + " | note |",
        "|---|" + "---|" * len(CLASSES) + "---|",
        "| *BCE sum (baseline)* | " + " | ".join(f"{base_us[c]:.0f} µs" for c in CLASSES) + " | |"]
    for option in options:
        lines.append(f"| `{option}` | " + " | ".join(f"{ratios[option][c]:.2f}×" for c in CLASSES)
                     + f" | {notes[option]} |")
    text = "\n".join(lines) + "\n"
    write("losses.md", text)
    return text


if __name__ == "__main__":
    print(run())
