"""The official evaluation set (issue #22): ROC AUC, label- and image-level error rates and the image-level
"at least one class" metrics of ``mlc.metrics``, against scikit-learn, and ``mlc evaluate --thresholds``."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, fbeta_score, precision_score, recall_score, roc_auc_score

from mlc.cli.evaluate import main as evaluate_main
from mlc.metrics import multilabel_metrics, roc_aucs, threshold_metrics
from mlc.scores import read_scores, write_scores

NEW = ("auc_macro", "fnr", "fpr", "fpr_neg_images", "fpr_pos_images", "img_pos_precision", "img_pos_recall",
       "img_pos_f1", "img_pos_f2", "img_neg_precision", "img_neg_recall", "img_neg_f2")


def sample(seed: int, n: int = 200, k: int = 7, ties: bool = False):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.3).astype(int)
    targets[rng.random(n) < 0.35] = 0  # all-negative rows
    targets[:, 4] = 0  # a class without a positive: no AUC, left out of the mean
    scores = np.clip(0.3 * targets + rng.random((n, k)) * 0.75, 0, 1)
    return (np.round(scores, 1) if ties else scores), targets


def rates(true: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(FNR, FPR) of a binary decision, from scikit-learn's confusion matrix (0 where undefined)."""
    tn, fp, fn, tp = confusion_matrix(true.ravel(), pred.ravel(), labels=[0, 1]).ravel()
    return (fn / (tp + fn) if tp + fn else 0.0), (fp / (fp + tn) if fp + tn else 0.0)


def check_against_sklearn(got: dict, scores: np.ndarray, targets: np.ndarray, pred: np.ndarray) -> None:
    both = [c for c in range(targets.shape[1]) if 0 < targets[:, c].sum() < len(targets)]
    per_class = [roc_auc_score(targets[:, c], scores[:, c]) for c in both]
    assert got["auc_macro"] == pytest.approx(np.mean(per_class), abs=1e-12)
    assert got["auc_classes"] == len(both)
    assert (got["fnr"], got["fpr"]) == pytest.approx(rates(targets, pred), abs=1e-12)
    img_true, img_pred = targets.any(1).astype(int), pred.any(1).astype(int)
    negative, positive = img_true == 0, img_true == 1
    assert got["fpr_neg_images"] == pytest.approx(rates(img_true[negative], img_pred[negative])[1], abs=1e-12)
    assert got["fpr_pos_images"] == pytest.approx(rates(targets[positive], pred[positive])[1], abs=1e-12)
    for side, label in (("pos", 1), ("neg", 0)):
        kw = {"pos_label": label, "zero_division": 0}
        assert got[f"img_{side}_precision"] == pytest.approx(precision_score(img_true, img_pred, **kw), abs=1e-12)
        assert got[f"img_{side}_recall"] == pytest.approx(recall_score(img_true, img_pred, **kw), abs=1e-12)
        assert got[f"img_{side}_f2"] == pytest.approx(fbeta_score(img_true, img_pred, beta=2, **kw), abs=1e-12)
    assert got["img_pos_f1"] == pytest.approx(f1_score(img_true, img_pred, zero_division=0), abs=1e-12)
    # The negative side's F1 is the existing f1_neg, not a second key.
    assert "img_neg_f1" not in got
    assert got["f1_neg"] == pytest.approx(f1_score(img_true, img_pred, pos_label=0, zero_division=0), abs=1e-12)


