"""Can the file-backed data pipeline keep up with training? Images/s through it next to the step rate.

A fixture of a few hundred JPEGs (photo-sized, generated) is read through the same configuration as
training (``dataset=csv``: decode-once cache, the default train augmentation, normalisation, the
trainer's batch size and default loader workers, default collate) and compared with the training
step rate of the default model (``mlc_cnn_small``, loss ``any_bce``, AdamW) at the same image size,
in the same process. Target: the loader sustains >= 3x the step rate. Should the default workers
fall short, the loader is measured with more workers and the table proposes a default.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.common import median_seconds, write
from mlc.config import build, compose_config
from mlc.optim import param_groups
from mlc.provenance import machine

NUM_IMAGES = 384
PHOTO_SIZE = (500, 375)  # a typical COCO / VOC photo
TARGET = 3.0


def write_fixture(root: Path, n: int = NUM_IMAGES, classes: int = 6) -> None:
    """``n`` photo-sized JPEGs (smooth gradients plus noise and blocks, so they compress like photos) and
    train/val/test CSVs with 0/1 class columns, about a third of the images negative."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:PHOTO_SIZE[1], 0:PHOTO_SIZE[0]].astype(np.float32)
    rows = []
    for i in range(n):
        base = (np.sin(xx / rng.uniform(20, 80)) + np.cos(yy / rng.uniform(20, 80)))[..., None] * 60 + 120
        pixels = base * rng.uniform(0.5, 1.0, size=3) + rng.normal(0, 12, size=(*PHOTO_SIZE[::-1], 3))
        x, y = rng.integers(0, PHOTO_SIZE[0] - 100), rng.integers(0, PHOTO_SIZE[1] - 100)
        pixels[y:y + 100, x:x + 100] = rng.uniform(0, 255, size=3)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"{i:04d}.jpg", quality=90)
        label = (rng.random(classes) < 0.3).astype(int) if rng.random() > 0.33 else np.zeros(classes, dtype=int)
        rows.append(f"{i:04d}.jpg," + ",".join(map(str, label)))
    header = "path," + ",".join(f"c{k}" for k in range(classes))
    for split, part in (("train", rows), ("val", rows[:32]), ("test", rows[32:64])):
        (root / f"{split}.csv").write_text("\n".join([header, *part]) + "\n")


def loader_rate(train, batch_size: int, workers: int) -> float:
    """Images/s of whole epochs through a shuffled DataLoader (decode cache -> augmentation -> collate)."""
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=False)

    def epoch():
        for _ in loader:
            pass

    return len(loader) * batch_size / median_seconds(epoch, min_time=1.0, repeats=3, warmup=1)


def step_rate(cfg, source, train, batch_size: int) -> float:
    """Images/s of forward + backward + optimizer step of the configured model, loss and optimizer."""
    stats = train.stats()
    model = build(cfg.backbone, "backbone", num_classes=source.num_classes).train()
    loss_fn = build(cfg.loss, "loss", class_counts=stats.class_counts, negative_count=stats.negative_count,
                    num_samples=stats.num_samples)
    optimizer = build(cfg.optimizer, "optimizer")(param_groups(model, float(cfg.optimizer.weight_decay)))
    batches = [b for b, _ in zip(DataLoader(train, batch_size=batch_size, shuffle=True), range(3), strict=False)]
    counter = iter(range(1 << 30))

    def step():
        batch = batches[next(counter) % len(batches)]
        loss = loss_fn(model(batch["image"]), batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch_size / median_seconds(step, min_time=2.0, repeats=3, warmup=2)


def run() -> str:
    with tempfile.TemporaryDirectory(prefix="benchmarks-data-") as tmp:
        root = Path(tmp)
        write_fixture(root)
        cfg = compose_config(["dataset=csv", f"dataset.root={root}", f"paths.cache={root / 'cache'}"])
        source = build(cfg.dataset, "dataset")
        started = time.perf_counter()
        train = source.load("train")
        decode_ips = len(train) / (time.perf_counter() - started)
        size, bs, workers = int(cfg.dataset.image_size), int(cfg.trainer.batch_size), int(cfg.trainer.num_workers)
        load_ips = loader_rate(train, bs, workers)
        step_ips = step_rate(cfg, source, train, bs)
        rows = [(f"data loader, {workers} workers (default)", load_ips)]
        if load_ips < TARGET * step_ips:
            rows += [(f"data loader, {w} workers", loader_rate(train, bs, w)) for w in (1, 2, 4) if w != workers]
    good = [name for name, ips in rows if ips >= TARGET * step_ips]
    verdict = (f"The loader with the default {workers} workers sustains {load_ips / step_ips:.1f}x the training "
               f"step rate: data loading is not the bottleneck." if rows[0][1] >= TARGET * step_ips else
               f"Below {TARGET:.0f}x with the default workers; proposed default: {good[0]}." if good else
               f"Below {TARGET:.0f}x even with more workers: decode to a smaller image_size or use a GPU step.")
    text = "\n".join([
        "# File-backed data pipeline vs training step", "",
        f"Measured by `make bench` ({machine()}).", "",
        f"{NUM_IMAGES} generated {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEGs read as `dataset=csv` at {size}x{size}: "
        f"decode-once cache (memory-mapped), the default train augmentation (flip + rotate), normalisation, "
        f"batch {bs}, default collate; the default model `{cfg.backbone.name}` with `any_bce` and AdamW on CPU.", "",
        "| stage | images/s | relative to the training step |", "|---|---|---|",
        f"| training step (forward + backward + AdamW, {size}x{size}) | {step_ips:,.0f} | 1.00x |",
        *(f"| {name} | {ips:,.0f} | {ips / step_ips:.1f}x |" for name, ips in rows),
        f"| first epoch only: decoding into the cache ({source.decode_workers} threads) | {decode_ips:,.0f} | "
        f"{decode_ips / step_ips:.1f}x |", "",
        verdict, ""])
    write("data.md", text)
    return text


if __name__ == "__main__":
    print(run())
