"""``python -m mlc.evaluate <checkpoint | run dir> [--split val|test] [--json]``: score a checkpoint.

The checkpoint carries its resolved config, so data, model and loss are rebuilt exactly as trained,
on one process. The DDP tests use this to show that metrics logged by a multi-process run equal
single-process metrics of the same weights.

Rebuilding runs whatever the config's ``_target_``s name, so ``ckpt.load`` vets the config first
(``mlc.trusted``): a crafted or foreign checkpoint naming any callable mlc's own configs do not use
is refused in one line (exit 2) before anything is imported or built.
"""

from __future__ import annotations

import argparse
import json
import sys

from omegaconf import OmegaConf

from mlc.config import build
from mlc.data.groups import class_groups
from mlc.engine import checkpoint as ckpt
from mlc.engine.distributed import DistContext
from mlc.engine.evaluation import evaluate
from mlc.errors import MlcError


def evaluate_checkpoint(path: str, split: str = "val", device: str = "cpu") -> dict[str, float]:
    state = ckpt.load(path)
    cfg = OmegaConf.create(state["config"])
    source = build(cfg.dataset, "dataset")
    dataset = source.load(split)
    train_stats = source.load("train").stats()
    model = build(cfg.backbone, "backbone", num_classes=source.num_classes)
    model.load_state_dict(state["model"])
    loss_fn = build(cfg.loss, "loss", class_counts=train_stats.class_counts,
                    negative_count=train_stats.negative_count, num_samples=train_stats.num_samples)
    dist = DistContext.from_env(device) if device != "cpu" else DistContext()
    return evaluate(model.to(dist.device), dataset, dist, int(cfg.trainer.eval_batch_size),
                    loss_fn=loss_fn.to(dist.device), threshold=float(cfg.trainer.threshold),
                    class_weights=getattr(source, "class_weights", None),
                    class_groups=class_groups(train_stats.class_counts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .pt checkpoint, or a run directory (uses checkpoints/last.pt)")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_checkpoint(args.checkpoint, args.split, args.device)
    except MlcError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
