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
- ``f1_weighted``: per-class F1 weighted by the class's support (number of positives), scikit-learn's
  ``f1_score(average="weighted", zero_division=0)``; 0 when the split has no positive at all.
- ``cp``, ``cr``, ``cf1``, ``op``, ``or``, ``of1``: the multi-label metrics of OpenMMLab's classification
  toolbox (mmcls, now mmpretrain). CP and CR are per-class precision and recall averaged over classes
  (0 for a class without predictions resp. without positives), CF1 = 2·CP·CR / (CP + CR) the harmonic
  mean of those averages (not the mean of per-class F1, which is ``f1_macro``); OP, OR are precision and
  recall of all (instance, class) decisions pooled and OF1 = 2·OP·OR / (OP + OR), which equals
  ``f1_micro``. mmpretrain reports them in percent; here they are fractions in [0, 1].
- ``f2_ciw`` (when class weights are given, SewerML): Σ_c w_c F2_c / Σ_c w_c.
- ``map_head``, ``map_medium``, ``map_tail`` (when class groups are given, ``mlc.data.groups``):
  mAP over the classes of each group that has at least one class with a positive in the split.

The threshold is one float for every class or an array with one per class (``tune_thresholds`` picks
per-class thresholds that maximise each class's F-beta on a validation split). Metrics are computed from
the complete score matrix; under DDP the trainer gathers every sample exactly once before calling
``multilabel_metrics`` (see ``mlc.engine.distributed``).
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


def _sorted_class_map(scores: np.ndarray, labels: np.ndarray, per_class, chunk_scores: int) -> list:
    """``per_class(row, sorted_row, positives)`` for every class (column) of ``scores`` (N, K), in class order.

    Shared by ``average_precisions`` and ``tune_thresholds``: both need each class's scores sorted (and
    nothing else sorted), which is the only O(N log N) step. A chunk of classes is copied as contiguous
    rows and sorted there (NumPy's SIMD sort releases the GIL, so the classes of a chunk are split over
    threads); ``chunk_scores`` bounds the copies whatever the split's size. Scores keep their dtype.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    n, k = scores.shape
    step = max(1, chunk_scores // max(n, 1))
    workers = max(1, min(len(os.sched_getaffinity(0)), 8))

    def rows(block: np.ndarray, positives: np.ndarray) -> list:
        ordered = np.sort(block, axis=1)  # releases the GIL: the threads sort in parallel
        return [per_class(row, sorted_row, mask) for row, sorted_row, mask in zip(block, ordered, positives,
                                                                                  strict=True)]

    out: list = []
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, k, step):
            block = np.ascontiguousarray(scores[:, start:start + step].T)  # (classes, N): one row per class
            positives = np.ascontiguousarray(labels[:, start:start + step].T)
            parts = np.array_split(np.arange(len(block)), min(workers, len(block)))
            results = pool.map(rows, [block[idx] for idx in parts], [positives[idx] for idx in parts])
            out.extend(value for part in results for value in part)
    return out


def _float_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=bool)  # no copy of bool labels
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    return scores, labels


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
    scores, labels = _float_scores(scores, labels)
    n = scores.shape[0]

    def class_ap(row: np.ndarray, sorted_row: np.ndarray, mask: np.ndarray) -> float:
        thresholds, mult = np.unique(row[mask], return_counts=True)
        if thresholds.size == 0:
            return float("nan")
        n_at_or_above = n - np.searchsorted(sorted_row, thresholds, side="left")
        tp_at_or_above = np.cumsum(mult[::-1])[::-1]
        return float(np.sum(mult * tp_at_or_above / n_at_or_above)) / int(mult.sum())

    return np.array(_sorted_class_map(scores, labels, class_ap, chunk_scores), dtype=np.float64).reshape(-1)


def tune_thresholds(scores: np.ndarray, targets: np.ndarray, beta: float = 1.0, default: float = 0.5,
                    chunk_scores: int = AP_CHUNK_SCORES) -> np.ndarray:
    """Per-class thresholds (K,) that maximise each class's F-beta on ``scores``, ``targets`` (N, K).

    One global threshold (0.5 by default) suits none of the classes of a long-tailed label set equally:
    a rare class's calibrated probabilities rarely reach it, so its F1 is 0 however well it is ranked.
    Tuning a threshold per class on a validation split, then applying it (``multilabel_metrics`` takes
    the array) to the test split, is the usual remedy — tune on the split you do not report.

    Rule "score >= t is positive"; the candidates are the distinct scores of the class. Only a
    positive's score can be the best one: between two positive scores, raising t drops negatives only,
    so F-beta = (1+β²)·TP / (β²·P + n(≥ t)) strictly grows (P: the class's positives, n: the scores
    predicted positive). So, as in ``average_precisions``, each class's scores are sorted once, and
    n(≥ t) for the distinct positive scores comes from a binary search. With integer counts (and
    β² = 1 or 4) numerator and denominator are exact, so equal F values compare equal; among them the
    largest threshold wins (fewest predicted positives: the cheaper decision at the same F).

    The threshold returned is the midpoint between the chosen score and the next lower distinct score
    of the class, so that a test score slightly below the chosen one (unseen in the tuning split) is
    treated like the chosen score rather than like the one below, while every tuning score keeps its
    decision (the chosen score itself when there is no lower score, or when no value of the scores'
    dtype lies strictly between the two). A class without a positive in ``targets`` has no F to
    maximise and gets ``default``. Float64 thresholds; NaN scores raise a ValueError.
    """
    scores, targets = _float_scores(scores, targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, K)")
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: no threshold orders them")
    n, b2 = scores.shape[0], float(beta) ** 2

    def class_threshold(row: np.ndarray, sorted_row: np.ndarray, mask: np.ndarray) -> float:
        candidates, mult = np.unique(row[mask], return_counts=True)  # ascending distinct positive scores
        if candidates.size == 0:
            return float(default)
        below = np.searchsorted(sorted_row, candidates, side="left")  # scores strictly below each candidate
        tp = np.cumsum(mult[::-1])[::-1].astype(np.float64)
        fbeta = (1 + b2) * tp / (b2 * float(mult.sum()) + (n - below).astype(np.float64))
        best = candidates.size - 1 - int(np.argmax(fbeta[::-1]))  # the last maximum: the largest threshold
        chosen = candidates[best]
        if below[best] == 0:
            return float(chosen)
        lower = sorted_row[below[best] - 1]
        with np.errstate(invalid="ignore"):  # -inf and inf: NaN, which fails the check below
            middle = chosen * 0.5 + lower * 0.5  # in the scores' dtype; no overflow near the dtype's maximum
        return float(middle if lower < middle <= chosen else chosen)

    return np.array(_sorted_class_map(scores, targets, class_threshold, chunk_scores), dtype=np.float64).reshape(-1)


def _class_thresholds(threshold, k: int) -> float | np.ndarray:
    """A float threshold, or a per-class one as a (1, K) row that broadcasts over the rows of (N, K) scores."""
    t = np.asarray(threshold, dtype=np.float64)
    if t.ndim == 0:
        return float(t)
    if t.shape != (k,):
        raise ValueError(f"threshold must be a float or one value per class, of shape ({k},); got shape {t.shape}")
    return t[None, :]


def _confusion_counts(scores: np.ndarray, targets: np.ndarray, threshold):
    """Predictions (score >= threshold) and the per-class TP, FP, FN counts as float64."""
    pred = scores >= _class_thresholds(threshold, scores.shape[1])
    tp = (pred & targets).sum(0).astype(np.float64)
    fp = (pred & ~targets).sum(0).astype(np.float64)
    fn = (~pred & targets).sum(0).astype(np.float64)
    return pred, tp, fp, fn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(np.shape(num), dtype=np.float64), where=den > 0)


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray = 0.5,
                       class_weights: Sequence[float] | None = None,
                       class_groups: Sequence[str] | None = None) -> dict[str, float]:
    """All split-level metrics from probabilities ``scores`` (N, K) and binary ``targets`` (N, K).

    ``threshold``: one float, or one per class (shape (K,), e.g. from ``tune_thresholds``), compared as
    ``scores >= threshold[None, :]``; any other shape raises a ValueError.

    ``cf1`` follows the CF1 that OpenMMLab names so: mmcls' ``average_performance``
    (mmcls/core/evaluation/multilabel_eval_metrics.py, kept in the mmpretrain repository's history)
    returns CF1 = 2·CP·CR / (CP + CR), the harmonic mean of the class-averaged precision and recall, as
    in the ML-GCN line of papers whose tables report CP/CR/CF1/OP/OR/OF1. (mmpretrain 1.x's
    ``MultiLabelMetric(average="macro")`` "f1-score" is instead the mean of per-class F1: that value is
    ``f1_macro`` here, so ``cf1`` keeps the other, table-comparable definition.) mmcls multiplies by
    100; these are fractions in [0, 1].
    """
    raw = np.asarray(scores)
    scores = raw.astype(np.float64, copy=False)
    targets = np.asarray(targets, dtype=bool)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, K)")
    pred, tp, fp, fn = _confusion_counts(scores, targets, threshold)
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
    support = tp + fn
    cp, cr = float(_ratio(tp, tp + fp).mean()), float(_ratio(tp, support).mean())
    tp_all, fp_all, fn_all = tp.sum(), fp.sum(), fn.sum()
    op = float(tp_all / (tp_all + fp_all)) if tp_all + fp_all > 0 else 0.0
    or_ = float(tp_all / (tp_all + fn_all)) if tp_all + fn_all > 0 else 0.0
    out.update({
        "f1_weighted": float((support * f1_c).sum() / support.sum()) if support.sum() > 0 else 0.0,
        "cp": cp, "cr": cr, "cf1": _harmonic(cp, cr),
        # 2·OP·OR / (OP + OR) = 2·TP / (2·TP + FP + FN): the pooled F1, taken from f1_micro so both agree exactly.
        "op": op, "or": or_, "of1": out["f1_micro"],
    })
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


def per_class_metrics(scores: np.ndarray, targets: np.ndarray,
                      threshold: float | np.ndarray = 0.5) -> dict[str, list[float]]:
    """Per-class precision, recall, F1, F2, AP and support (for reports and head/medium/tail breakdowns).

    ``threshold`` is a float or one value per class, as in ``multilabel_metrics``; precision is 0 for a
    class without predicted positives and recall 0 for one without positives (``zero_division=0``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=bool)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, K)")
    _, tp, fp, fn = _confusion_counts(scores, targets, threshold)
    return {"precision": _ratio(tp, tp + fp).tolist(), "recall": _ratio(tp, tp + fn).tolist(),
            "f1": fbeta_from_counts(tp, fp, fn, 1.0).tolist(), "f2": fbeta_from_counts(tp, fp, fn, 2.0).tolist(),
            "ap": average_precisions(scores, targets).tolist(),
            "support": targets.sum(0).astype(int).tolist()}


def per_class_report(scores: np.ndarray, targets: np.ndarray, class_names: Sequence[str], threshold: float = 0.5,
                     thresholds: np.ndarray | None = None, class_groups: Sequence[str] | None = None) -> list[dict]:
    """One row per class: its name, group, support, AP and precision/recall/F1/F2 at ``threshold`` (and F1 at
    its tuned threshold when ``thresholds`` are given): the per-class table of a report or ``mlc evaluate``."""
    at = per_class_metrics(scores, targets, threshold)
    tuned = per_class_metrics(scores, targets, np.asarray(thresholds)) if thresholds is not None else None
    rows = []
    for k, name in enumerate(class_names):
        row = {"class": str(name), "group": class_groups[k] if class_groups is not None else None,
               "support": at["support"][k], "ap": at["ap"][k], "precision": at["precision"][k],
               "recall": at["recall"][k], "f1": at["f1"][k], "f2": at["f2"][k]}
        if tuned is not None:
            row |= {"tuned_threshold": float(thresholds[k]), "tuned_f1": tuned["f1"][k], "tuned_f2": tuned["f2"][k]}
        rows.append(row)
    return rows
