"""``mlc reproduce``: the presets and their registry agree, the tiny form trims every grid, and a re-made
RESULTS.md keeps its hand-written reading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlc.config import compose_config
from mlc.reproduce import (
    PRESETS,
    READING_END,
    READING_START,
    Preset,
    ReproduceError,
    _reading,
    main,
    run,
    tiny_overrides,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "experiment"


def test_every_preset_has_its_config_and_every_config_its_preset():
    assert set(PRESETS) == {p.stem for p in CONF.glob("*.yaml")} - {"demo"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_composes_with_its_own_experiment_and_a_grid(name):
    cfg = compose_config([f"experiment={name}"], hydra=True)
    assert cfg.tracking.experiment == name  # mlc reproduce reports from that MLflow experiment
    assert cfg.hydra.sweeper.n_trials == 1 and list(cfg.hydra.sweeper.study_grid.seed) == [0, 1, 2]
    for phase in PRESETS[name].phases:  # every phase composes too
        compose_config([f"experiment={name}", *[o for o in phase if not o.startswith("hydra.")]])


def test_the_tiny_form_keeps_the_first_and_last_value_of_each_grid_list():
    extra = tiny_overrides(PRESETS["anyclass_table"], [])
    assert "trainer.max_epochs=1" in extra
    assert "hydra.sweeper.study_grid.loss=[cb_bce,any_focal]" in extra
    assert "hydra.sweeper.study_grid.seed=[0,2]" in extra
    assert not any(o.startswith("hydra.sweeper.study_grid.backbone") for o in extra)  # two values already
    assert "hydra.sweeper.study_grid.loss.lam=[0.0,0.2]" in tiny_overrides(PRESETS["lambda_ablation"], [])


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
    preset = PRESETS["longtail_table"]
    assert isinstance(preset, Preset) and len(preset.phases) == 2 and "sampler=class_aware" in preset.phases[1]


def test_a_grid_over_a_config_group_refuses_an_unknown_option_before_any_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mlc.train", "-m", "experiment=f1_surrogates_table",
                             "hydra.sweeper.study_grid.loss=[bce,hinge]"], capture_output=True, text=True,
                            env={**os.environ, "MLC_OUTPUTS": str(tmp_path)}, timeout=120)
    assert result.returncode != 0
    assert "loss='hinge'" in result.stderr and "a value of hydra.sweeper.study_grid" in result.stderr, result.stderr
    assert not list(tmp_path.glob("multirun/*/*/0"))  # nothing ran
