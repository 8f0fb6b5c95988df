"""Is data loading the bottleneck? Loader throughput next to the default model's training step rate.

Both on the default configuration (digits 32×32, batch 64, ``mlc_cnn_small``, AdamW, default loader
workers), in the same process: images/s through the DataLoader (indexing + collate) and images/s
through forward + backward + optimizer step. The ratio says how far ahead of training the loader is.
"""

from __future__ import annotations

from torch.utils.data import DataLoader

from mlc.bench.common import machine, median_seconds, write
from mlc.config import build, compose_config
from mlc.optim import param_groups

STEPS = 20


def run(cache_dir: str | None = None) -> str:
    cfg = compose_config([f"paths.cache={cache_dir}"] if cache_dir else [])
    source = build(cfg.dataset, "dataset")
    train = source.load("train")
    stats = train.stats()
    bs, workers = int(cfg.trainer.batch_size), int(cfg.trainer.num_workers)
    loader = DataLoader(train, batch_size=bs, shuffle=True, num_workers=workers, drop_last=True)

    def load_epoch():
        for _ in loader:
            pass

    load_s = median_seconds(load_epoch, min_time=0.5, repeats=3, warmup=1)
    load_ips = len(loader) * bs / load_s

    model = build(cfg.backbone, "backbone", num_classes=source.num_classes).train()
    loss_fn = build(cfg.loss, "loss", class_counts=stats.class_counts, negative_count=stats.negative_count)
    optimizer = build(cfg.optimizer, "optimizer")(param_groups(model, float(cfg.optimizer.weight_decay)))
    batches = [next(iter(DataLoader(train, batch_size=bs, shuffle=True))) for _ in range(4)]
    counter = {"i": 0}

    def step():
        b = batches[counter["i"] % len(batches)]
        counter["i"] += 1
        loss = loss_fn(model(b["image"]), b["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_s = median_seconds(step, min_time=0.5, repeats=5, warmup=3)
    step_ips = bs / step_s
    text = "\n".join([
        "# Data pipeline vs training step (default configuration)", "",
        f"Measured by `make bench` ({machine()}).", "",
        f"digits {cfg.dataset.image_size}×{cfg.dataset.image_size}, batch {bs}, {workers} loader workers, "
        f"`{cfg.backbone.name}`, loss `any_bce`, AdamW; CPU.", "",
        "| stage | images/s | relative to the training step |", "|---|---|---|",
        f"| training step (forward + backward + AdamW) | {step_ips:,.0f} | 1.00× |",
        f"| data loader (index + collate, {workers} workers) | {load_ips:,.0f} | {load_ips / step_ips:.1f}× |", "",
        f"The loader runs {load_ips / step_ips:.0f}× faster than training consumes images: on this data, "
        "loading is not the bottleneck." if load_ips >= 3 * step_ips else
        "Warning: the loader is less than 3× the training step rate; data loading may limit training.", ""])
    write("training.md", text)
    return text


if __name__ == "__main__":
    print(run())
