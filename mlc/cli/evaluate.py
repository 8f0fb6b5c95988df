"""``mlc evaluate SCORES [SCORES ...] [--json]``: every metric of scores files (or of runs), as a table.

Each argument is a scores file written by ``mlc infer`` or by the trainer (``<run>/scores/test.csv``;
``mlc.scores``), or a run directory / checkpoint, which is scored on ``--split`` first (the same
path as ``mlc infer``, without writing a file). Metrics are ``mlc.metrics.multilabel_metrics`` at the
run's threshold, with the class groups and weights recorded beside the scores, so that evaluating
a run's test scores reproduces the test metrics the run logged; where the scores carry per-class
thresholds tuned on validation, the ``tuned/<metric>`` values at those thresholds follow. The table
shows the usual metrics, then the error rates (AUC, FNR, FPR, false alarms on negative and positive
images) and the image-level "at least one class" metrics in two more blocks; ``--all`` puts every
metric in one table, ``--json`` prints them all.

``--thresholds START:STOP:STEP`` sweeps one global threshold over START, START+STEP, ... up to STOP
(inclusive, each in (0, 1)): one row per threshold with the threshold metrics most compared
(``--all``: every one; ``--json``: a list of objects, each with its ``threshold``).

    mlc evaluate outputs/runs/<date>/<time>/scores/test.csv
    mlc evaluate a.csv b.csv --json
    mlc evaluate outputs/runs/<date>/<time>/scores/test.csv --thresholds 0.05:0.95:0.05
    mlc evaluate outputs/runs/<date>/<time> --split val        # a run: scored first (includes the loss)

A checkpoint's config is vetted by ``mlc.trusted`` before anything is rebuilt: a crafted or foreign
checkpoint naming a callable mlc's own configs do not use is refused in one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from mlc.errors import MlcError

SUMMARY = ("f1_macro", "f2_macro", "f1_micro", "map", "f1_neg", "cf1", "of1", "f1_weighted", "loss",
           "tuned/f1_macro", "tuned/f2_macro", "tuned/f1_neg")
# The default table's blocks: SUMMARY, the error rates, the image-level metrics (one table would be too wide to read).
BLOCKS = (SUMMARY, ("auc_macro", "fnr", "fpr", "fpr_neg_images", "fpr_pos_images"),
          ("img_pos_precision", "img_pos_recall", "img_pos_f1", "img_pos_f2", "img_neg_precision", "img_neg_recall",
           "f1_neg", "img_neg_f2"))
# The columns of a --thresholds sweep.
SWEEP = ("f1_macro", "f2_macro", "f1_neg", "fnr", "fpr", "fpr_neg_images", "img_pos_f1")


def metrics_of_scores(scores) -> dict[str, float]:
    """All metrics of a ``mlc.scores.Scores`` with labels (its threshold(s), groups and weights)."""
    return metrics_from(*_labelled(scores))


def _labelled(scores) -> tuple:
    """``(probs, labels, meta, None)`` of a ``mlc.scores.Scores``, which must have labels (no loss: no logits)."""
    from mlc.scores import ScoresError  # deferred: loads numpy, which `mlc evaluate --help` does not

    if scores.labels is None:
        raise ScoresError("has no label columns: nothing to evaluate against (score a labelled split)")
    return scores.scores, scores.labels, scores.meta, None


def metrics_from(probs, labels, meta: dict, loss: float | None = None) -> dict[str, float]:
    """Metrics at ``meta``'s threshold and, when it holds tuned per-class thresholds, ``tuned/<m>`` at those."""
    import numpy as np

    from mlc.metrics import multilabel_metrics  # deferred: loads numpy, which `mlc evaluate --help` does not

    extra = {"class_weights": meta.get("class_weights"), "class_groups": meta.get("class_groups")}
    out = multilabel_metrics(probs, labels, threshold=float(meta.get("threshold", 0.5)), **extra)
    if loss is not None:
        out["loss"] = loss
    if meta.get("thresholds") is not None:
        tuned = multilabel_metrics(probs, labels, threshold=np.asarray(meta["thresholds"], dtype=np.float64), **extra)
        out |= {f"tuned/{k}": v for k, v in tuned.items()}
    return out


