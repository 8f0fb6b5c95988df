"""The install gives a modern Optuna with Hydra's Optuna sweeper plugin, and the pinned torch."""

from __future__ import annotations

import optuna
import torch
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from packaging.version import Version

from tests.conftest import ROOT


def test_pins():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["hydra-optuna-sweeper"] == "1.3.0" and Version(pins["optuna"]) >= Version("5")
    assert torch.__version__.split("+")[0] == "2.14.1"


def test_modern_optuna_with_an_rdb_storage_and_sqlalchemy_2(tmp_path):
    import sqlalchemy

    assert Version(optuna.__version__) >= Version("5") and Version(sqlalchemy.__version__) >= Version("2")
    storage = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(storage=storage, study_name="s", direction="minimize")
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=5)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 5


def test_hydra_discovers_the_optuna_sweeper_and_mlc_sweeper():
    names = {f"{cls.__module__}.{cls.__name__}" for cls in Plugins.instance().discover(Sweeper)}
    assert "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper" in names
    assert "hydra_plugins.mlc_sweepers.study_grid.StudyGridSweeper" in names
