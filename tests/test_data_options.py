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