def threshold_sweep(probs, labels, meta: dict, thresholds: list[float]) -> list[dict[str, float]]:
    """``mlc.metrics.threshold_metrics`` at each global threshold (with ``meta``'s class weights), each row
    led by its ``threshold``; the ranking metrics (mAP, AUC) do not depend on it and are not recomputed."""
    from mlc.metrics import threshold_metrics  # deferred: loads numpy, which `mlc evaluate --help` does not

    return [{"threshold": t, **threshold_metrics(probs, labels, t, meta.get("class_weights"))} for t in thresholds]


def parse_thresholds(text: str) -> list[float]:
    """``START:STOP:STEP`` as the thresholds START, START+STEP, ... up to STOP inclusive, each rounded to 10
    decimals (so 0.05 + 2·0.05 is 0.15); an MlcError names what is wrong with any other text."""
    def bad(why: str) -> MlcError:
        return MlcError(f"--thresholds={text}: {why}")

    try:
        start, stop, step = (float(p) for p in text.split(":"))
    except ValueError:
        raise bad("expected three numbers START:STOP:STEP, e.g. 0.05:0.95:0.05") from None
    if not (0 < start < 1 and 0 < stop < 1):
        raise bad("START and STOP must lie strictly between 0 and 1")
    if not step > 0:
        raise bad("STEP must be positive")
    if start > stop:
        raise bad(f"START {start:g} is above STOP {stop:g}")
    count = math.floor((stop - start) / step + 1e-9) + 1  # the tolerance keeps STOP when float division falls short
    return [round(start + i * step, 10) for i in range(count)]


def score_checkpoint(path: str, split: str = "val", device: str = "cpu") -> tuple:
    """``(probs, labels, meta, loss)`` of a checkpoint, or of a run directory's best (else last) checkpoint,
    scored on one split, on one process."""
    # deferred: mlc.cli.infer loads OmegaConf and numpy, then torch to score; only a run or checkpoint needs it
    from mlc.cli.infer import infer, load_run, resolve_checkpoint

    run = Path(path)
    if run.is_dir():
        run = resolve_checkpoint(path, "best" if (run / "checkpoints" / "best.pt").is_file() else "last")
    _, scored, _, _, meta = infer(load_run(run), split, device=device)
    return scored.probs, scored.targets, meta, scored.loss


def evaluate_checkpoint(path: str, split: str = "val", device: str = "cpu") -> dict[str, float]:
    """Metrics (and the loss) of a checkpoint, or of a run directory's best (else last) checkpoint, on one
    split, on one process."""
    return metrics_from(*score_checkpoint(path, split, device))


def evaluate_any(target: str, split: str, device: str) -> dict[str, float]:
    return metrics_from(*load_any(target, split, device))


def load_any(target: str, split: str, device: str) -> tuple:
    """``(probs, labels, meta, loss)`` of a labelled scores file (loss None), a run directory or a checkpoint."""
    from mlc.scores import ScoresError, read_scores  # deferred: loads numpy, which `mlc evaluate --help` does not

    path = Path(target)
    if path.suffix in (".csv", ".parquet"):
        try:
            return _labelled(read_scores(path))
        except ScoresError as err:
            raise ScoresError(str(err) if str(err).startswith(str(path)) else f"{path}: {err}") from None
    if path.is_dir() and not (path / "checkpoints").is_dir():
        raise MlcError(f"{path}: a folder without checkpoints/ (give a run directory, a checkpoint or a scores file)")
    if not path.exists():
        raise MlcError(f"{path}: no such scores file, run directory or checkpoint")
    return score_checkpoint(str(path), split, device)