@pytest.mark.parametrize("seed,ties,threshold", [(0, False, 0.5), (1, True, 0.5), (2, False, 0.3), (3, True, 0.8)])
def test_new_metrics_equal_scikit_learn(seed, ties, threshold):
    scores, targets = sample(seed, ties=ties)
    assert (targets.sum(1) == 0).any() and targets[:, 4].sum() == 0
    got = multilabel_metrics(scores, targets, threshold=threshold)
    assert set(NEW) <= set(got)
    check_against_sklearn(got, scores, targets, (scores >= threshold).astype(int))
    # Per class: scikit-learn's AUC where a class has both labels, NaN where it has not.
    want = [roc_auc_score(targets[:, c], scores[:, c]) if 0 < targets[:, c].sum() < len(targets) else np.nan
            for c in range(targets.shape[1])]
    np.testing.assert_allclose(roc_aucs(scores, targets), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(roc_aucs(scores.astype(np.float32), targets),
                               [roc_auc_score(targets[:, c], scores[:, c].astype(np.float32))
                                if c != 4 else np.nan for c in range(7)], rtol=0, atol=1e-12)


def test_per_class_thresholds():
    scores, targets = sample(4)
    thresholds = np.array([0.3, 0.5, 0.65, 0.45, 0.8, 0.55, 0.7])
    got = multilabel_metrics(scores, targets, threshold=thresholds)
    check_against_sklearn(got, scores, targets, (scores >= thresholds[None, :]).astype(int))
    assert multilabel_metrics(scores, targets, np.full(7, 0.4)) == multilabel_metrics(scores, targets, 0.4)


def test_a_tiny_example_by_hand():
    # 4 images x 2 classes at threshold 0.5:
    #   image  targets  scores      predicted
    #   0      1 0      0.9 0.6     1 1      positive image, hit; class 1 a false positive
    #   1      0 1      0.2 0.4     0 0      positive image, missed
    #   2      0 0      0.7 0.1     1 0      negative image with a false alarm
    #   3      0 0      0.3 0.4     0 0      negative image, clean
    # Cells: TP 1 (0,0), FP 2 ((0,1), (2,0)), FN 1 (1,1), TN 4: FNR 1/2, FPR 2/6.
    # Negative images 2, 3: one has a predicted class, fpr_neg_images 1/2. Positive images 0, 1 have one negative
    # label each, (0,1) predicted and (1,0) not: fpr_pos_images 1/2.
    # Images "any class": TP image 0, FN image 1, FP image 2, TN image 3: every precision, recall, F of either side 1/2.
    # AUC: class 0, positive 0.9 above the negatives 0.2, 0.7, 0.3: 1. Class 1, positive 0.4 against the
    # negatives 0.6 (above), 0.1 (below) and 0.4 (a tie, half): 1.5/3 = 1/2. auc_macro = 3/4.
    scores = np.array([[0.9, 0.6], [0.2, 0.4], [0.7, 0.1], [0.3, 0.4]])
    targets = np.array([[1, 0], [0, 1], [0, 0], [0, 0]])
    got = multilabel_metrics(scores, targets)
    assert got["auc_macro"] == 0.75 and got["auc_classes"] == 2
    assert got["fnr"] == 0.5 and got["fpr"] == pytest.approx(1 / 3, abs=1e-15)
    assert got["fpr_neg_images"] == 0.5 and got["fpr_pos_images"] == 0.5
    assert all(got[k] == 0.5 for k in NEW if k.startswith("img_")) and got["f1_neg"] == 0.5


def test_all_negative_batch_is_finite_except_a_documented_nan():
    scores, targets = sample(5)
    targets[:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = multilabel_metrics(scores, targets)
    assert np.isnan(got["auc_macro"]) and got["auc_classes"] == 0  # no class has a positive: no AUC
    assert all(np.isfinite(got[k]) for k in NEW if k != "auc_macro")
    pred = (scores >= 0.5).astype(int)
    assert got["fnr"] == 0.0 and got["fpr_pos_images"] == 0.0  # 0/0: 0, the module's convention
    assert got["fpr"] == pytest.approx(pred.mean(), abs=1e-12)
    assert got["fpr_neg_images"] == pytest.approx(pred.any(1).mean(), abs=1e-12)
    assert got["img_pos_precision"] == got["img_pos_recall"] == got["img_pos_f1"] == 0.0
    assert got["img_neg_precision"] == 1.0 and got["img_neg_recall"] == pytest.approx(1 - pred.any(1).mean())


@pytest.mark.parametrize("inverted", [False, True])
def test_saturated_scores(inverted):
    # Logits of ±100 give probabilities of exactly 0 and 1: perfect (or perfectly wrong) predictions.
    _, targets = sample(6)
    scores = (targets == (0 if inverted else 1)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = multilabel_metrics(scores, targets)
    assert all(np.isfinite(got[k]) for k in NEW)
    check_against_sklearn(got, scores, targets, (scores >= 0.5).astype(int))
    if inverted:
        assert got["auc_macro"] == 0.0 and got["fnr"] == got["fpr"] == got["fpr_neg_images"] == 1.0
    else:
        assert got["auc_macro"] == 1.0 and got["fnr"] == got["fpr"] == got["fpr_neg_images"] == 0.0
        assert got["fpr_pos_images"] == 0.0 and all(got[k] == 1.0 for k in NEW if k.startswith("img_"))


def test_a_class_that_is_always_positive_has_no_auc():
    scores, targets = sample(7)
    targets[:, 2] = 1
    assert np.isnan(roc_aucs(scores, targets)[[2, 4]]).all()
    assert multilabel_metrics(scores, targets)["auc_classes"] == 5


@pytest.fixture
def scores_file(tmp_path):
    scores, targets = sample(8)
    path = write_scores(tmp_path / "test.csv", range(len(scores)), scores, targets,
                        [f"c{i}" for i in range(7)], {"threshold": 0.5})
    return path, read_scores(path)


def test_evaluate_sweeps_thresholds(scores_file, capsys):
    path, read = scores_file
    assert evaluate_main([str(path), "--thresholds", "0.1:0.9:0.4"]) == 0
    head, *rows = capsys.readouterr().out.strip().splitlines()
    columns = head.split()
    assert columns[0] == "threshold" and len(rows) == 3
    for line, t in zip(rows, (0.1, 0.5, 0.9), strict=True):
        cells = line.split()
        assert float(cells[0]) == t
        want = multilabel_metrics(read.scores, read.labels, t)
        for name, text in zip(columns[1:], cells[1:], strict=True):
            assert text == f"{want[name]:.4f}", (t, name)
    assert evaluate_main([str(path), "--thresholds=0.1:0.9:0.4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [row["threshold"] for row in got] == [0.1, 0.5, 0.9]
    for row in got:
        want = threshold_metrics(read.scores, read.labels, row["threshold"])
        assert row == {"threshold": row["threshold"], **want}
        full = multilabel_metrics(read.scores, read.labels, row["threshold"])
        assert all(full[k] == v for k, v in want.items())


def test_evaluate_steps_without_float_drift(scores_file, capsys):
    path, _ = scores_file
    assert evaluate_main([str(path), "--thresholds", "0.05:0.95:0.05", "--json"]) == 0
    got = [row["threshold"] for row in json.loads(capsys.readouterr().out)]
    assert got == [round(0.05 * i, 2) for i in range(1, 20)]


@pytest.mark.parametrize("bad", ["0.1:0.9", "0.1:0.9:0.1:0.1", "a:0.9:0.1", "0:0.9:0.1", "0.1:1:0.1",
                                 "0.1:0.9:0", "0.1:0.9:-0.1", "0.9:0.1:0.1", "nan:0.5:0.1"])
def test_evaluate_refuses_a_bad_range_in_one_line(scores_file, capsys, bad):
    path, _ = scores_file
    assert evaluate_main([str(path), f"--thresholds={bad}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: --thresholds={bad}: ") and err.count("\n") == 1


def test_evaluate_prints_the_new_metrics_by_default(scores_file, capsys):
    path, read = scores_file
    assert evaluate_main([str(path)]) == 0
    blocks = capsys.readouterr().out.strip().split("\n\n")
    assert len(blocks) == 3 and blocks[0].split()[:2] == ["f1_macro", "f2_macro"]
    want = multilabel_metrics(read.scores, read.labels, 0.5)
    shown = {}
    for block in blocks:
        head, row = block.splitlines()
        shown |= dict(zip(head.split(), row.split()[1:], strict=True))
    assert set(NEW) <= set(shown)
    assert all(shown[k] == f"{want[k]:.4f}" for k in NEW)
