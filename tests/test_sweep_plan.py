"""The sweep planner (``mlc.sweep.plan``): study names that never change for the same config, phases, and
``mlc sweep experiment=X`` planning exactly the runs ``mlc reproduce X`` runs (compared as plans: no training)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

import mlc.cli.reproduce as reproduce
from hydra_plugins.mlc_sweepers.study_grid import StudyGridSweeper
from mlc.config import compose_config
from mlc.errors import ConfigError
from mlc.sweep.plan import StudyPlan, plan_sweep


def _config() -> OmegaConf:
    return OmegaConf.create({
        "seed": 0, "loss": {"_target_": "mlc.losses.AnyClassLoss", "lam": 0.02}, "dataset": {"negative_ratio": 0.5},
        "trainer": {"monitor": "val/f1_macro", "monitor_mode": "max", "max_epochs": 5}, "paths": {"outputs": "/o"},
        "hydra": {"runtime": {"choices": {"experiment": "pinned"}}, "overrides": {"task": ["experiment=pinned"]},
                  "sweeper": {"study_grid": {"dataset": {"negative_ratio": [0.5, 0.9]}, "seed": [0, 1]},
                              "params": {"loss": {"lam": "tag(log, interval(0.001, 0.5))"}}, "direction": None,
                              "study_name": None, "storage": None}}})


def test_the_study_names_of_a_config_are_unchanged():
    """A name is how a re-run finds its study in a user's store: pinned, as the sweeper computed it before
    the planner moved out of it (and a preset's ``reproduce`` node is in no name)."""
    names = [f"pinned@d74b17d3[dataset.negative_ratio={r}, seed={s}]" for r in (0.5, 0.9) for s in (0, 1)]
    planned = plan_sweep(_config())
    assert [s.name for s in planned.studies] == names
    assert planned.studies[0].config == {
        "loss._target_": "mlc.losses.AnyClassLoss", "trainer.monitor": "val/f1_macro", "trainer.monitor_mode": "max",
        "trainer.max_epochs": 5, "search:loss.lam": "tag(log, interval(0.001, 0.5))", "direction": "maximize"}
    assert planned.fixed_args == ["experiment=pinned"] and list(planned.distributions) == ["loss.lam"]
    assert trial(planned.studies[3], planned.fixed_args) == \
        ["experiment=pinned", "dataset.negative_ratio=0.9", "seed=1"]
    with_node = _config()
    with_node.reproduce = {"claim": "J_any wins", "group_by": "loss", "tiny": ["trainer.max_epochs=1"]}
    assert [s.name for s in plan_sweep(with_node).studies] == names


def trial(study: StudyPlan, fixed_args: list[str]) -> list[str]:
    """A trial's overrides before its sampled parameters, in the order the sweeper gives them to the launcher."""
    return [*fixed_args, *study.overrides, *(f"{k}={v}" for k, v in study.fixed.items())]


def _plan(overrides: list[str]):
    return plan_sweep(compose_config(overrides, hydra=True))


def runs(overrides: list[str]) -> list[tuple[str, list[str]]]:
    """(study name, a trial's overrides before its sampled parameters) of each study the sweep makes."""
    planned = _plan(overrides)
    return [(s.name, trial(s, planned.fixed_args)) for s in planned.studies]


def test_a_phase_plans_the_studies_of_the_separate_sweep_it_replaces():
    """Longtail's db_focal studies were a second invocation with ``sampler=class_aware`` on its command line:
    as a phase they keep those names, recorded configs and trial overrides, so recorded studies continue."""
    both = _plan(["experiment=longtail_table"])
    grid = _plan(["experiment=longtail_table", "hydra.sweeper.phases=[]"])
    alone = _plan(["experiment=longtail_table", "hydra.sweeper.phases=[]", "hydra.sweeper.study_grid.loss=[db_focal]",
                   "sampler=class_aware"])
    assert len(both.studies) == 18 and both.studies[:15] == grid.studies
    for phased, separate in zip(both.studies[15:], alone.studies, strict=True):
        assert (phased.name, phased.config) == (separate.name, separate.config)
        assert trial(phased, both.fixed_args) == trial(separate, alone.fixed_args)
    assert trial(both.studies[15], both.fixed_args) == \
        ["experiment=longtail_table", "sampler=class_aware", "loss=db_focal", "seed=0"]
    assert both.studies[0].name.split("[")[0] != both.studies[15].name.split("[")[0]  # its own fingerprint


@pytest.mark.parametrize("name", sorted(reproduce.presets()))
def test_mlc_sweep_and_mlc_reproduce_plan_the_same_runs(name, tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(reproduce, "run_python", lambda c, env: commands.append(["python", "-m", *c]) or 0)
    monkeypatch.setattr(reproduce, "_call", lambda *_, **__: None)  # (the report steps: nothing ran to report)
    monkeypatch.setattr(reproduce, "_git_commit", lambda: "test")
    monkeypatch.setattr(reproduce, "best_points", lambda *_: [])  # a search preset's re-runs follow its results
    monkeypatch.setattr(reproduce, "_search_monitor", lambda _: ("val/f1_macro", "0"))
    monkeypatch.setattr(reproduce, "results_text", lambda *_, **__: "")
    reproduce.run(name, [], output=tmp_path, outputs=tmp_path / "out", say=lambda *_, **__: None)
    (sweep,) = [c[4:] for c in commands if c[2:4] == ["mlc.cli.train", "-m"]]  # one sweep: every phase in it
    assert sweep[0] == f"experiment={name}" and sweep[1].startswith("hydra.sweep.dir=")
    assert runs([sweep[0], *sweep[2:]]) == runs([f"experiment={name}"])


def test_the_tiny_form_trims_a_phase_grid_too():
    phases = "hydra.sweeper.phases=[{},{study_grid:{loss:[db_focal,focal,asl]},overrides:['sampler=class_aware']}]"
    extra = reproduce.tiny_overrides(reproduce.presets()["longtail_table"], [phases])
    assert "hydra.sweeper.phases.1.study_grid.loss=[db_focal,asl]" in extra
    tiny = [s.name.split("[")[1] for s in _plan(["experiment=longtail_table", phases, *extra]).studies]
    assert tiny == [f"loss={loss}, seed={seed}]" for loss in ("bce", "pg", "db_focal", "asl") for seed in (0, 2)]


@pytest.mark.parametrize("phases, key, reason", [
    ("[{grid: {loss: [bce]}}]", "hydra.sweeper.phases", "a phase is {study_grid: {...}, overrides: [key=value]}"),
    ("[{overrides: ['sampler=nope']}]", "sampler", "no such sampler option"),
    ("[{},{overrides: ['trainer.max_epochs=-1']}]", "trainer.max_epochs", "(a value of hydra.sweeper.phases)"),
    ("[{},{overrides: ['trainer.max_epochs=3']}]", "hydra.sweeper.phases", "two phases plan this study"),
])
def test_a_bad_phase_is_refused_before_anything_runs(phases, key, reason):
    # (the last: one study name for both phases; only a name derived from each phase's config differs)
    cfg = compose_config(["experiment=f1_surrogates_table", "hydra.sweeper.storage=null",
                          f"hydra.sweeper.phases={phases}",
                          *(["hydra.sweeper.study_name=named"] if "two" in reason else [])], hydra=True)
    with pytest.raises(ConfigError) as err:
        StudyGridSweeper.preflight(cfg)
    assert err.value.key == key and reason in err.value.reason, err.value


@pytest.mark.parametrize("given, message", [
    (["val/f1_macro"], "needs two or more different metrics"),
    (["val/f1_macro", "val/f1_macro"], "needs two or more different metrics"),
    (["val/f1_macro", "test/f1_neg"], "'test/f1_neg' is not a validation metric"),
    (["val/f1_macro", "val/f1_neg:up"], "the direction after ':' must be max or min"),
    ("val/f1_macro", "must be a list of validation metrics"),
])
def test_bad_objectives_are_one_config_error_naming_the_entry(given, message):
    from mlc.sweep.plan import objectives

    cfg = _config()
    cfg.hydra.sweeper.objectives = given
    with pytest.raises(ConfigError, match=message) as err:
        objectives(cfg)
    assert err.value.key == "hydra.sweeper.objectives"


def test_objectives_take_their_direction_from_the_metric_and_refuse_a_pruner_and_make_other_studies():
    from mlc.sweep.plan import objectives

    cfg = _config()
    assert objectives(cfg) == []  # unset: one objective, trainer.monitor
    cfg.hydra.sweeper.objectives = ["val/f1_macro", "val/fpr_neg_images", "val_ema/map:min"]
    assert objectives(cfg) == [("val/f1_macro", "maximize"), ("val/fpr_neg_images", "minimize"),
                               ("val_ema/map", "minimize")]
    names = {s.name for s in plan_sweep(cfg).studies}
    cfg.hydra.sweeper.objectives = []
    assert names.isdisjoint(s.name for s in plan_sweep(cfg).studies)  # another search: other studies
    cfg.hydra.sweeper.objectives = ["val/f1_macro", "val/f1_neg"]
    cfg.hydra.sweeper.pruner = {"_target_": "optuna.pruners.MedianPruner"}
    with pytest.raises(ConfigError, match="Optuna cannot prune a multi-objective trial"):
        objectives(cfg)
