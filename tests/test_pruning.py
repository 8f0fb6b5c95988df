"""Pruning: a sweep trial reports each epoch's metric to Optuna and stops when its pruner says so."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from mlc.errors import ConfigError
from mlc.pruning import PRUNERS, build_pruner
from tests.conftest import SMALL, compose, mlflow_runs, run_cli


@pytest.mark.parametrize("option,cls", [("none", "NopPruner"), ("median", "MedianPruner"),
                                        ("percentile", "PercentilePruner"), ("hyperband", "HyperbandPruner"),
                                        ("threshold", "ThresholdPruner")])
def test_each_pruner_option_builds_its_optuna_pruner(option, cls):
    from omegaconf import OmegaConf

    from mlc.config import compose_config

    cfg = compose_config(["hparams_search=lambda_vs_negative_ratio", f"hydra/sweeper/pruner={option}"], hydra=True)
    pruner = build_pruner(OmegaConf.to_container(cfg.hydra.sweeper.pruner))
    assert type(pruner).__name__ == cls and cls in PRUNERS


def test_only_optuna_pruners_can_be_named():
    for target in ("os.system", "optuna.samplers.TPESampler", "optuna.pruners.median"):
        with pytest.raises(ConfigError, match="must be one of optuna.pruners"):
            build_pruner({"_target_": target})
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner"):
        build_pruner({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": -1})
    assert compose()  # (the task config is untouched by the sweeper's pruner group)


@pytest.mark.slow
def test_pruned_trials_stop_at_the_epoch_boundary_and_count_towards_n_trials(outputs, data_cache):
    args = ["-m", "hparams_search=lambda_vs_negative_ratio", "hydra/sweeper/pruner=threshold",
            "hydra.sweeper.pruner.lower=2.0",  # F1 never reaches 2: every trial is pruned after epoch 1
            "hydra.sweeper.n_trials=2", "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]",
            "trainer.max_epochs=3", *SMALL]
    result = run_cli(args, outputs, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "all pruned" in result.stdout and "pruned by ThresholdPruner at epoch 1" in result.stdout
    storage = f"sqlite:///{outputs}/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [1] for t in trials)  # epoch 1 reported, then stopped
    runs = [r for r in mlflow_runs(outputs, "lambda_vs_negative_ratio") if r.data.tags.get("mlc.kind") == "run"]
    assert len(runs) == 2 and all(r.info.status == "KILLED" and r.data.tags["mlc.pruned"] == "true" for r in runs)
    assert all(len(list(outputs.glob(f"multirun/*/*/{n}/checkpoints/last.pt"))) == 1 for n in (0, 1))
