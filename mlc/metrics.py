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


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP of one class (NaN when the class has no positive)."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, y = np.asarray(scores, dtype=np.float64)[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # one operating point per distinct score
    tps = np.cumsum(y)[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5,
                       class_weights: Sequence[float] | None = None,
                       class_groups: Sequence[str] | None = None) -> dict[str, float]:
    """All split-level metrics from probabilities ``scores`` (N, K) and binary ``targets`` (N, K)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, K)")
    pred = scores >= threshold
    tp = (pred & targets).sum(0).astype(np.float64)
    fp = (pred & ~targets).sum(0).astype(np.float64)
    fn = (~pred & targets).sum(0).astype(np.float64)
    f1_c, f2_c = fbeta_from_counts(tp, fp, fn, 1.0), fbeta_from_counts(tp, fp, fn, 2.0)
    ap_c = np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
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
    targets = np.asarray(targets).astype(bool)
    pred = scores >= threshold
    tp = (pred & targets).sum(0).astype(np.float64)
    fp = (pred & ~targets).sum(0).astype(np.float64)
    fn = (~pred & targets).sum(0).astype(np.float64)
    return {"f1": fbeta_from_counts(tp, fp, fn, 1.0).tolist(), "f2": fbeta_from_counts(tp, fp, fn, 2.0).tolist(),
            "ap": [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])],
            "support": targets.sum(0).astype(int).tolist()}
