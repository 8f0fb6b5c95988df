"""``mlc reproduce``: the presets and their registry agree, the tiny form trims every grid, and a re-made
RESULTS.md keeps its hand-written reading."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from mlc.cli.reproduce import (
    READING_END,
    READING_START,
    Plan,
    Preset,
    ReproduceError,
    _last_wins,
    _path_value,
    _reading,
    best_points,
    main,
    plan,
    presets,
    reseed_overrides,
    run,
    tiny_overrides,
)
from mlc.config import compose_config
from mlc.sweep.plan import plan_sweep
from tests.conftest import run_module

CONF = Path(__file__).resolve().parents[1] / "conf" / "experiment"


def test_every_preset_has_its_config_and_every_config_its_preset():
    assert set(presets()) == {p.stem for p in CONF.glob("*.yaml")} - {"demo"}


@pytest.mark.parametrize("name", sorted(presets()))
def test_each_preset_composes_with_its_own_experiment_and_a_grid(name):
    cfg = compose_config([f"experiment={name}"], hydra=True)
    assert cfg.tracking.experiment == name  # mlc reproduce reports from that MLflow experiment
    if presets()[name].reseed:  # a search per grid point, each trial over K seeds, then its best over fresh seeds
        sweeper, reseed = cfg.hydra.sweeper, presets()[name].reseed
        assert sweeper.params and sweeper.n_trials * sweeper.seeds_per_trial >= 6 and len(reseed) >= 2
        searched = set(range(cfg.seed, cfg.seed + sweeper.seeds_per_trial))
        assert searched.isdisjoint(reseed)  # the search's seeds ran it: the re-runs are fresh seeds
    else:
        assert cfg.hydra.sweeper.n_trials == 1 and list(cfg.hydra.sweeper.study_grid.seed) == [0, 1, 2]
    assert plan_sweep(cfg).studies  # every phase composes too (the planner composes each phase's config)


def test_the_tiny_form_keeps_the_first_and_last_value_of_each_grid_list():
    extra = tiny_overrides(presets()["f1_surrogates_table"], [])
    assert "trainer.max_epochs=1" in extra
    assert "hydra.sweeper.study_grid.loss=[bce,sigmoid_f1]" in extra
    assert "hydra.sweeper.study_grid.seed=[0,2]" in extra
    # a preset's own tiny grid wins: anyclass keeps its four losses (its baseline pairs need them), one backbone
    extra = tiny_overrides(presets()["anyclass_table"], [])
    assert [o for o in extra if o.startswith("hydra.sweeper.study_grid.loss")] == \
        ["hydra.sweeper.study_grid.loss=[cb_bce,any_bce,cb_focal,any_focal]"]
    assert "hydra.sweeper.study_grid.backbone=[cnn_small]" in extra and "hydra.sweeper.study_grid.seed=[0,2]" in extra
    assert "hydra.sweeper.study_grid.loss.lam=[0.0,0.2]" in tiny_overrides(presets()["lambda_ablation"], [])


def test_a_remade_results_file_keeps_its_reading(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# old\n\n## Reading\n\n{READING_START}\nIt held, weakly.\n{READING_END}\n")
    assert _reading(results).strip() == "It held, weakly."
    assert _reading(tmp_path / "missing.md") == ""


def test_an_unknown_preset_is_one_line(capsys):
    assert main(["anyclass_tabel"]) == 2
    assert capsys.readouterr().err.startswith("error: no preset 'anyclass_tabel'; choose from anyclass_table,")
    with pytest.raises(ReproduceError):
        run("nope", [])


def test_presets_are_frozen_records():
    preset = presets()["longtail_table"]
    phases = compose_config(["experiment=longtail_table"], hydra=True).hydra.sweeper.phases  # the sweeper's now
    assert isinstance(preset, Preset) and len(phases) == 2 and "sampler=class_aware" in phases[1].overrides


def test_a_grid_over_a_config_group_refuses_an_unknown_option_before_any_run(tmp_path):
    result = run_module("mlc.cli.train", ["-m", "experiment=f1_surrogates_table",
                                          "hydra.sweeper.study_grid.loss=[bce,hinge]"],
                        {**os.environ, "MLC_OUTPUTS": str(tmp_path)}, timeout=120)
    assert result.returncode != 0
    assert "loss='hinge'" in result.stderr and "a value of hydra.sweeper.study_grid" in result.stderr, result.stderr
    assert not list(tmp_path.glob("multirun/*/*/0"))  # nothing ran


def test_the_lambda_study_searches_five_ratios_from_02_to_095():
    cfg = compose_config(["experiment=lambda_vs_negative_ratio_study"], hydra=True)
    ratios = list(cfg.hydra.sweeper.study_grid.dataset.negative_ratio)
    assert len(ratios) >= 5 and min(ratios) == 0.2 and max(ratios) == 0.95
    assert "loss.lam" not in str(cfg.hydra.sweeper.study_grid) and "lam" in cfg.hydra.sweeper.params.loss
    extra = tiny_overrides(presets()["lambda_vs_negative_ratio_study"], [])
    assert "hydra.sweeper.study_grid.dataset.negative_ratio=[0.2,0.95]" in extra and "hydra.sweeper.n_trials=2" in extra


def test_a_reseed_run_holds_the_grid_point_and_the_best_parameters_and_drops_the_search():
    got = reseed_overrides({"dataset.negative_ratio": 0.8, "loss": "any_bce"}, {"loss.lam": 0.1 + 0.2}, [1, 2, 3])
    assert got == ["hydra.sweeper.params=null", "hydra.sweeper.n_trials=1", "hydra.sweeper.seeds_per_trial=1",
                   "hydra.sweeper.study_grid.dataset.negative_ratio=[0.8]", "hydra.sweeper.study_grid.loss=[any_bce]",
                   "++hydra.sweeper.study_grid.seed=[1,2,3]", "loss.lam=0.30000000000000004"]  # λ to the last digit
    # the re-run's grid point replaces the preset's grid (and the tiny form's trimmed one): the last one wins
    assert _last_wins(["hydra.sweeper.n_trials=2", "a=1", "hydra.sweeper.study_grid.x=[1,2]",
                       "hydra.sweeper.n_trials=1", "hydra.sweeper.study_grid.x=[2]", "++b=[3]", "b=4"]) == \
        ["a=1", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_grid.x=[2]", "b=4"]
    cfg = compose_config(["experiment=lambda_vs_negative_ratio_study",
                          *reseed_overrides({"dataset.negative_ratio": 0.95}, {"loss.lam": 0.0123}, [1, 2, 3])],
                         hydra=True)
    assert cfg.hydra.sweeper.params is None and cfg.loss.lam == 0.0123
    assert list(cfg.hydra.sweeper.study_grid.seed) == [1, 2, 3]
    assert list(cfg.hydra.sweeper.study_grid.dataset.negative_ratio) == [0.95]


def test_the_reseed_step_refuses_a_search_that_is_missing_or_unfinished(tmp_path):
    planned = Plan(tmp_path, frozenset({"dataset.negative_ratio"}), frozenset({"loss.lam"}))
    with pytest.raises(ReproduceError, match="no sweep summary of the search"):
        best_points(tmp_path, planned)
    (tmp_path / "sweep_summary.json").write_text(json.dumps({"studies": [
        {"fixed": {"dataset.negative_ratio": 0.2}, "best_params": {"loss.lam": 0.01}},
        {"fixed": {"dataset.negative_ratio": 0.4}, "best_params": {}}]}))
    with pytest.raises(ReproduceError, match="1 of 2 studies have no best trial; run the same command again"):
        best_points(tmp_path, planned)


@pytest.mark.parametrize("fixed, best, message", [
    ({"dataset.negative_ratio": 0.2}, {"loss._target_": "os.system"}, "'loss._target_' is not a key of this "
     "preset's search (loss.lam); refusing to re-run it"),
    ({"hydra.job.env_set.X": "1"}, {"loss.lam": 0.01}, "'hydra.job.env_set.X' is not a key of this preset's grid"),
    ({"dataset.negative_ratio": 0.2}, {"loss.lam": "${oc.env:HOME}"}, "loss.lam='${oc.env:HOME}' is not a plain"),
    ({"dataset.negative_ratio": "0.2,seed=1"}, {"loss.lam": 0.01}, "is not a plain number or name"),
    ({"dataset.negative_ratio": 0.2}, {"loss.lam": float("nan")}, "loss.lam=nan is not a plain number"),
])
def test_a_summary_cannot_choose_what_the_reruns_run(tmp_path, fixed, best, message):
    planned = plan(tmp_path, "lambda_vs_negative_ratio_study", [])
    assert planned.grid_keys == {"dataset.negative_ratio"} and planned.searched == {"loss.lam"}
    (tmp_path / "sweep_summary.json").write_text(json.dumps({"studies": [{"fixed": fixed, "best_params": best}]}))
    with pytest.raises(ReproduceError, match=re.escape(message)):
        best_points(tmp_path, planned)
    (tmp_path / "sweep_summary.json").write_text(json.dumps({"studies": [
        {"fixed": {"dataset.negative_ratio": 0.95}, "best_params": {"loss.lam": 0.0123}}]}))
    assert best_points(tmp_path, planned) == [({"dataset.negative_ratio": 0.95}, {"loss.lam": 0.0123})]


def test_a_sweep_folder_is_quoted_for_hydra_only_where_it_must_be():
    assert _path_value(Path("/o/reproduce/lambda_ablation@b3f34311")) == "/o/reproduce/lambda_ablation@b3f34311"
    assert _path_value(Path("/my data/x,y")) == "'/my data/x,y'"


def test_the_sweep_folder_is_where_the_studies_trials_already_ran(tmp_path):
    import optuna

    from mlc.cli.reproduce import sweep_folder

    default = sweep_folder(tmp_path, "f1_surrogates_table", [])
    assert default.parent == tmp_path / "reproduce" and default.name.startswith("f1_surrogates_table@")
    # an earlier `mlc sweep experiment=f1_surrogates_table` ran one of these studies' trials elsewhere
    study = optuna.create_study(study_name=f"{default.name}[loss=focal, seed=1]",
                                storage=f"sqlite:///{tmp_path}/optuna.db")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"mlc.sweep_dir": "/o/multirun/2026-12-01/x"}))
    assert sweep_folder(tmp_path, "f1_surrogates_table", []) == Path("/o/multirun/2026-12-01/x")
    assert sweep_folder(tmp_path, "f1_surrogates_table", ["trainer.max_epochs=2"]).parent == tmp_path / "reproduce"
