"""The sweep's direction follows ``trainer.monitor_mode`` (one source of truth), in-process and fast.

``hydra.sweeper.direction`` is null by default (derived); set explicitly, it must agree with the
monitor mode. The derived direction enters the study fingerprint exactly as the explicit one did,
so a sweep command run before the change continues its studies.
"""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from hydra_plugins.mlc_sweepers.study_grid import StudyGridSweeper
from mlc.config import check_command_line, compose_config
from mlc.errors import ConfigError
from mlc.sweep.loop import SweepLoop
from mlc.sweep.plan import plan_sweep
from mlc.sweep.study import fingerprint, open_storage
from tests.conftest import ROOT

PRESET = ["hparams_search=lambda_vs_negative_ratio"]
MIN = ["trainer.monitor=val/loss", "trainer.monitor_mode=min"]


def _sweeper(overrides: list[str]) -> tuple[StudyGridSweeper, object]:
    cfg = compose_config(overrides, hydra=True)
    sweeper = StudyGridSweeper(**{k: v for k, v in cfg.hydra.sweeper.items() if not k.startswith("_")})
    return sweeper, cfg


def _names(overrides: list[str]) -> tuple[list[str], dict]:
    """(study names, the config the studies record), as a sweep of ``overrides`` would derive them."""
    sweeper, cfg = _sweeper(overrides)
    sweeper._check(cfg)
    studies = plan_sweep(cfg).studies
    assert all(s.config == studies[0].config for s in studies)  # one phase: one config
    return [s.name for s in studies], studies[0].config


def test_the_sweeper_config_derives_the_direction_by_default():
    assert compose_config(PRESET, hydra=True).hydra.sweeper.direction is None
    assert compose_config(["experiment=demo"], hydra=True).hydra.sweeper.direction is None


@pytest.mark.parametrize("group", ["hparams_search", "experiment"])
def test_no_preset_sets_the_direction(group):
    for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
        sweeper = ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("hydra") or {}).get("sweeper") or {}
        assert "direction" not in sweeper, f"{path.name} sets hydra.sweeper.direction (it follows trainer.monitor_mode)"


@pytest.mark.parametrize("overrides,direction", [(PRESET, "maximize"), ([*PRESET, *MIN], "minimize"),
                                                  (["experiment=demo"], "maximize")])
def test_the_direction_follows_the_monitor_mode(overrides, direction):
    sweeper, cfg = _sweeper(overrides)
    sweeper._check(cfg)
    assert sweeper.direction == direction
    sweeper, cfg = _sweeper(overrides)
    StudyGridSweeper.preflight(cfg)  # the whole check before a multirun accepts it


@pytest.mark.parametrize("overrides,direction", [(PRESET, "maximize"), ([*PRESET, *MIN], "minimize"),
                                                  (["experiment=demo"], "maximize")])
def test_the_derived_direction_keeps_the_study_names_of_an_explicit_one(overrides, direction):
    """Before, the presets said ``direction: maximize`` (and a min-mode sweep needed ``direction=minimize``):
    the same command must give the same fingerprint, hence the same studies, now that it is derived."""
    derived, derived_shared = _names(overrides)
    explicit, explicit_shared = _names([*overrides, f"hydra.sweeper.direction={direction}"])
    assert derived == explicit and derived_shared == explicit_shared
    assert derived_shared["direction"] == direction  # the value the explicit field used to put there
    assert len({n.partition("[")[0] for n in derived}) == 1


def test_the_fingerprint_of_a_config_is_unchanged():
    """``fingerprint`` itself is what names existing studies: pinned on a small config."""
    digest, flat = fingerprint({"loss": {"lam": 0.1}, "seed": 0}, ["seed"], {"loss.lam": "interval(0, 1)"},
                               "maximize")
    assert flat == {"loss.lam": 0.1, "search:loss.lam": "interval(0, 1)", "direction": "maximize"}
    assert digest == "efec3c94"


def _loop(sweeper: StudyGridSweeper, cfg, url: str) -> SweepLoop:
    """The loop ``sweeper.sweep`` runs on ``cfg`` (without a launcher here), with its storage open."""
    loop = SweepLoop(cfg, None, url=url, n_trials=sweeper.n_trials, direction=sweeper.direction,
                     sampler=sweeper.sampler_cfg, pruner=sweeper.pruner, grace_period=sweeper.grace_period)
    loop.optuna_storage = open_storage(url, heartbeat_interval=None, grace_period=None)
    return loop


def test_a_study_made_with_the_explicit_direction_is_continued(tmp_path):
    """Studies a sweep created while the preset set the direction are found again, config and all."""
    import optuna

    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = [f"hydra.sweeper.storage={url}", "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]"]
    old, cfg = _sweeper([*PRESET, *storage, "hydra.sweeper.direction=maximize"])
    old._check(cfg)
    ((ref, study),) = _loop(old, cfg, url)._plan(plan_sweep(cfg).studies)
    study.enqueue_trial({"loss.lam": 0.01})

    new, cfg = _sweeper([*PRESET, *storage, f"hydra.sweeper.study_name={ref.name.partition('[')[0]}"])
    StudyGridSweeper.preflight(cfg)  # a named study recorded with another config would be refused here
    new._check(cfg)
    ((again, loaded),) = _loop(new, cfg, url)._plan(plan_sweep(cfg).studies)
    assert again.name == ref.name and loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    assert loaded.user_attrs["mlc.config"] == study.user_attrs["mlc.config"] and len(loaded.trials) == 1
    summaries = optuna.get_all_study_summaries(open_storage(url, heartbeat_interval=None, grace_period=None))
    assert [s.study_name for s in summaries] == [ref.name]


@pytest.mark.parametrize("overrides,mode", [([*PRESET, "hydra.sweeper.direction=minimize"], "max"),
                                            ([*PRESET, *MIN, "hydra.sweeper.direction=maximize"], "min")])
def test_an_explicit_direction_that_disagrees_is_refused_in_one_line(overrides, mode):
    sweeper, cfg = _sweeper(overrides)
    with pytest.raises(ConfigError) as err:
        StudyGridSweeper.preflight(cfg)
    assert err.value.key == "hydra.sweeper.direction"
    assert err.value.reason.startswith(f"disagrees with trainer.monitor_mode={mode} (")
    assert "\n" not in str(err.value)


def test_a_direction_that_is_no_direction_is_refused():
    sweeper, cfg = _sweeper([*PRESET, "hydra.sweeper.direction=up"])
    with pytest.raises(ConfigError) as err:
        sweeper._check(cfg)
    assert err.value.key == "hydra.sweeper.direction" and "maximize or minimize, or null" in err.value.reason


def test_the_check_before_hydra_still_takes_a_direction():
    assert check_command_line(["-m", *PRESET, "hydra.sweeper.direction=maximize"]) is None
    assert check_command_line(["-m", *PRESET, "hydra.sweeper.direction=null"]) is None
    assert OmegaConf.select(compose_config([*PRESET, "hydra.sweeper.direction=minimize"], hydra=True),
                            "hydra.sweeper.direction") == "minimize"
