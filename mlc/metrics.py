"""Evaluation metrics of the seed papers, computed once over a whole split in float64.

- ``f1_macro``, ``f2_macro``: per-class F-beta at a score threshold (score >= t is positive),
  averaged over classes; a class with no positives and no predictions scores 0 (scikit-learn's
  ``zero_division=0``).
- ``f1_micro``: F1 of all (instance, class) decisions pooled.
- ``map``: mean over classes of the non-interpolated average precision Σ_n (R_n − R_{n−1}) P_n,
  ties handled as scikit-learn does; classes without a positive in the split are left out
  (their AP is undefined) and counted in ``map_classes``.
- ``f1_neg``: F1 of the instance-level decision "no class present" (true: all-zero row; predicted:
  no score >= t) — how well the model recognises negative instances.
- ``f2_ciw`` (when class weights are given, SewerML): Σ_c w_c F2_c / Σ_c w_c.
- ``map_head``, ``map_medium``, ``map_tail`` (when class groups are given, ``mlc.data.groups``):
  mAP over the classes of each group that has at least one class with a positive in the split.

Metrics are computed from the complete score matrix; under DDP the trainer gathers every sample
exactly once before calling ``multilabel_metrics`` (see ``mlc.engine.distributed``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_NAMES = ("f1_macro", "f2_macro", "f1_micro", "map", "f1_neg")


def fbeta_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float) -> np.ndarray:
    b2 = beta * beta
    num = (1 + b2) * tp
    den = (1 + b2) * tp + b2 * fn + fp
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


# Scores handled at once by ``average_precisions``: a chunk of classes is copied and sorted (two arrays
# of its size), so this bounds the temporaries near 32 MB for float32 whatever the split's size.
AP_CHUNK_SCORES = 1 << 22


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP of one class (NaN when the class has no positive)."""
    return float(average_precisions(np.asarray(scores)[:, None], np.asarray(labels)[:, None])[0])


def average_precisions(scores: np.ndarray, labels: np.ndarray, chunk_scores: int = AP_CHUNK_SCORES) -> np.ndarray:
    """Average precision of every class (column) of ``scores`` (N, K): scikit-learn's value, ties included;
    NaN for a class without a positive.

    AP = Σ_n (R_n − R_{n−1}) P_n over the distinct scores taken as thresholds. Recall only moves at a
    positive's score, so with t_1 < … < t_U the distinct scores of a class's P positives (m_j of them
    at t_j): AP = (1/P) Σ_j m_j · tp(≥ t_j) / n(≥ t_j), where tp counts positives and n all scores at or
    above the threshold. So no labels travel with the scores: each class's scores are sorted as plain
    values (NumPy's SIMD sort, the classes of a chunk split over the cores) and n(≥ t_j) is found by a
    binary search of the U thresholds only. At 100k × 1000 that is several times faster than
    scikit-learn (``make bench``: experiments/benchmarks/metrics.md). Scores keep their dtype (float32
    scores are sorted as float32, which changes no tie), and memory is bounded by ``chunk_scores``.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    scores, labels = np.asarray(scores), np.asarray(labels, dtype=bool)  # no copy of bool labels
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    n, k = scores.shape
    out = np.full(k, np.nan)
    step = max(1, chunk_scores // max(n, 1))
    workers = max(1, min(len(os.sched_getaffinity(0)), 8))

    def rows_ap(block: np.ndarray, positives: np.ndarray) -> list[float]:
        ordered = np.sort(block, axis=1)  # releases the GIL: the threads sort in parallel
        aps = []
        for row, sorted_row, mask in zip(block, ordered, positives, strict=True):
            thresholds, mult = np.unique(row[mask], return_counts=True)
            if thresholds.size == 0:
                aps.append(float("nan"))
                continue
            n_at_or_above = n - np.searchsorted(sorted_row, thresholds, side="left")
            tp_at_or_above = np.cumsum(mult[::-1])[::-1]
            aps.append(float(np.sum(mult * tp_at_or_above / n_at_or_above)) / int(mult.sum()))
        return aps

    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, k, step):
            block = np.ascontiguousarray(scores[:, start:start + step].T)  # (classes, N): one row per class
            positives = np.ascontiguousarray(labels[:, start:start + step].T)
            parts = np.array_split(np.arange(len(block)), min(workers, len(block)))
            results = pool.map(rows_ap, [block[idx] for idx in parts], [positives[idx] for idx in parts])
            out[start:start + len(block)] = [ap for part in results for ap in part]
    return out


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5,
                       class_weights: Sequence[float] | None = None,
                       class_groups: Sequence[str] | None = None) -> dict[str, float]:
    """All split-level metrics from probabilities ``scores`` (N, K) and binary ``targets`` (N, K)."""
    raw = np.asarray(scores)
    scores = raw.astype(np.float64, copy=False)
    targets = np.asarray(targets, dtype=bool)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, K)")
    pred = scores >= threshold
    tp = (pred & targets).sum(0).astype(np.float64)
    fp = (pred & ~targets).sum(0).astype(np.float64)
    fn = (~pred & targets).sum(0).astype(np.float64)
    f1_c, f2_c = fbeta_from_counts(tp, fp, fn, 1.0), fbeta_from_counts(tp, fp, fn, 2.0)
    ap_c = average_precisions(raw, targets)  # in the scores' own dtype: float32 stays fast, and exact
    true_neg, pred_neg = ~targets.any(1), ~pred.any(1)
    neg_counts = [np.array([float(x)]) for x in ((true_neg & pred_neg).sum(), (~true_neg & pred_neg).sum(),
                                                  (true_neg & ~pred_neg).sum())]
    out = {
        "f1_macro": float(f1_c.mean()),
        "f2_macro": float(f2_c.mean()),
        "f1_micro": float(fbeta_from_counts(*[np.array([x.sum()]) for x in (tp, fp, fn)], 1.0)[0]),
        "map": float(np.nanmean(ap_c)) if np.isfinite(ap_c).any() else float("nan"),
        "f1_neg": float(fbeta_from_counts(*neg_counts, 1.0)[0]),
        "map_classes": int(np.isfinite(ap_c).sum()),
    }
    if class_weights is not None:
        w = np.asarray(class_weights, dtype=np.float64)
        out["f2_ciw"] = float((w * f2_c).sum() / w.sum())
    if class_groups is not None:
        groups = np.asarray(class_groups)
        for group in dict.fromkeys(class_groups):
            ap = ap_c[groups == group]
            if np.isfinite(ap).any():
                out[f"map_{group}"] = float(np.nanmean(ap))
    return out


def per_class_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict[str, list[float]]:
    """Per-class F1, F2 and AP (for reports and head/medium/tail breakdowns)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=bool)
    pred = scores >= threshold
    tp = (pred & targets).sum(0).astype(np.float64)
    fp = (pred & ~targets).sum(0).astype(np.float64)
    fn = (~pred & targets).sum(0).astype(np.float64)
    return {"f1": fbeta_from_counts(tp, fp, fn, 1.0).tolist(), "f2": fbeta_from_counts(tp, fp, fn, 2.0).tolist(),
            "ap": average_precisions(scores, targets).tolist(),
            "support": targets.sum(0).astype(int).tolist()}
