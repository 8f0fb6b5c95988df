"""mlc.metrics against scikit-learn and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, fbeta_score
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from mlc.metrics import average_precision, multilabel_metrics, per_class_metrics


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
