"""Degenerate predictions (issue #20, item 5): the detection rules against hand-built prediction matrices, the
sweep objective ``f1_macro_hm_neg`` against values worked out by hand, and where a degenerate run shows (the
trainer's WARNING line, the MLflow tag, the checkpoint, the sweep summary, the report's notes).
The real case — an untrained net winning a small search — is tests/test_degenerate_sweep.py."""

from __future__ import annotations

import json
import logging

import numpy as np
import optuna
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from mlc.engine.callbacks import DEGENERATE_TAG, TrackingCallback
from mlc.metrics import (
    DEGENERATE_NEGATIVE_SHARE,
    DEGENERATE_RULES,
    DEGENERATE_SAME_SET_SHARE,
    degenerate_predictions,
    f1_macro_hm_neg,
    multilabel_metrics,
)

K = 4


def labels(n_pos: int, n_neg: int, k: int = K, seed: int = 0) -> np.ndarray:
    """``n_pos`` positive rows (1-2 classes each, every class present) then ``n_neg`` all-zero rows."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_pos + n_neg, k), dtype=int)
    for i in range(n_pos):
        y[i, i % k] = 1
        y[i, rng.integers(k)] = 1
    return y


def as_scores(pred: np.ndarray) -> np.ndarray:
    return np.where(pred.astype(bool), 0.8, 0.2)


# -- the rules ---------------------------------------------------------------------------------------------------------


def test_the_thresholds_are_documented_constants():
    assert DEGENERATE_SAME_SET_SHARE == 0.95 and DEGENERATE_NEGATIVE_SHARE == 0.95
    assert set(DEGENERATE_RULES) == {"same_set", "all_on_negatives"}


def test_every_class_on_every_image_is_one_predicted_set():
    y = labels(50, 50)
    flag = degenerate_predictions(np.full(y.shape, 0.51), y, class_names=list("abcd"))
    assert (flag.reason, flag.share, flag.images) == ("same_set", 1.0, 100)
    assert "(every class) on 100.0% of the 100 images" in flag.detail


def test_nothing_anywhere_is_one_predicted_set():
    y = labels(50, 50)
    flag = degenerate_predictions(np.full(y.shape, 0.49), y)
    assert (flag.reason, flag.share) == ("same_set", 1.0) and "(no class)" in flag.detail
    assert "on 100.0% of the 50 whose labels are not that set" in flag.detail  # the 50 positive images


def test_a_fixed_label_set_on_95_percent_of_the_images_is_flagged_and_on_94_percent_is_not():
    y = labels(60, 40)
    for constant, expected in ((95, "same_set"), (94, None)):
        pred = y.copy()  # the rest: right (no image has the three labels of the constant set {a, b, c})
        pred[:constant] = [1, 1, 1, 0]
        flag = degenerate_predictions(as_scores(pred), y, class_names=list("abcd"))
        assert (flag.reason if flag else None) == expected, constant
    assert flag is None
    pred[:95] = [1, 1, 1, 0]
    flag = degenerate_predictions(as_scores(pred), y, class_names=list("abcd"))
    assert flag.share == pytest.approx(0.95) and "(classes a, b, c)" in flag.detail


def test_a_split_that_is_itself_mostly_negative_does_not_flag_a_model_that_rightly_predicts_nothing():
    y = labels(3, 97)  # 97% negative: the right predictions are "no class" on 97% of the images
    assert degenerate_predictions(as_scores(y), y) is None
    # ... but "no class" everywhere (the trivial model at this ratio) is flagged, and so is missing nearly all
    pred = np.zeros_like(y)
    assert degenerate_predictions(as_scores(pred), y).reason == "same_set"
    y = labels(40, 960)  # 40 positives: "no class" on 38 of them (95%) is degenerate, on 37 (92.5%) it is not
    for found, expected in ((3, None), (2, "same_set")):
        pred = np.zeros_like(y)
        pred[:found] = y[:found]
        flag = degenerate_predictions(as_scores(pred), y)
        assert (flag.reason if flag else None) == expected, found


def test_every_class_on_the_negative_images_is_flagged_even_when_the_positives_are_right():
    y = labels(50, 100)
    pred = y.copy()
    pred[50:] = 1  # every class on each negative image; the positives predicted exactly
    flag = degenerate_predictions(as_scores(pred), y)
    assert (flag.reason, flag.share, flag.images) == ("all_on_negatives", 1.0, 100)
    assert flag.detail == "every class predicted on 100.0% of the 100 negative images"
    pred[50:56] = 0  # 94% of the negatives
    assert degenerate_predictions(as_scores(pred), y) is None
    pred[55] = 1  # 95%
    assert degenerate_predictions(as_scores(pred), y).share == pytest.approx(0.95)


def test_predictions_that_tell_images_apart_are_not_degenerate():
    y = labels(50, 50)
    assert degenerate_predictions(as_scores(y), y) is None
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random(y.shape) < 0.2, 1 - y, y)  # 20% of the decisions wrong
    assert degenerate_predictions(as_scores(noisy), y) is None


def test_the_rules_use_the_given_thresholds():
    y = labels(20, 20)
    scores = np.full(y.shape, 0.3)
    assert degenerate_predictions(scores, y, threshold=0.25).reason == "same_set"  # every class
    assert "(no class)" in degenerate_predictions(scores, y, threshold=0.5).detail
    per_class = np.array([0.2, 0.2, 0.9, 0.9])  # classes a, b everywhere
    assert "(classes a, b)" in degenerate_predictions(scores, y, per_class, class_names=list("abcd")).detail
    with pytest.raises(ValueError, match="one value per class"):
        degenerate_predictions(scores, y, np.array([0.5, 0.5]))


def test_edge_splits():
    assert degenerate_predictions(np.zeros((0, K)), np.zeros((0, K))) is None
    negatives = np.zeros((10, K))
    assert degenerate_predictions(np.full((10, K), 0.1), negatives) is None  # all negative, rightly predicted
    assert degenerate_predictions(np.full((10, K), 0.9), negatives).reason == "same_set"
    with pytest.raises(ValueError, match="must both be"):
        degenerate_predictions(np.zeros((3, K)), np.zeros((3, K + 1)))


# -- the objective -----------------------------------------------------------------------------------------------------


def test_f1_macro_hm_neg_by_hand():
    # class a: TP 1 (row 0), FP 2 (rows 1, 3) -> F1 2/4; class b: TP 1, no error -> 1; F1 macro 3/4.
    # "no class": true rows 2, 3, predicted row 2 -> TP 1, FN 1 -> F1-Neg 2/3. Harmonic mean: 2·(3/4)(2/3)/(17/12).
    targets = np.array([[1, 0], [0, 1], [0, 0], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.9, 0.9], [0.1, 0.1], [0.9, 0.1]])
    got = multilabel_metrics(scores, targets)
    assert got["f1_macro"] == pytest.approx(0.75) and got["f1_neg"] == pytest.approx(2 / 3)
    assert got["f1_macro_hm_neg"] == pytest.approx(12 / 17, abs=1e-12)


def test_a_constant_prediction_scores_zero():
    y = labels(30, 70)
    for value in (0.9, 0.1):  # every class everywhere (F1-Neg 0); nothing anywhere (F1 macro 0)
        got = multilabel_metrics(np.full(y.shape, value), y)
        assert got["f1_macro_hm_neg"] == 0.0
    prevalence = y.mean(axis=0)  # what macro F1 alone gives "every class everywhere": the mean of 2p / (1 + p)
    everything = multilabel_metrics(np.full(y.shape, 0.9), y)
    assert everything["f1_macro"] == pytest.approx(np.mean(2 * prevalence / (1 + prevalence)), abs=1e-12)


def test_f1_macro_hm_neg_matches_scikit_learn_on_random_scores():
    rng = np.random.default_rng(3)
    targets = (rng.random((400, 5)) < 0.3).astype(int)
    targets[rng.random(400) < 0.5] = 0
    scores = np.clip(0.4 * targets + rng.random(targets.shape) * 0.7, 0, 1)
    pred = (scores >= 0.5).astype(int)
    a = f1_score(targets, pred, average="macro", zero_division=0)
    b = f1_score(targets.sum(1) == 0, pred.sum(1) == 0)
    assert multilabel_metrics(scores, targets)["f1_macro_hm_neg"] == pytest.approx(2 * a * b / (a + b), abs=1e-12)


def test_f1_macro_hm_neg_is_finite_on_all_negative_and_all_positive_batches():
    negatives = np.zeros((3, 2))
    got = multilabel_metrics(np.array([[0.1, 0.2], [0.3, 0.1], [0.9, 0.1]]), negatives)
    assert got["f1_neg"] == pytest.approx(0.8) and got["f1_macro_hm_neg"] == pytest.approx(0.8)  # F1 macro: undefined
    assert multilabel_metrics(np.full((3, 2), 0.1), negatives)["f1_macro_hm_neg"] == 1.0
    positives = np.array([[1, 0], [0, 1]])
    got = multilabel_metrics(np.array([[0.9, 0.1], [0.9, 0.9]]), positives)
    assert got["f1_macro_hm_neg"] == pytest.approx(got["f1_macro"]) and np.isfinite(got["f1_macro_hm_neg"])
    assert f1_macro_hm_neg(0.4, 0.6, has_positive=False, has_negative=False) == 0.0
    assert f1_macro_hm_neg(0.0, 0.0) == 0.0


def test_the_objective_is_a_monitor_the_trainer_accepts():
    from mlc.engine import TrainerSettings
    from mlc.errors import ConfigError

    assert TrainerSettings(monitor="val/f1_macro_hm_neg").monitor == "val/f1_macro_hm_neg"
    with pytest.raises(ConfigError):
        TrainerSettings(monitor="val/f1_macro_hm")


@pytest.mark.parametrize("preset", ["hparams_search=lambda_vs_negative_ratio", "experiment=demo",
                                    "experiment=lambda_vs_negative_ratio_study"])
def test_the_lambda_search_presets_use_it(preset):
    from tests.conftest import compose

    assert compose([preset]).trainer.monitor == "val/f1_macro_hm_neg"


# -- where it shows: trainer, tag, checkpoint ------------------------------------------------------------------------


class Constant(nn.Module):
    """Logits ``value`` for every class of every image, whatever the image (an untrained net at its worst)."""

    def __init__(self, value: float, k: int = 6):
        super().__init__()
        self.bias = nn.Parameter(torch.full((k,), float(value)))
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.bias + self.scale * x.mean(dim=(1, 2, 3))[:, None]


class Projection(nn.Module):
    """A fixed random projection of the pixels: its label sets differ from image to image."""

    def __init__(self, k: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 32 * 32, k)

    def forward(self, x):
        return 20 * self.linear(x.flatten(1) - 0.5)


class MeanBce(nn.Module):
    def forward(self, logits, targets):
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)


class FakeTracker:
    run_id = "r"

    def __init__(self):
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics, step=None): ...

    def set_tags(self, tags):
        self.tags |= tags


@pytest.fixture(scope="module")
def splits():
    from mlc.data import SPLITS, DigitScenes

    source = DigitScenes(train_size=64, val_size=40, test_size=40)
    return {s: source.load(s) for s in SPLITS}


def _trainer(run_dir, splits, model, tracker=None, **settings):
    from mlc.engine import TrainData, Trainer, TrainerSettings, standard_callbacks
    from mlc.optim import constant

    s = TrainerSettings(**(dict(max_epochs=2, batch_size=16, eval_batch_size=40, device="cpu", tune_thresholds=None,
                                monitor="val/f1_macro") | settings))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)  # the weights stay as built
    scheduler = constant(optimizer, steps_per_epoch=4, max_epochs=s.max_epochs)
    return Trainer(s, model, MeanBce(), optimizer, scheduler, TrainData(splits), run_dir,
                   callbacks=standard_callbacks(s, tracker))


def test_a_run_whose_best_checkpoint_is_degenerate_is_warned_about_tagged_and_checkpointed(tmp_path, splits, caplog):
    from mlc.engine import checkpoint as ckpt

    tracker = FakeTracker()
    trainer = _trainer(tmp_path / "run", splits, Constant(3.0), tracker)
    with caplog.at_level(logging.INFO, logger="mlc.trainer"):
        result = trainer.fit()
    assert result.degenerate == "same_set" and trainer.best_degenerate.share == 1.0
    assert tracker.tags == {DEGENERATE_TAG: "same_set"}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "is degenerate, rule same_set (share 100.0%)" in warning.getMessage()
    assert "(every class) on 100.0% of the 40 images" in warning.getMessage()
    best = result.history[result.best_epoch - 1]
    assert best["val/f1_macro"] > 0.1 and best["val/f1_neg"] == 0.0
    assert best["val/f1_macro_hm_neg"] == 0.0  # the presets' objective gives it nothing
    saved = ckpt.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert saved["best_degenerate"]["reason"] == "same_set"
    resumed = _trainer(tmp_path / "again", splits, Constant(3.0), max_epochs=3)
    resumed.restore(saved)
    assert resumed.best_degenerate == trainer.best_degenerate


def test_the_check_judges_the_best_epoch_not_the_last(tmp_path, splits):
    trainer = _trainer(tmp_path, splits, Projection(), FakeTracker(), monitor="val/loss", monitor_mode="min")
    result = trainer.fit()
    assert result.degenerate is None and trainer.best_degenerate is None
    trainer.best_value = float("inf")  # an epoch of a constant model now improves on it
    trainer.module.linear.weight.data.zero_()
    trainer.module.linear.bias.data.fill_(3.0)
    trainer.s.max_epochs = 3
    assert trainer.fit().degenerate == "same_set"


def test_a_run_that_is_not_degenerate_gets_no_tag_and_no_warning(tmp_path, splits, caplog):
    tracker = FakeTracker()
    trainer = _trainer(tmp_path, splits, Projection(), tracker, max_epochs=1)
    with caplog.at_level(logging.INFO, logger="mlc.trainer"):
        result = trainer.fit()
    assert result.degenerate is None and tracker.tags == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_report_reads_the_tag_the_trainer_writes():
    from mlc.report.runs import DEGENERATE_TAG as REPORT_TAG

    assert REPORT_TAG == DEGENERATE_TAG == "mlc.degenerate"
    assert isinstance(TrackingCallback(FakeTracker()), TrackingCallback)


# -- the sweep summary ------------------------------------------------------------------------------------------------


def _study_with_runs(tmp_path, flags: dict[float, str | None]) -> str:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s[dataset.negative_ratio=0.5]", storage=storage, direction="maximize")
    for i, (value, flag) in enumerate(flags.items()):
        run_dir = tmp_path / "sweep" / str(i)
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps({"best_value": value, "degenerate": flag}))
        trial = study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(1e-10, 1, log=True)})
        trial.set_user_attr("mlc.run_dir", str(run_dir))
        study.tell(trial, value)
    return storage


def test_the_summary_marks_a_study_whose_best_trial_is_degenerate(tmp_path):
    from mlc.sweep.study import open_storage
    from mlc.sweep.summary import StudyRef, write_summary

    url = _study_with_runs(tmp_path, {0.16: "same_set", 0.11: None})
    storage = open_storage(url, heartbeat_interval=None, grace_period=None)
    ref = StudyRef("s[dataset.negative_ratio=0.5]", {"dataset.negative_ratio": 0.5}, 2)
    text, results, _ = write_summary([ref], storage, url, tmp_path / "sweep", "val/f1_macro", "maximize",
                                     ["optimizer.lr"], tracking=False)
    (r,) = results
    assert (r.best_degenerate, r.best_number, r.trial_degenerate) == ("same_set", 0, ["same_set", None])
    header = text.splitlines()[2]
    assert "degenerate" in header.split() and "same_set" in text.splitlines()[4]
    (warning,) = [line for line in text.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: s[dataset.negative_ratio=0.5]: the best trial #0 (val/f1_macro = 0.16) is "
                              "degenerate (same_set: one predicted label set on >= 95% of the validation images "
                              "and of those whose labels are another set)")
    saved = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())["studies"][0]
    assert saved["best_degenerate"] == "same_set"
    assert [t["degenerate"] for t in saved["trials"]] == ["same_set", None]


def test_a_clean_study_has_no_degenerate_column_or_warning(tmp_path):
    from mlc.sweep.study import open_storage
    from mlc.sweep.summary import StudyRef, write_summary

    url = _study_with_runs(tmp_path, {0.16: None, 0.11: "same_set"})  # only a losing trial is degenerate
    storage = open_storage(url, heartbeat_interval=None, grace_period=None)
    ref = StudyRef("s[dataset.negative_ratio=0.5]", {}, 2)
    text, (r,), _ = write_summary([ref], storage, url, tmp_path / "sweep", "val/x", "maximize", [], tracking=False)
    assert r.best_degenerate is None and r.trial_degenerate == [None, "same_set"]
    assert "degenerate" not in text and "warning" not in text


# -- the report -------------------------------------------------------------------------------------------------------


def test_the_report_notes_degenerate_runs(tmp_path):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from mlc.report import main

    def _log_run(client, exp_id, name, tags, params, metrics):
        run = client.create_run(exp_id, run_name=name, tags=tags)
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(run.info.run_id, status="FINISHED")
        return run.info.run_id

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("mlc", artifact_location=(tmp_path / "art").as_uri())
    ids = {}
    for lr, flag in (("1e-09", "same_set"), ("0.003", None)):
        for seed in (0, 1):
            tags = {"mlc.kind": "run", "mlc.loss": "any_bce", "mlc.seed": str(seed)} | (
                {DEGENERATE_TAG: flag} if flag else {})
            ids[lr, seed] = _log_run(client, exp, f"lr{lr}-{seed}", tags, {"optimizer.lr": lr, "seed": seed},
                                     {"test/f1_macro": 0.2 + seed / 100})
    out = tmp_path / "report"
    assert main(["--tracking-uri", uri, "--group-by", "optimizer.lr", "--metrics", "test/f1_macro", "--no-log",
                 "--output", str(out)]) == 0
    notes = (out / "report.md").read_text().split("## Notes", 1)[1]
    (line,) = [n for n in notes.splitlines() if "degenerate" in n]
    assert line.startswith("- 2 run(s) in the tables are degenerate (mlc.degenerate=same_set: one predicted label "
                           "set on >= 95% of the validation images and of those whose labels are another set at their "
                           "best checkpoint): ")
    assert ids["1e-09", 0] in line and ids["1e-09", 1] in line and ids["0.003", 0] not in line
