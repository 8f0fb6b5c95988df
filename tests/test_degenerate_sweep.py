"""The real case of issue #20, item 5: a small search at 50% negatives in which an untrained net (learning rate
1e-9) beats a trained one on validation macro F1. Run for real through mlc's sweeper with the λ preset (one
study per learning rate, its objective val/f1_macro_hm_neg): the untrained trial is flagged degenerate (its log,
result.json, MLflow tag, the sweep summary and its warning line) and does not win on the preset's objective.

Training does not depend on the monitor (it only picks the checkpoint), so each trial's logged history also
says what macro F1 would have returned: the test checks that it would have ranked the untrained net first."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from mlc.metrics import DEGENERATE_RULES
from tests.conftest import mlflow_runs, run_cli

pytestmark = pytest.mark.slow

UNTRAINED, TRAINED = 1e-9, 3e-3
ARGS = ["-m", "hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.study_name=t", "hydra.sweeper.n_trials=1",
        "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]",
        f"+hydra.sweeper.study_grid.optimizer.lr=[{UNTRAINED},{TRAINED}]",
        "dataset.train_size=512", "dataset.val_size=128", "dataset.test_size=64", "trainer.batch_size=32",
        "trainer.max_epochs=3"]


def test_an_untrained_net_is_flagged_and_cannot_win_the_presets_objective(outputs, data_cache):
    result = run_cli(ARGS, outputs, data_cache, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sweep_dir,) = outputs.glob("multirun/*/*")
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["monitor"] == "val/f1_macro_hm_neg"
    studies = {s["fixed"]["optimizer.lr"]: s for s in summary["studies"]}
    storage = f"sqlite:///{outputs}/optuna.db"
    run_dirs = {lr: Path(optuna.load_study(study_name=s["name"], storage=storage).best_trial.user_attrs["mlc.run_dir"])
                for lr, s in studies.items()}
    results = {lr: json.loads((d / "result.json").read_text()) for lr, d in run_dirs.items()}
    best_f1 = {lr: max(h["val/f1_macro"] for h in r["history"]) for lr, r in results.items()}
    print(f"\nbest val/f1_macro_hm_neg: {UNTRAINED:g}: {studies[UNTRAINED]['best_value']:.4f}, {TRAINED:g}: "
          f"{studies[TRAINED]['best_value']:.4f}; best val/f1_macro: {UNTRAINED:g}: {best_f1[UNTRAINED]:.4f}, "
          f"{TRAINED:g}: {best_f1[TRAINED]:.4f}; flags: {results[UNTRAINED]['degenerate']}, "
          f"{results[TRAINED]['degenerate']}")

    # (a) the untrained trial is flagged, everywhere a run shows; the trained one nowhere
    rule = results[UNTRAINED]["degenerate"]
    assert rule in DEGENERATE_RULES and results[TRAINED]["degenerate"] is None
    log = (run_dirs[UNTRAINED] / "train.log").read_text()
    assert f"is degenerate, rule {rule} (share " in log and "[WARNING]" in log
    assert "is degenerate" not in (run_dirs[TRAINED] / "train.log").read_text()
    runs = {float(r.data.params["optimizer.lr"]): r for r in mlflow_runs(outputs, "lambda_vs_negative_ratio")
            if r.data.tags.get("mlc.kind") == "run"}
    assert runs[UNTRAINED].data.tags.get("mlc.degenerate") == rule and "mlc.degenerate" not in runs[TRAINED].data.tags
    assert (studies[UNTRAINED]["best_degenerate"], studies[TRAINED]["best_degenerate"]) == (rule, None)
    assert studies[UNTRAINED]["trials"][0]["degenerate"] == rule
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [line for line in warnings if f"optimizer.lr={UNTRAINED:g}]: the best trial #0" in line]
    assert len(warnings) == 1 and f"is degenerate ({rule}: {DEGENERATE_RULES[rule]})" in warnings[0]

    # (b) the preset's objective ranks the trained trial first; macro F1 alone would have picked the untrained one
    assert studies[TRAINED]["best_value"] > studies[UNTRAINED]["best_value"]
    assert best_f1[UNTRAINED] > best_f1[TRAINED], "the real case: macro F1 ranks the untrained net first"
