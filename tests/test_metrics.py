"""mlc.metrics against scikit-learn and torchmetrics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, fbeta_score, precision_score, recall_score
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from mlc.metrics import average_precision, average_precisions, multilabel_metrics, per_class_metrics, tune_thresholds


def sample(seed: int, n: int = 300, k: int = 6, ties: bool = False):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.25).astype(int)
    targets[rng.random(n) < 0.4] = 0  # plenty of negative instances
    scores = np.clip(0.35 * targets + rng.random((n, k)) * 0.7, 0, 1)
    if ties:
        scores = np.round(scores, 1)
    return scores, targets


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False)])
def test_against_scikit_learn(seed, ties):
    scores, targets = sample(seed, ties=ties)
    got = multilabel_metrics(scores, targets, threshold=0.5)
    pred = (scores >= 0.5).astype(int)
    assert got["f1_macro"] == pytest.approx(f1_score(targets, pred, average="macro", zero_division=0), abs=1e-12)
    assert got["f2_macro"] == pytest.approx(fbeta_score(targets, pred, beta=2, average="macro", zero_division=0),
                                            abs=1e-12)
    assert got["f1_micro"] == pytest.approx(f1_score(targets, pred, average="micro", zero_division=0), abs=1e-12)
    assert got["map"] == pytest.approx(average_precision_score(targets, scores, average="macro"), abs=1e-12)
    true_neg, pred_neg = targets.sum(1) == 0, pred.sum(1) == 0
    assert got["f1_neg"] == pytest.approx(f1_score(true_neg, pred_neg), abs=1e-12)


def test_against_torchmetrics():
    scores, targets = sample(3)
    got = multilabel_metrics(scores, targets)
    s, t = torch.tensor(scores, dtype=torch.float32), torch.tensor(targets)
    assert got["f1_macro"] == pytest.approx(MultilabelF1Score(6, average="macro")(s, t).item(), abs=1e-6)
    assert got["map"] == pytest.approx(MultilabelAveragePrecision(6, average="macro")(s, t).item(), abs=1e-6)


def test_threshold_is_inclusive():
    got = multilabel_metrics(np.array([[0.5, 0.2]]), np.array([[1, 0]]))
    assert got["f1_micro"] == 1.0 and got["f1_neg"] == 0.0  # no negative instance at all: F1 = 0


def test_class_without_positives_left_out_of_map():
    scores, targets = sample(4)
    targets[:, 2] = 0
    got = multilabel_metrics(scores, targets)
    keep = [0, 1, 3, 4, 5]
    assert got["map_classes"] == 5
    assert got["map"] == pytest.approx(average_precision_score(targets[:, keep], scores[:, keep]), abs=1e-12)
    assert np.isnan(average_precision(scores[:, 2], targets[:, 2]))


def test_f2_ciw_weighted_average_of_per_class_f2():
    scores, targets = sample(5)
    w = [1.0, 0.5518, 0.2896, 0.1622, 0.6419, 0.1847]
    got = multilabel_metrics(scores, targets, class_weights=w)
    f2 = fbeta_score(targets, (scores >= 0.5).astype(int), beta=2, average=None, zero_division=0)
    assert got["f2_ciw"] == pytest.approx(float(np.dot(w, f2) / np.sum(w)), abs=1e-12)


def test_per_class_metrics_match_sklearn():
    scores, targets = sample(6)
    pc = per_class_metrics(scores, targets)
    np.testing.assert_allclose(pc["ap"], average_precision_score(targets, scores, average=None), atol=1e-12)
    np.testing.assert_allclose(pc["f1"], f1_score(targets, scores >= 0.5, average=None, zero_division=0), atol=1e-12)


def test_map_per_class_group():
    scores, targets = sample(7)
    groups = ["head", "head", "medium", "tail", "tail", "tail"]
    got = multilabel_metrics(scores, targets, class_groups=groups)
    ap = average_precision_score(targets, scores, average=None)
    assert got["map_head"] == pytest.approx(ap[:2].mean(), abs=1e-12)
    assert got["map_medium"] == pytest.approx(ap[2], abs=1e-12)
    assert got["map_tail"] == pytest.approx(ap[3:].mean(), abs=1e-12)


def test_class_groups_thresholds():
    from mlc.data.groups import class_groups

    assert class_groups([101, 100, 20, 19, 0]) == ["head", "medium", "medium", "tail", "tail"]


def _sklearn_per_class(scores, targets):
    return np.array([average_precision_score(targets[:, c], scores[:, c]) if targets[:, c].any() else np.nan
                     for c in range(targets.shape[1])])


@pytest.mark.parametrize("case", ["continuous", "ties", "constant", "all_positive", "one_positive", "infinite",
                                  "dense_positives"])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 22])  # one class per chunk, a ragged last chunk, one chunk
def test_vectorised_ap_equals_scikit_learn(case, chunk):
    rng = np.random.default_rng(7)
    n, k = 500, 9
    targets = rng.random((n, k)) < 0.05
    scores = rng.random((n, k))
    if case == "ties":
        scores = np.round(scores, 1)
    elif case == "constant":
        scores[:] = 0.5
    elif case == "all_positive":
        targets[:, 3] = True
    elif case == "one_positive":
        targets[:, :] = False
        targets[rng.integers(n), :] = True
    elif case == "infinite":  # logits at ±inf still order correctly
        scores[rng.random((n, k)) < 0.05] = np.inf
        scores[rng.random((n, k)) < 0.05] = -np.inf
    elif case == "dense_positives":
        targets = rng.random((n, k)) < 0.6
    targets[:, 5] = False  # a class without positives: NaN, left out of mAP
    got = average_precisions(scores, targets, chunk_scores=chunk * n)
    # AP depends only on the order and ties of the scores; scikit-learn refuses ±inf, so map them into order.
    want = _sklearn_per_class(np.clip(scores, -1.0, 2.0), targets)
    assert np.isnan(got[5]) and np.isnan(want[5])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_vectorised_ap_in_float32_equals_float64_and_torchmetrics():
    scores, targets = sample(11, n=2000, k=12, ties=False)
    scores32 = scores.astype(np.float32)
    np.testing.assert_allclose(average_precisions(scores32, targets), average_precisions(scores32.astype(np.float64),
                                                                                         targets), atol=1e-15)
    per_class = MultilabelAveragePrecision(12, average=None)(torch.from_numpy(scores32), torch.from_numpy(targets))
    np.testing.assert_allclose(average_precisions(scores32, targets), per_class.numpy(), atol=1e-6)


def test_map_of_a_large_matrix_in_small_chunks_equals_one_chunk():
    rng = np.random.default_rng(3)
    targets = rng.random((20_000, 40)) < 0.02
    scores = (0.2 * targets + rng.random(targets.shape)).astype(np.float32)
    whole = average_precisions(scores, targets)
    chunked = average_precisions(scores, targets, chunk_scores=20_000 * 3)  # 3 classes per chunk
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-15)  # only the order of float sums differs
    np.testing.assert_allclose(whole, _sklearn_per_class(scores, targets), atol=1e-12)


# ---------------------------------------------------------------- per-class thresholds: tune_thresholds


def _count_fbeta(pred, labels, beta):
    """F-beta of one class from its counts, written out (no shared code with mlc.metrics)."""
    tp = int(np.sum(pred & labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    b2 = beta * beta
    den = (1 + b2) * tp + b2 * fn + fp
    return (1 + b2) * tp / den if den else 0.0


def _brute_force_best(column, labels, beta):
    """Every distinct score tried as the threshold: (best F, largest threshold reaching it)."""
    labels = np.asarray(labels, dtype=bool)
    best_f, best_t = -1.0, None
    for t in np.unique(column):
        f = _count_fbeta(column >= t, labels, beta)
        if f > best_f or (f == best_f and t > best_t):
            best_f, best_t = f, t
    return best_f, best_t


def _check_tuned(scores, targets, beta, default=0.5):
    got = tune_thresholds(scores, targets, beta=beta, default=default)
    assert got.dtype == np.float64 and got.shape == (scores.shape[1],)
    targets = np.asarray(targets, dtype=bool)
    for c in range(scores.shape[1]):
        column, labels = scores[:, c], targets[:, c]
        if not labels.any():
            assert got[c] == default
            continue
        best_f, chosen = _brute_force_best(column, labels, beta)
        lower = column[column < chosen]
        if lower.size:  # strictly above the next lower distinct score, at most the chosen one: near their midpoint
            assert lower.max() < got[c] <= chosen
            assert got[c] == pytest.approx((float(chosen) + float(lower.max())) / 2, rel=1e-6, abs=1e-7)
        else:
            assert got[c] == chosen
        # The thresholds reproduce the brute-force best F exactly (same decisions on every tuning score) ...
        assert (column >= got[c]).tolist() == (column >= chosen).tolist()
        assert _count_fbeta(column >= got[c], labels, beta) == best_f
        # ... which is scikit-learn's F-beta at that threshold.
        assert best_f == pytest.approx(fbeta_score(labels, column >= got[c], beta=beta, zero_division=0), abs=1e-12)
    return got


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("ties", [False, True])
def test_tune_thresholds_equals_brute_force(beta, ties):
    scores, targets = sample(21, n=200, k=7, ties=ties)
    targets[:, 3] = 0  # no positive: the default
    top = scores[:, 5] >= np.quantile(scores[:, 5], 0.9)
    targets[:, 5] = top  # the positives are exactly the top scores (ties included): F = 1
    got = _check_tuned(scores, targets, beta, default=0.37)
    assert got[3] == 0.37
    assert _count_fbeta(scores[:, 5] >= got[5], top, beta) == 1.0
    assert scores[top, 5].min() >= got[5] > scores[~top, 5].max()
    pc = per_class_metrics(scores, targets, got)
    assert pc["precision"][5] == pc["recall"][5] == pc["f1"][5] == 1.0


def test_tune_thresholds_float32_and_chunks():
    scores, targets = sample(22, n=300, k=9, ties=True)
    scores32 = scores.astype(np.float32)
    got = _check_tuned(scores32, targets, 1.0)
    # The midpoints lie strictly between two float32 scores also when compared in float64, as the metrics do.
    pc = per_class_metrics(scores32, targets, got)
    best = [_brute_force_best(scores32[:, c], targets[:, c], 1.0)[0] for c in range(9)]
    assert pc["f1"] == best
    np.testing.assert_array_equal(tune_thresholds(scores32, targets, chunk_scores=300 * 2), got)  # ragged chunks


def test_tune_thresholds_beta_changes_the_choice():
    # positives 0.9, 0.8, 0.3; negatives 0.7, 0.6.  t = 0.8: F1 = 0.8, F2 = 10/14; t = 0.3: F1 = 0.75, F2 = 15/17.
    column = np.array([0.9, 0.8, 0.7, 0.6, 0.3])[:, None]
    labels = np.array([1, 1, 0, 0, 1])[:, None]
    assert tune_thresholds(column, labels, beta=1.0)[0] == pytest.approx(0.75)  # between 0.8 and 0.7
    assert tune_thresholds(column, labels, beta=2.0)[0] == 0.3  # nothing below: the score itself
    _check_tuned(column, labels, 1.0), _check_tuned(column, labels, 2.0)


def test_tune_thresholds_equal_f_picks_the_largest_threshold():
    # P = 2: t = 0.9 gives TP 1 of 1 predicted, t = 0.2 TP 2 of 4 predicted: F1 = 2/3 both.
    column = np.array([0.9, 0.5, 0.4, 0.2])[:, None]
    labels = np.array([1, 0, 0, 1])[:, None]
    assert tune_thresholds(column, labels)[0] == pytest.approx(0.7)


def test_tune_thresholds_edge_scores():
    a = np.nextafter(0.5, 1.0)  # no float64 strictly between 0.5 and a: the chosen score itself
    got = tune_thresholds(np.array([[a, np.inf], [0.5, -np.inf]]), np.array([[1, 1], [0, 0]]))
    assert got[0] == a and got[1] == np.inf
    assert tune_thresholds(np.zeros((0, 3)), np.zeros((0, 3))).tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError):
        tune_thresholds(np.array([[np.nan]]), np.array([[1]]))
    with pytest.raises(ValueError):
        tune_thresholds(np.zeros((3, 2)), np.zeros((3, 3)))


# ---------------------------------------------- CP/CR/CF1/OP/OR/OF1, f1_weighted, per-class thresholds


def _check_against_sklearn(got, targets, pred):
    cp = precision_score(targets, pred, average="macro", zero_division=0)
    cr = recall_score(targets, pred, average="macro", zero_division=0)
    assert got["cp"] == pytest.approx(cp, abs=1e-12)
    assert got["cr"] == pytest.approx(cr, abs=1e-12)
    assert got["cf1"] == pytest.approx(2 * cp * cr / (cp + cr) if cp + cr else 0.0, abs=1e-12)
    assert got["op"] == pytest.approx(precision_score(targets, pred, average="micro", zero_division=0), abs=1e-12)
    assert got["or"] == pytest.approx(recall_score(targets, pred, average="micro", zero_division=0), abs=1e-12)
    assert got["of1"] == got["f1_micro"]
    assert got["of1"] == pytest.approx(f1_score(targets, pred, average="micro", zero_division=0), abs=1e-12)
    if got["op"] + got["or"]:
        assert got["of1"] == pytest.approx(2 * got["op"] * got["or"] / (got["op"] + got["or"]), abs=1e-12)
    assert got["f1_weighted"] == pytest.approx(f1_score(targets, pred, average="weighted", zero_division=0),
                                               abs=1e-12)
    assert got["f1_macro"] == pytest.approx(f1_score(targets, pred, average="macro", zero_division=0), abs=1e-12)
    assert got["f2_macro"] == pytest.approx(fbeta_score(targets, pred, beta=2, average="macro", zero_division=0),
                                            abs=1e-12)


@pytest.mark.parametrize("seed,ties", [(30, False), (31, True)])
def test_mmpretrain_metrics_at_a_scalar_threshold(seed, ties):
    scores, targets = sample(seed, ties=ties)
    targets[:, 4] = 0  # a class without positives (recall 0) ...
    scores[:, 1] = np.minimum(scores[:, 1], 0.49)  # ... and one without predictions (precision 0)
    got = multilabel_metrics(scores, targets, threshold=0.5)
    _check_against_sklearn(got, targets, (scores >= 0.5).astype(int))


def test_mmpretrain_metrics_at_per_class_thresholds():
    scores, targets = sample(32, ties=True)
    thresholds = np.array([0.3, 0.5, 0.65, 0.45, 0.8, 0.55])
    pred = (scores >= thresholds[None, :]).astype(int)
    got = multilabel_metrics(scores, targets, threshold=thresholds)
    _check_against_sklearn(got, targets, pred)
    true_neg, pred_neg = targets.sum(1) == 0, pred.sum(1) == 0
    assert got["f1_neg"] == pytest.approx(f1_score(true_neg, pred_neg), abs=1e-12)
    pc = per_class_metrics(scores, targets, list(thresholds))
    np.testing.assert_allclose(pc["precision"], precision_score(targets, pred, average=None, zero_division=0),
                               atol=1e-12)
    np.testing.assert_allclose(pc["recall"], recall_score(targets, pred, average=None, zero_division=0), atol=1e-12)
    np.testing.assert_allclose(pc["f1"], f1_score(targets, pred, average=None, zero_division=0), atol=1e-12)
    # A per-class array of one value gives the scalar threshold's metrics exactly.
    assert multilabel_metrics(scores, targets, np.full(6, 0.5)) == multilabel_metrics(scores, targets, 0.5)
    # Tuned thresholds: each class's F1 at its threshold is at least its F1 at 0.5 (on the tuning split).
    tuned = per_class_metrics(scores, targets, tune_thresholds(scores, targets))["f1"]
    assert all(t >= f for t, f in zip(tuned, per_class_metrics(scores, targets, 0.5)["f1"], strict=True))


@pytest.mark.parametrize("case", ["all_negative_targets", "no_predictions", "both"])
def test_mmpretrain_metrics_stay_finite_without_positives(case):
    scores, targets = sample(33)
    if case in ("all_negative_targets", "both"):
        targets[:] = 0
    if case in ("no_predictions", "both"):
        scores = scores * 0.4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = multilabel_metrics(scores, targets, threshold=0.5)
        pc = per_class_metrics(scores, targets, np.full(6, 0.5))
        tuned = tune_thresholds(scores, targets)
    for key in ("cp", "cr", "cf1", "op", "or", "of1", "f1_weighted", "f1_macro", "f2_macro", "f1_micro", "f1_neg"):
        assert np.isfinite(got[key]), key
    assert np.isfinite(pc["precision"]).all() and np.isfinite(pc["recall"]).all() and np.isfinite(tuned).all()
    _check_against_sklearn(got, targets, (scores >= 0.5).astype(int))
    assert got["cp"] == got["cf1"] == got["op"] == got["of1"] == 0.0  # no true positive in any of the cases
    if case != "no_predictions":
        assert tuned.tolist() == [0.5] * 6 and got["f1_weighted"] == 0.0


@pytest.mark.parametrize("bad", [np.full(5, 0.5), np.full(7, 0.5), np.full((1, 6), 0.5), np.full((300, 6), 0.5)])
def test_bad_threshold_shape_raises(bad):
    scores, targets = sample(34)
    with pytest.raises(ValueError, match="threshold"):
        multilabel_metrics(scores, targets, threshold=bad)
    with pytest.raises(ValueError, match="threshold"):
        per_class_metrics(scores, targets, threshold=bad)
