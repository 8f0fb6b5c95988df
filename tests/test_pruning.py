"""Pruning: a sweep trial reports each epoch's metric to Optuna and stops when its pruner says so."""

from __future__ import annotations

import pytest

from mlc.errors import ConfigError
from mlc.sweep.pruning import PRUNERS, build_pruner
from tests.conftest import compose


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


# The end-to-end pruning run (real trials pruned at epoch 1, in two worker processes) is in test_workers.py.
