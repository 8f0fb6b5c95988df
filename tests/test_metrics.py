"""mlc.metrics against scikit-learn and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, fbeta_score
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from mlc.metrics import average_precision, average_precisions, multilabel_metrics, per_class_metrics


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
