"""Pascal VOC from a devkit-layout fixture: labels from XML (difficult = present), splits, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlc.data import PascalVOC
from mlc.data.voc import VOC_CLASSES
from mlc.errors import ConfigError, DataError
from tests.test_data_fixtures import train_on, truncate, write_voc

OBJECTS = {f"{i:06d}": objs for i, objs in enumerate([
    [("cat", 0), ("dog", 1)], [("person", 0)], [("car", 0), ("car", 0)], [("dog", 0)], [("bird", 1)],
    [("person", 0), ("horse", 0)], [("cat", 0)], [("boat", 0)], [("sofa", 0), ("cat", 0)], [("tvmonitor", 0)],
    [("person", 0)], [("bus", 0)], [("cow", 0)], [("sheep", 0)],
], start=1)}
IDS = sorted(OBJECTS)
SETS_2007 = {"train": IDS[:8], "val": IDS[8:11], "test": IDS[11:]}


def label(*names: str) -> list[int]:
    return [int(c in names) for c in VOC_CLASSES]


@pytest.fixture
def voc(tmp_path):
    return write_voc(tmp_path / "VOCdevkit" / "VOC2007", SETS_2007, OBJECTS)


def source(root, **kwargs) -> PascalVOC:
    return PascalVOC(root=str(root), image_size=16, cache_dir=None, decode_workers=1, **kwargs)


def test_splits_and_labels_follow_the_xml_and_difficult_objects_count(voc):
    src = source(voc)
    train = src.load("train")
    assert len(train) == 8 and src.load("val").stats().num_samples == 3 and len(src.load("test")) == 3
    assert train.targets[0].tolist() == label("cat", "dog")  # the dog is difficult: still present
    assert train.targets[2].tolist() == label("car") and train.targets[4].tolist() == label("bird")
    item = train[5]
    assert item["image"].shape == (3, 16, 16) and item["target"].tolist() == label("person", "horse")
    assert train.stats().negative_count == 0


def test_voc2012_protocol_holds_out_a_fifth_of_train_for_validation(tmp_path):
    root = write_voc(tmp_path / "VOC2012", {"train": IDS[:10], "val": IDS[10:]}, OBJECTS)
    src = source(root, image_sets={"train": "train", "val": None, "test": "val"})
    train, val, test = (src.files(s)[0] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (8, 2, 4)
    assert not {p.name for p in train.paths} & {p.name for p in val.paths}
    again = source(root, image_sets={"train": "train", "val": None, "test": "val"}).files("val")[0]
    assert again.paths == val.paths
    np.testing.assert_array_equal(src.load("val").targets, val.targets)


def test_unknown_class_names_the_xml_file_and_line(voc):
    xml = voc / "Annotations" / f"{IDS[1]}.xml"
    xml.write_text(xml.read_text().replace("<name>person</name>", "<name>persn</name>"))
    with pytest.raises(DataError, match=rf"{xml}:6: unknown class 'persn'"):
        source(voc).load("train")


def test_broken_xml_names_the_file_and_line(voc):
    xml = voc / "Annotations" / f"{IDS[3]}.xml"
    xml.write_text(xml.read_text().replace("</object>", "</objet>", 1))
    with pytest.raises(DataError, match=rf"{xml}:\d+: not valid XML"):
        source(voc).load("train")


def test_missing_and_truncated_images_name_the_list_line_or_are_skipped_and_counted(voc):
    (voc / "JPEGImages" / f"{IDS[1]}.jpg").unlink()
    with pytest.raises(DataError, match=r"Main/train.txt:2: image not found: .*000002.jpg"):
        source(voc).load("train")
    truncate(voc / "JPEGImages" / f"{IDS[8]}.jpg")
    with pytest.raises(DataError, match=r"Main/val.txt:1: cannot decode .*000009.jpg \(OSError: "):
        source(voc).load("val")
    src = source(voc, skip_bad_images=True)
    assert src.load("train").stats().skipped == 1 and len(src.load("train")) == 7
    val = src.load("val")
    assert val.stats().skipped == 1 and len(val) == 2


def test_empty_split_and_missing_list_are_errors(voc):
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n")
    with pytest.raises(DataError, match=r"val.txt: the 'val' split lists no images \(empty split\)"):
        source(voc).load("val")
    with pytest.raises(DataError, match="image set 'trainval' not found"):
        source(voc, image_sets={"train": "trainval", "val": "val", "test": "test"}).load("train")


def test_root_is_required_and_must_be_a_directory(tmp_path):
    with pytest.raises(ConfigError) as err:
        PascalVOC()
    assert err.value.key == "root" and "VOCdevkit" in str(err.value)
    with pytest.raises(ConfigError, match="is not a directory"):
        PascalVOC(root=str(tmp_path / "nope"))


@pytest.mark.slow
def test_trains_one_epoch_from_the_fixture(voc, outputs, data_cache):
    result = train_on("voc2007", voc, outputs, data_cache)
    assert result.returncode == 0, result.stderr
    assert "train 8 (0% negative) val 3 test 3" in result.stdout and "epoch 1/1" in result.stdout
    (summary,) = outputs.glob("runs/*/*/result.json")
    assert "f1_macro" in json.loads(summary.read_text())["test"]
