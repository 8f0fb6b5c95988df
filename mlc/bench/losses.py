"""Forward + backward time of each loss relative to ``binary_cross_entropy_with_logits(reduction="sum")``.

CPU, float32, B = 256 and C ∈ {20, 80, 1000}; targets with ~5% positive labels and half the rows
negative (all-zero), as in negative-heavy data. Class counts are those of a matching training set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from mlc.bench.common import machine, median_seconds, write
from mlc.config import compose_config

LOSS_OPTIONS = ("bce", "focal", "cb_bce", "cb_focal", "any_bce", "any_focal")
BATCH, CLASSES = 256, (20, 80, 1000)


def batch(c: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(BATCH, c, generator=g) * 3
    targets = (torch.rand(BATCH, c, generator=g) < 0.05).float()
    targets[: BATCH // 2] = 0.0
    return logits, targets


def time_fwd_bwd(fn, logits, targets) -> float:
    x = logits.clone().requires_grad_(True)

    def step():
        x.grad = None
        fn(x, targets).backward()

    return median_seconds(step)


def run() -> str:
    rows = []
    for c in CLASSES:
        logits, targets = batch(c)
        counts = (torch.rand(c) * 1000 + 1).round().tolist()
        base = time_fwd_bwd(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="sum"), logits, targets)
        row = {"C": c, "bce_sum_us": base * 1e6}
        for option in LOSS_OPTIONS:
            loss = instantiate(compose_config([f"loss={option}"]).loss, class_counts=counts, negative_count=5000,
                               num_samples=10000)
            row[option] = time_fwd_bwd(loss, logits, targets) / base
        rows.append(row)
    header = "| C | BCE sum (µs) | " + " | ".join(LOSS_OPTIONS) + " |"
    lines = [
        "# Loss benchmark: forward + backward, relative to BCE (sum)", "",
        f"Measured by `make bench` ({machine()}).", "",
        f"Batch {BATCH}, float32 on CPU; ratios are median time per forward+backward divided by that of "
        "`F.binary_cross_entropy_with_logits(reduction='sum')` measured in the same process (lower is better).",
        "", header, "|" + "---|" * (len(LOSS_OPTIONS) + 2)]
    for r in rows:
        lines.append(f"| {r['C']} | {r['bce_sum_us']:.0f} | " + " | ".join(f"{r[o]:.2f}×" for o in LOSS_OPTIONS) + " |")
    text = "\n".join(lines) + "\n"
    write("losses.md", text)
    return text


if __name__ == "__main__":
    print(run())
