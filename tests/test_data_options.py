"""Every file-backed `dataset/` option composes, and says clearly when its required `root` is missing."""

from __future__ import annotations

import pytest

from mlc.config import check_config
from mlc.errors import ConfigError
from tests.conftest import ROOT, compose

FILE_OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "dataset").glob("*.yaml") if p.stem != "digits")


def test_the_options_are_there():
    assert FILE_OPTIONS == ["chestxray14", "coco", "coco_modified", "csv", "folder", "sewerml", "voc2007", "voc2012"]


@pytest.mark.parametrize("option", FILE_OPTIONS)
def test_root_is_required_and_checked_before_any_compute(option, tmp_path):
    with pytest.raises(ConfigError) as err:
        check_config(compose([f"dataset={option}"]))
    assert err.value.key == "dataset.root" and "is required" in err.value.reason
    with pytest.raises(ConfigError) as err:
        check_config(compose([f"dataset={option}", f"dataset.root={tmp_path / 'missing'}"]))
    assert err.value.key == "dataset.root" and "is not a directory" in err.value.reason


@pytest.mark.parametrize("option", ["voc2007", "coco", "chestxray14", "sewerml"])
def test_options_with_fixed_classes_pass_the_checks_on_any_folder(option, tmp_path):
    checked = check_config(compose([f"dataset={option}", f"dataset.root={tmp_path}", "dataset.negative_ratio=0.5"]))
    assert checked.dataset.controls.negative_ratio == 0.5 and checked.dataset.train_transform is not None


@pytest.mark.parametrize("override,key", [
    ("dataset.negative_ratio=1.5", "dataset.negative_ratio"), ("dataset.image_size=4", "dataset.image_size"),
    ("dataset.longtail_tail=2", "dataset.longtail_tail"), ("dataset.val_split=random", "dataset.val_split"),
    ("+dataset.colour=1", "dataset.colour"),
])
def test_bad_fields_name_their_key(override, key, tmp_path):
    with pytest.raises(ConfigError) as err:
        check_config(compose(["dataset=chestxray14", f"dataset.root={tmp_path}", override]))
    assert err.value.key == key


# -- the shared controls node (conf/dataset/common/controls.yaml) ------------------------------------

CONTROLS_FILE = ROOT / "conf" / "dataset" / "common" / "controls.yaml"
# The documented defaults, restated: a change to a default must be deliberate (and shows in this diff).
CONTROL_DEFAULTS = {"negative_ratio": None, "longtail": False, "longtail_alpha": 6.0, "longtail_max": 800,
                    "longtail_min": 1, "longtail_tail": 0.99, "single_positive": False, "single_positive_seed": 1200,
                    "seed": 0}
# What each option states differently from the node (nothing else): the composed configs are those
# from before the node existed, when every option repeated the ten fields.
CONTROL_DIFFERENCES = {"digits": {"negative_ratio": 0.5}, "coco": {"longtail_max": 1200},
                       "coco_modified": {"longtail_max": 1200}}
ALL_OPTIONS = ["digits", *FILE_OPTIONS]


def _yaml(path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_the_controls_node_holds_the_documented_defaults():
    node = _yaml(CONTROLS_FILE)
    assert node == CONTROL_DEFAULTS


def test_the_controls_node_has_the_defaults_of_the_code():
    import inspect

    from mlc.data import DigitScenes
    from mlc.data.controls import Controls

    code = {k: p.default for k, p in inspect.signature(Controls).parameters.items()}
    assert {k: code[k] for k in CONTROL_DEFAULTS} == CONTROL_DEFAULTS
    digits = {k: p.default for k, p in inspect.signature(DigitScenes).parameters.items()}
    assert {k: digits[k] for k in CONTROL_DEFAULTS} == CONTROL_DEFAULTS | CONTROL_DIFFERENCES["digits"]


@pytest.mark.parametrize("option", ALL_OPTIONS)
def test_every_option_composes_the_controls_with_only_its_own_differences(option):
    dataset = compose([f"dataset={option}"]).dataset
    assert {k: dataset[k] for k in CONTROL_DEFAULTS} == CONTROL_DEFAULTS | CONTROL_DIFFERENCES.get(option, {})
    # negative_ratio_scope belongs to the file-backed sources (common/files.yaml); digits generates its ratio exactly
    assert dataset.get("negative_ratio_scope", "<absent>") == ("<absent>" if option == "digits" else "all")


@pytest.mark.parametrize("option", ALL_OPTIONS)
def test_no_option_restates_a_control_it_does_not_change(option):
    own = _yaml(ROOT / "conf" / "dataset" / f"{option}.yaml")
    files = _yaml(ROOT / "conf" / "dataset" / "common" / "files.yaml")
    stated = {k: v for k, v in own.items() if k in CONTROL_DEFAULTS}
    assert stated == CONTROL_DIFFERENCES.get(option, {})
    assert not set(files) & set(CONTROL_DEFAULTS)  # the file-backed options get them through the node only
    assert "common/controls@_here_" in (own.get("defaults") or []) or "controls@_here_" in files["defaults"]


def test_digits_and_a_file_option_share_the_node():
    digits, voc = compose(["dataset=digits"]).dataset, compose(["dataset=voc2007"]).dataset
    shared = {k for k in CONTROL_DEFAULTS if k != "negative_ratio"}
    assert {k: digits[k] for k in shared} == {k: voc[k] for k in shared}
    changed = compose(["dataset=digits", "dataset.longtail=true", "dataset.single_positive_seed=7"]).dataset
    assert changed.longtail is True and changed.single_positive_seed == 7


def test_the_shared_nodes_are_not_dataset_options():
    from mlc.config import check_command_line

    assert "common" not in ALL_OPTIONS
    error = check_command_line(["dataset=nope"])
    assert error.endswith(f"(available: {', '.join(sorted(ALL_OPTIONS))})")


@pytest.mark.parametrize("argv", [
    ["dataset.longtail=true", "dataset.longtail_max=300", "dataset.seed=3", "dataset.negative_ratio=0.4"],
    ["dataset.single_positive=true", "dataset.single_positive_seed=1"],
    ["dataset=coco", "dataset.negative_ratio=0.2", "dataset.negative_ratio_scope=eval", "dataset.longtail_tail=0.9"],
    ["dataset=voc2007", "dataset.longtail_alpha=4", "dataset.longtail_min=2", "dataset.seed=5"],
])
def test_the_check_before_hydra_accepts_the_controls(argv):
    from mlc.config import check_command_line

    assert check_command_line(argv) is None


def test_digits_still_has_no_negative_ratio_scope():
    from mlc.config import check_command_line

    assert check_command_line(["dataset.negative_ratio_scope=eval"]).startswith(
        "error: dataset.negative_ratio_scope: no such key in the config")
