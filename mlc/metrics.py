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
- ``auc_macro``: mean ROC AUC over the classes with both a positive and a negative in the split
  (``auc_classes`` of them; NaN when none).
- ``fnr``, ``fpr``: false-negative and false-positive rates of all (instance, class) decisions pooled;
  ``fpr_neg_images``, ``fpr_pos_images``: false alarms on negative images (share with any class predicted)
  and on positive images (share of their negative labels predicted); ``img_pos_*`` and ``img_neg_*``:
  precision, recall, F1, F2 of the image-level decision "at least one class" on either side
  (``img_neg``'s F1 is ``f1_neg``). Exact definitions: ``threshold_metrics``.
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
- ``f1_macro_hm_neg``: the harmonic mean of ``f1_macro`` (which classes) and ``f1_neg`` (whether any
  class): 0 whenever either is 0, so a model that predicts one label set everywhere — every class
  (F1-Neg 0) or nothing (F1 macro 0) — scores 0 however the split is composed. A part the split leaves
  undefined (``f1_neg`` without a negative instance, ``f1_macro`` without any positive label: an
  all-negative batch) is left out and the other part is the value; an empty split scores 0.

``degenerate_predictions`` tells whether thresholded predictions are degenerate (the same label set
nearly everywhere, or every class on nearly every negative instance; see ``DEGENERATE_SHARE``): the
trainer asks it of the best epoch's validation predictions.

The threshold is one float for every class or an array with one per class (``tune_thresholds`` picks
per-class thresholds that maximise each class's F-beta on a validation split). Metrics are computed from
the complete score matrix; under DDP the trainer gathers every sample exactly once before calling
``multilabel_metrics`` (see ``mlc.engine.distributed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

METRIC_NAMES = ("f1_macro", "f2_macro", "f1_micro", "map", "f1_neg", "f1_macro_hm_neg")


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
    return _ranking_metrics(scores, labels, chunk_scores)[:, 0]


def roc_aucs(scores: np.ndarray, labels: np.ndarray, chunk_scores: int = AP_CHUNK_SCORES) -> np.ndarray:
    """ROC AUC of every class (column) of ``scores`` (N, K): scikit-learn's ``roc_auc_score`` of the class,
    ties counted one half; NaN for a class without both a positive and a negative (where scikit-learn raises).

    AUC is the share of (positive, negative) pairs ordered correctly: with the distinct positive scores
    t_j (m_j positives each), AUC = Σ_j m_j · (neg(< t_j) + ½ neg(= t_j)) / (P · N_neg), where the negatives
    below and at t_j come from the same sorted scores and binary searches as ``average_precisions``.
    """
    return _ranking_metrics(scores, labels, chunk_scores)[:, 1]


def _ranking_metrics(scores: np.ndarray, labels: np.ndarray, chunk_scores: int = AP_CHUNK_SCORES) -> np.ndarray:
    """(K, 2): every class's average precision and ROC AUC (``average_precisions``, ``roc_aucs``) from one
    sort of its scores."""
    scores, labels = _float_scores(scores, labels)
    n = scores.shape[0]

    def class_ranking(row: np.ndarray, sorted_row: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        thresholds, mult = np.unique(row[mask], return_counts=True)
        positives = int(mult.sum())
        if positives == 0:
            return float("nan"), float("nan")
        below = np.searchsorted(sorted_row, thresholds, side="left")
        tp_at_or_above = np.cumsum(mult[::-1])[::-1]
        ap = float(np.sum(mult * tp_at_or_above / (n - below))) / positives
        negatives = n - positives
        if negatives == 0:
            return ap, float("nan")
        neg_below = below - (positives - tp_at_or_above)  # scores below t_j less the positives below it
        neg_tied = np.searchsorted(sorted_row, thresholds, side="right") - below - mult
        return ap, float(np.sum(mult * (2 * neg_below + neg_tied))) / (2.0 * positives * negatives)

    return np.array(_sorted_class_map(scores, labels, class_ranking, chunk_scores), dtype=np.float64).reshape(-1, 2)


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


def f1_macro_hm_neg(f1_macro: float, f1_neg: float, has_positive: bool = True, has_negative: bool = True) -> float:
    """The harmonic mean of macro F1 and F1-Neg (``2ab / (a + b)``, 0 when both are 0): the sweep objective of the
    λ presets. A constant prediction zeroes one of the two (every class everywhere: no instance predicted
    negative, F1-Neg 0; nothing anywhere: no true positive, F1 macro 0), so it scores 0, where the plain mean
    would give it half of the other part (F1-Neg of "nothing" is 2r / (1 + r) at negative ratio r: 0.67 at
    r = 0.5). A part the split cannot define is left out: without a negative instance (``has_negative``
    False) the value is ``f1_macro``, without any positive label (an all-negative batch) it is ``f1_neg``;
    neither (an empty split): 0."""
    if has_positive and has_negative:
        return _harmonic(float(f1_macro), float(f1_neg))
    if has_positive:
        return float(f1_macro)
    return float(f1_neg) if has_negative else 0.0


# Degenerate predictions (``degenerate_predictions``), decided at the threshold the metrics use. An untrained
# network predicts (nearly) the same thing for every image, and a threshold metric can still rank it first
# (F1 macro of "every class everywhere" is the mean of 2p/(1+p) over the class prevalences p); these rules
# catch it, whatever the objective:
# - "same_set": one predicted label set S on at least DEGENERATE_SAME_SET_SHARE of the images, and on at
#   least that share of the images whose true label set is not S (so a split that is itself 95% negative
#   does not flag a model that rightly predicts nothing on it; the trivial "nothing" model is flagged). S
#   may be every class, no class, or any fixed set.
# - "all_on_negatives": every class predicted on at least DEGENERATE_NEGATIVE_SHARE of the negative images
#   (a model that differs on the positives but calls every class on each negative).
DEGENERATE_SAME_SET_SHARE = 0.95
DEGENERATE_NEGATIVE_SHARE = 0.95
DEGENERATE_RULES = {
    "same_set": f"one predicted label set on >= {DEGENERATE_SAME_SET_SHARE:.0%} of the validation images and of "
                f"those whose labels are another set",
    "all_on_negatives": f"every class predicted on >= {DEGENERATE_NEGATIVE_SHARE:.0%} of the negative validation "
                        f"images",
}


@dataclass(frozen=True)
class Degenerate:
    """Why a split's predictions are degenerate: the rule (a key of ``DEGENERATE_RULES``), the share of the
    images it counted (all images for ``same_set``, the negative ones for ``all_on_negatives``), how many
    images that share is of, and one readable sentence."""

    reason: str
    share: float
    images: int
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _label_set(row: np.ndarray, class_names: Sequence[str] | None) -> str:
    if row.all():
        return "every class"
    if not row.any():
        return "no class"
    names = [str(class_names[i]) if class_names is not None else str(i) for i in np.flatnonzero(row)]
    return "classes " + ", ".join(names[:6]) + (f" +{len(names) - 6} more" if len(names) > 6 else "")


def degenerate_predictions(scores: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray = 0.5,
                           class_names: Sequence[str] | None = None) -> Degenerate | None:
    """``Degenerate`` if the predictions ``scores >= threshold`` on (N, K) ``scores`` with binary ``targets``
    break one of the rules above (``same_set`` is checked first), else None. An empty split is not degenerate."""
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=bool)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, K)")
    n, k = scores.shape
    if n == 0 or k == 0:
        return None
    pred = scores >= _class_thresholds(threshold, k)
    packed = np.packbits(pred, axis=1)  # one row of bytes per image: equal rows are equal label sets
    _, first, inverse, counts = np.unique(packed, axis=0, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    top = int(np.argmax(counts))
    share = float(counts[top]) / n
    if share >= DEGENERATE_SAME_SET_SHARE:
        chosen = pred[first[top]]
        differs = (targets != chosen[None, :]).any(axis=1)  # images whose labels are not the predicted set
        if differs.any():
            wrong = float(np.mean(inverse[differs] == top))
            if wrong >= DEGENERATE_SAME_SET_SHARE:
                return Degenerate("same_set", share, n, (
                    f"the same predicted label set ({_label_set(chosen, class_names)}) on {share:.1%} of the {n} "
                    f"images, and on {wrong:.1%} of the {int(differs.sum())} whose labels are not that set"))
    negatives = ~targets.any(axis=1)
    if negatives.any():
        share = float(np.mean(pred[negatives].all(axis=1)))
        if share >= DEGENERATE_NEGATIVE_SHARE:
            count = int(negatives.sum())
            return Degenerate("all_on_negatives", share, count,
                              f"every class predicted on {share:.1%} of the {count} negative images")
    return None


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray = 0.5,
                       class_weights: Sequence[float] | None = None,
                       class_groups: Sequence[str] | None = None) -> dict[str, float]:
    """All split-level metrics from probabilities ``scores`` (N, K) and binary ``targets`` (N, K): those of
    ``threshold_metrics`` at ``threshold`` and the ranking metrics, which need no threshold (``map``,
    ``map_classes``, ``auc_macro``, ``auc_classes``, ``map_<group>``).

    ``threshold``: one float, or one per class (shape (K,), e.g. from ``tune_thresholds``), compared as
    ``scores >= threshold[None, :]``; any other shape raises a ValueError.

    ``auc_macro``: the mean ROC AUC (``roc_aucs``) over the classes with both a positive and a negative in
    the split (their number is ``auc_classes``; the others have no AUC, and scikit-learn raises on them);
    NaN when no class has both.
    """
    raw = np.asarray(scores)
    at = threshold_metrics(raw, targets, threshold, class_weights)
    ranked = _ranking_metrics(raw, np.asarray(targets, dtype=bool))  # in the scores' own dtype: fast, and exact
    ap_c, auc_c = ranked[:, 0], ranked[:, 1]
    out = {k: at[k] for k in ("f1_macro", "f2_macro", "f1_micro")} | {  # the first keys keep their places
        "map": float(np.nanmean(ap_c)) if np.isfinite(ap_c).any() else float("nan")} | at | {
        "map_classes": int(np.isfinite(ap_c).sum()),
        "auc_macro": float(np.nanmean(auc_c)) if np.isfinite(auc_c).any() else float("nan"),
        "auc_classes": int(np.isfinite(auc_c).sum()),
    }
    if class_groups is not None:
        groups = np.asarray(class_groups)
        for group in dict.fromkeys(class_groups):
            ap = ap_c[groups == group]
            if np.isfinite(ap).any():
                out[f"map_{group}"] = float(np.nanmean(ap))
    return out


def _precision_recall_f(tp: float, fp: float, fn: float, prefix: str) -> dict[str, float]:
    """``<prefix>_precision``, ``_recall``, ``_f1``, ``_f2`` of one binary decision's counts (0 where undefined)."""
    tp, fp, fn = (np.asarray(float(x)) for x in (tp, fp, fn))
    return {f"{prefix}_precision": float(_ratio(tp, tp + fp)), f"{prefix}_recall": float(_ratio(tp, tp + fn)),
            f"{prefix}_f1": float(fbeta_from_counts(tp, fp, fn, 1.0)),
            f"{prefix}_f2": float(fbeta_from_counts(tp, fp, fn, 2.0))}


def threshold_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray = 0.5,
                      class_weights: Sequence[float] | None = None) -> dict[str, float]:
    """The metrics of ``multilabel_metrics`` that depend on the threshold (all but the ranking ones): cheap,
    so a sweep over thresholds (``mlc evaluate --thresholds``) takes them at each one. A ratio whose
    denominator is 0 is 0 (``_ratio``), as everywhere in this module.

    Label-level error rates, over all N·K (instance, class) cells pooled:

    - ``fnr``: FN / (TP + FN), the share of positive labels not predicted (1 − ``or`` when there is one);
    - ``fpr``: FP / (FP + TN), the share of negative labels predicted.

    On images, "positive" meaning at least one true label and "negative" none:

    - ``fpr_neg_images``: the share of negative images with at least one class predicted (a false alarm on
      a clean image);
    - ``fpr_pos_images``: FP / (FP + TN) over the cells of the positive images only: the share of the
      negative labels of positive images that are predicted (a wrong extra class on an image with a real one).

    Image-level presence: the binary decision "the image contains at least one class", true when its row of
    targets has a 1 and predicted when any score reaches its threshold, scored on both sides:

    - ``img_pos_precision``, ``img_pos_recall``, ``img_pos_f1``, ``img_pos_f2``: with the positive images
      as the positive class;
    - ``img_neg_precision``, ``img_neg_recall``, ``img_neg_f2``: with the negative images as the positive
      class. Its F1 is ``f1_neg``, so it has no second name; ``img_neg_recall`` = 1 − ``fpr_neg_images``
      when there is a negative image.

    ``cf1`` follows the CF1 that OpenMMLab names so: mmcls' ``average_performance``
    (mmcls/core/evaluation/multilabel_eval_metrics.py, kept in the mmpretrain repository's history)
    returns CF1 = 2·CP·CR / (CP + CR), the harmonic mean of the class-averaged precision and recall, as
    in the ML-GCN line of papers whose tables report CP/CR/CF1/OP/OR/OF1. (mmpretrain 1.x's
    ``MultiLabelMetric(average="macro")`` "f1-score" is instead the mean of per-class F1: that value is
    ``f1_macro`` here, so ``cf1`` keeps the other, table-comparable definition.) mmcls multiplies by
    100; these are fractions in [0, 1].
    """
    scores = np.asarray(scores).astype(np.float64, copy=False)
    targets = np.asarray(targets, dtype=bool)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, K)")
    pred, tp, fp, fn = _confusion_counts(scores, targets, threshold)
    f1_c, f2_c = fbeta_from_counts(tp, fp, fn, 1.0), fbeta_from_counts(tp, fp, fn, 2.0)
    true_neg, pred_neg = ~targets.any(1), ~pred.any(1)
    # Image-level counts of the decision "at least one class": true/false positive/negative images.
    img_tp, img_fp = float((~true_neg & ~pred_neg).sum()), float((true_neg & ~pred_neg).sum())
    img_fn, img_tn = float((~true_neg & pred_neg).sum()), float((true_neg & pred_neg).sum())
    out = {
        "f1_macro": float(f1_c.mean()),
        "f2_macro": float(f2_c.mean()),
        "f1_micro": float(fbeta_from_counts(*[np.array([x.sum()]) for x in (tp, fp, fn)], 1.0)[0]),
        "f1_neg": float(fbeta_from_counts(np.asarray(img_tn), np.asarray(img_fn), np.asarray(img_fp), 1.0)),
    }
    out["f1_macro_hm_neg"] = f1_macro_hm_neg(out["f1_macro"], out["f1_neg"], has_positive=bool(targets.any()),
                                             has_negative=bool(true_neg.any()))
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
    positive_rows = ~true_neg[:, None]
    out.update({
        "fnr": float(_ratio(fn_all, tp_all + fn_all)),
        "fpr": float(_ratio(fp_all, float(targets.size - tp_all - fn_all))),
        "fpr_neg_images": float(_ratio(img_fp, img_fp + img_tn)),
        "fpr_pos_images": float(_ratio((pred & ~targets & positive_rows).sum(), (~targets & positive_rows).sum())),
        **_precision_recall_f(img_tp, img_fp, img_fn, "img_pos"),
        **{k: v for k, v in _precision_recall_f(img_tn, img_fn, img_fp, "img_neg").items() if k != "img_neg_f1"},
    })
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