def per_class_table(scores) -> str:
    """The per-class rows of a labelled scores file (``--per-class``), one line per class."""
    from mlc.metrics import per_class_report  # deferred: loads numpy, which `mlc evaluate --help` does not

    meta = scores.meta
    rows = per_class_report(scores.scores, scores.labels, scores.class_names, float(meta.get("threshold", 0.5)),
                            meta.get("thresholds"), meta.get("class_groups"))
    keys = [k for k in rows[0] if k != "class" and (k != "group" or rows[0]["group"] is not None)]
    width = max(5, *(len(r["class"]) for r in rows))
    lines = [f"{'class':{width}}  " + "  ".join(f"{k:>9}" for k in keys)]
    for row in rows:
        cells = [f"{row[k]:>9.4f}" if isinstance(row[k], float) else f"{row[k]!s:>9}" for k in keys]
        lines.append(f"{row['class']:{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def format_table(results: dict[str, dict[str, float]], every: bool = False) -> str:
    """Fixed-width tables, one row per input: the metrics most users compare, the error rates and the
    image-level metrics, each block a table of its own (``every``: one table of all of them)."""
    seen = _columns(results)
    if every:
        return _table(results, seen)
    blocks = [[k for k in block if k in seen] for block in BLOCKS]
    return "\n\n".join(_table(results, keys) for keys in blocks if keys)


def _table(results: dict[str, dict[str, float]], keys: list[str], label: str = "") -> str:
    """One row per entry of ``results`` (its name first, under ``label``), one column per key."""
    width = max(len(label), *(len(name) for name in results))
    head = f"{label:{width}}  " + "  ".join(f"{k:>{max(len(k), 7)}}" for k in keys)
    lines = [head]
    for name, metrics in results.items():
        cells = []
        for k in keys:
            v = metrics.get(k)
            text = "-" if v is None else (f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else str(v))
            cells.append(f"{text:>{max(len(k), 7)}}")
        lines.append(f"{name:{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def print_sweep(results: dict[str, list[dict[str, float]]], as_json: bool, every: bool) -> None:
    """Each input's threshold sweep: a table (headed by the input's name when there are several) or JSON."""
    if as_json:
        print(json.dumps(next(iter(results.values())) if len(results) == 1 else results, indent=2))
        return
    tables = []
    for target, rows in results.items():
        by_threshold = {f"{row['threshold']:g}": {k: v for k, v in row.items() if k != "threshold"} for row in rows}
        keys = _columns(by_threshold) if every else [k for k in SWEEP if k in rows[0]]
        tables.append((f"{target}:\n" if len(results) > 1 else "") + _table(by_threshold, keys, "threshold"))
    print("\n\n".join(tables))


def _columns(results: dict[str, dict[str, float]]) -> list[str]:
    seen = list(dict.fromkeys(k for m in results.values() for k in m))
    first = [k for k in SUMMARY if k in seen]
    return first + [k for k in seen if k not in first]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlc evaluate", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("inputs", nargs="+", metavar="SCORES", help="scores files (.csv/.parquet), run dirs, .pt")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"],
                        help="the split to score a run or checkpoint on (default val)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--json", action="store_true", help="print every metric as JSON (one object per input)")
    parser.add_argument("--all", action="store_true", help="the table shows every metric, not the usual ones")
    parser.add_argument("--per-class", action="store_true",
                        help="also one row per class of each scores file: support, AP, precision, recall, F1, F2")
    parser.add_argument("--thresholds", metavar="START:STOP:STEP",
                        help="instead, the metrics at each global threshold START, START+STEP, ..., STOP (inclusive), "
                             "e.g. 0.05:0.95:0.05")
    args = parser.parse_args(argv)
    results = {}
    try:
        sweep = parse_thresholds(args.thresholds) if args.thresholds is not None else None
        for target in args.inputs:
            if sweep is None:
                results[target] = evaluate_any(target, args.split, args.device)
            else:
                results[target] = threshold_sweep(*load_any(target, args.split, args.device)[:3], sweep)
    except MlcError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if sweep is not None:
        print_sweep(results, args.json, args.all)
    elif args.json:
        only = next(iter(results.values())) if len(results) == 1 else results
        print(json.dumps(only, indent=2))
    else:
        print(format_table(results, every=args.all))
    if args.per_class:
        from mlc.scores import read_scores  # deferred: loads numpy, which `mlc evaluate --help` does not

        for target in args.inputs:
            if Path(target).suffix in (".csv", ".parquet"):
                print(f"\n{target}:\n{per_class_table(read_scores(target))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
