"""Two questions about a training step on the default configuration (digits 32×32, batch 64,
``mlc_cnn_small``, loss ``any_bce``, AdamW), answered in the same process:

1. **What does mlc's trainer cost over a bare PyTorch loop?** ``Trainer.fit`` against a hand-written
   loop (DataLoader, forward, loss, backward, step, LR schedule: nothing else) on the same model, data,
   batch size and order. They alternate epoch by epoch (the bare epoch runs from the trainer's epoch
   callback), so both see the same machine drift; the table gives the median ratio of images/s over
   the rounds. Target: the trainer at >= 95% of the bare loop.
2. **Is data loading the bottleneck?** Images/s through the DataLoader (indexing + collate) next to
   images/s through forward + backward + optimizer step.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from benchmarks.common import AlternatingRates, median_seconds, write
from mlc.config import build, compose_config
from mlc.optim import param_groups
from mlc.provenance import machine

STEPS = 20
ROUNDS = 7  # trainer epochs, each followed by one bare-loop epoch
TRAIN_SIZE = 2048  # 32 steps per epoch at batch 64
TARGET = 0.95


def trainer_vs_bare_loop(cfg, rounds: int = ROUNDS) -> dict[str, float]:
    """Median over ``rounds`` of (trainer images/s) / (bare loop images/s), and both medians."""
    from mlc.engine import TrainData, Trainer, optimizer_steps_per_epoch
    from mlc.engine.settings import TrainerSettings

    source = build(cfg.dataset, "dataset")
    train = source.load("train")
    val = source.load("val")
    stats = train.stats()
    settings = TrainerSettings(**{**{k: v for k, v in cfg.trainer.items() if not str(k).startswith("_")},
                                  "max_epochs": rounds + 1, "device": "cpu", "test_after_fit": False})
    data = TrainData({"train": train, "val": val})

    def parts():
        torch.manual_seed(0)
        model = build(cfg.backbone, "backbone", num_classes=source.num_classes)
        loss_fn = build(cfg.loss, "loss", class_counts=stats.class_counts, negative_count=stats.negative_count)
        optimizer = build(cfg.optimizer, "optimizer")(param_groups(model, float(cfg.optimizer.weight_decay)))
        scheduler = build(cfg.scheduler, "scheduler")(
            optimizer, steps_per_epoch=optimizer_steps_per_epoch(settings, len(train)), max_epochs=rounds + 1)
        return model, loss_fn, optimizer, scheduler

    model, loss_fn, optimizer, scheduler = parts()
    bare = {"model": model, "loss": loss_fn, "optimizer": optimizer, "scheduler": scheduler, "epoch": 0}

    def bare_epoch() -> float:
        """The loop a user would write by hand; returns images/s."""
        bare["model"].train()
        loader = DataLoader(train, batch_size=settings.batch_size, shuffle=True, num_workers=settings.num_workers,
                            drop_last=True, generator=torch.Generator().manual_seed(bare["epoch"]))
        bare["epoch"] += 1
        seen, start = 0, time.perf_counter()
        for batch in loader:
            loss = bare["loss"](bare["model"](batch["image"]), batch["target"])
            bare["optimizer"].zero_grad(set_to_none=True)
            loss.backward()
            bare["optimizer"].step()
            bare["scheduler"].step()
            seen += len(batch["target"])
        return seen / (time.perf_counter() - start)

    import tempfile

    alternate = AlternatingRates(lambda epoch: bare_epoch())
    with tempfile.TemporaryDirectory() as run_dir:
        model, loss_fn, optimizer, scheduler = parts()
        Trainer(settings, model, loss_fn, optimizer, scheduler, data, run_dir, callbacks=[alternate]).fit()
    return {**alternate.summary(), "steps": len(train) // settings.batch_size}


def run(cache_dir: str | None = None, rounds: int = ROUNDS) -> str:
    cfg = compose_config([f"paths.cache={cache_dir}"] if cache_dir else [])
    loop = trainer_vs_bare_loop(compose_config([*([f"paths.cache={cache_dir}"] if cache_dir else []),
                                                f"dataset.train_size={TRAIN_SIZE}", "dataset.val_size=256",
                                                "tracking=none"]), rounds)
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
    verdict = "meets" if loop["ratio"] >= TARGET else "misses"
    text = "\n".join([
        "# Training: mlc's trainer against a bare loop, and the data pipeline", "",
        f"Measured by `make bench` (`python -m benchmarks training`; {machine()}).", "",
        f"Default configuration: digits {cfg.dataset.image_size}×{cfg.dataset.image_size}, batch {bs}, "
        f"{workers} loader workers, `{cfg.backbone.name}`, loss `any_bce`, AdamW, warm-up cosine; CPU.", "",
        "## Trainer vs a bare PyTorch loop", "",
        f"{loop['steps']} steps per epoch ({TRAIN_SIZE} images); the two alternate epoch by epoch, {loop['rounds']} "
        "rounds after one warm-up round each. The trainer's epoch includes everything it does per step "
        "(the device-side running loss and training-probability sums, a health check every "
        "`log_every_n_steps`); validation and checkpoints between epochs are not timed.", "",
        "| loop | images/s (median) | relative to the bare loop |", "|---|---|---|",
        f"| bare loop (forward, loss, backward, AdamW, LR step) | {loop['bare']:,.0f} | 1.00× |",
        f"| `mlc.engine.Trainer.fit` | {loop['trainer']:,.0f} | {loop['ratio']:.3f}× (median of per-round ratios) |",
        "", f"The trainer {verdict} the target of >= {TARGET:.0%} of the bare loop.", "",
        "## Data pipeline vs training step", "",
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
