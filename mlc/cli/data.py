"""``python -m mlc.cli.data [--json] [--decode] [overrides]``: a dataset's statistics per split.

Builds the dataset exactly as ``python -m mlc.cli.train <overrides>`` would (same config, same controls)
and prints, per split, the number of images, negatives and the negative ratio actually reached,
skipped images, and per-class counts with each class's head/medium/tail group (from its training
count: head > 100, medium 20-100, tail < 20). ``--json`` prints the same as JSON. Examples::

    python -m mlc.cli.data dataset=voc2007 dataset.root=/data/VOCdevkit/VOC2007
    python -m mlc.cli.data dataset=coco_modified dataset.root=/data/coco dataset.negative_ratio=0.5 --json

File-backed datasets are counted from their annotations (missing files included); ``--decode``
also decodes every image (and fills the cache training uses), which finds corrupt ones. Nothing
is trained and no model code is imported.
"""

from __future__ import annotations

import argparse
import json
import sys

from mlc.config import build, check_command_line, compose_config
from mlc.data.base import SPLITS, DatasetStats
from mlc.data.groups import GROUPS, class_groups
from mlc.errors import ConfigError, MlcError


def split_stats(source, decode: bool) -> dict[str, DatasetStats]:
    if decode or not hasattr(source, "label_stats"):
        return {split: source.load(split).stats() for split in SPLITS}
    return {split: source.label_stats(split) for split in SPLITS}


def report(name: str, stats: dict[str, DatasetStats]) -> dict:
    """Everything the command prints, as one JSON-able dict."""
    groups = class_groups(stats["train"].class_counts)
    return {"dataset": name, "class_names": stats["train"].class_names, "class_groups": groups,
            "group_sizes": {g: groups.count(g) for g in GROUPS},
            "splits": {split: st.to_dict() for split, st in stats.items()}}


def table(rep: dict) -> str:
    splits = rep["splits"]
    lines = [f"dataset: {rep['dataset']}  ({len(rep['class_names'])} classes)", "",
             f"{'split':<6} {'images':>9} {'negatives':>10} {'neg. ratio':>10} {'skipped':>8} {'labels/img':>10}"]
    for split, st in splits.items():
        lines.append(f"{split:<6} {st['num_samples']:>9,} {st['negative_count']:>10,} {st['negative_ratio']:>10.4f} "
                     f"{st['skipped']:>8,} {st['label_cardinality']:>10.3f}")
    width = max(12, *(len(c) for c in rep["class_names"]))
    lines += ["", f"{'class':<{width}} {'group':<6} " + " ".join(f"{s:>9}" for s in splits)]
    for k, (name, group) in enumerate(zip(rep["class_names"], rep["class_groups"], strict=True)):
        counts = " ".join(f"{st['class_counts'][k]:>9,}" for st in splits.values())
        lines.append(f"{name:<{width}} {group:<6} {counts}")
    sizes = ", ".join(f"{g} {n}" for g, n in rep["group_sizes"].items())
    lines += ["", f"groups by training count (head > 100, medium 20-100, tail < 20): {sizes}"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlc.cli.data", description=__doc__.splitlines()[0],
                                     epilog="overrides: Hydra key=value, as for python -m mlc.cli.train")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--decode", action="store_true", help="decode (and cache) every image first")
    args, overrides = parser.parse_known_args(argv)
    error = check_command_line(overrides)
    if error:
        print(error, file=sys.stderr)
        return 2
    cfg = compose_config(overrides, hydra=True)
    name = cfg.hydra.runtime.choices.get("dataset") or "dataset"
    try:
        rep = report(name, split_stats(build(cfg.dataset, "dataset"), args.decode))
    except MlcError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    print(json.dumps(rep, indent=2) if args.json else table(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
