"""Sewer-ML from per-split CSV fixtures: 17 defect columns, Defect == 0 negatives, F2-CIW weights, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlc.data import SewerML
from mlc.data.sewerml import DEFECTS
from mlc.errors import ConfigError, DataError
from mlc.metrics import multilabel_metrics
from tests.test_data_fixtures import train_on, write_csv, write_image

HEADER = ["Filename", *DEFECTS, "VA", "ND", "Defect"]


def row(name: str, *codes: str, water: int = 0) -> list:
    label = [int(c in codes) for c in DEFECTS]
    return [name, *label, water, int(not codes), int(any(label))]


def split_rows(prefix: str, n: int) -> list[list]:
    """Every third image is a negative (Defect 0); the others get one or two defect codes."""
    return [row(f"{prefix}_{i:04d}.png", *([] if i % 3 == 0 else [DEFECTS[i % 17], DEFECTS[(5 * i) % 17]][: 1 + i % 2]),
                water=i % 2) for i in range(n)]


@pytest.fixture
def sewer(tmp_path):
    for split, n in (("Train", 12), ("Val", 6), ("Test", 6)):
        rows = split_rows(split.lower(), n)
        write_csv(tmp_path / f"SewerML_{split}.csv", HEADER, rows)
        for i, r in enumerate(rows):  # the images of each split in their own sub-folder, as extracted
            write_image(tmp_path / "images" / split.lower() / r[0], seed=i + 100 * n)
    return tmp_path


def source(root, **kwargs) -> SewerML:
    return SewerML(root=str(root), image_size=16, cache_dir=None, decode_workers=1, **kwargs)


def test_defect_columns_are_the_labels_and_defect_0_rows_the_negatives(sewer):
    src = source(sewer)
    train = src.load("train")
    assert len(train) == 12 and train.stats().negative_count == 4
    expected = np.array([r[1:18] for r in split_rows("train", 12)], dtype=np.uint8)
    assert np.array_equal(train.targets, expected) and train.class_names == list(DEFECTS)
    assert train[1]["image"].shape == (3, 16, 16)


def test_class_importance_weights_are_attached_in_class_order_and_feed_f2_ciw(sewer):
    src = source(sewer)
    weights = dict(zip(src.class_names, src.class_weights, strict=True))
    assert weights["RB"] == 1.0 and weights["OB"] == 0.5518 and weights["OK"] == 0.4396 and len(weights) == 17
    y = src.load("val").targets
    metrics = multilabel_metrics(y * 0.9 + 0.05, y, class_weights=src.class_weights)
    assert 0.0 <= metrics["f2_ciw"] <= 1.0
    with pytest.raises(ConfigError) as err:
        source(sewer, class_weights={"RB": 1.0})
    assert err.value.key == "class_weights"


@pytest.mark.parametrize("column,value,message", [
    ("Defect", "0", r"SewerML_Train.csv:3: Defect=0 contradicts the defect columns \(OB, IS\)"),
    ("RB", "2", r"SewerML_Train.csv:3: column RB is '2', expected 0 or 1"),
    ("OK", "", r"SewerML_Train.csv:3: column OK is '', expected 0 or 1"),
])
def test_inconsistent_or_non_binary_cells_name_the_line(sewer, column, value, message):
    rows = split_rows("train", 12)
    rows[1][HEADER.index(column)] = value
    write_csv(sewer / "SewerML_Train.csv", HEADER, rows)
    with pytest.raises(DataError, match=message):
        source(sewer).load("train")


def test_wrong_header_missing_image_missing_file_and_empty_split(sewer):
    without_ok = [r[:17] + r[18:] for r in split_rows("val", 6)]
    write_csv(sewer / "SewerML_Val.csv", [h for h in HEADER if h != "OK"], without_ok)
    with pytest.raises(DataError, match=r"SewerML_Val.csv:1: wrong header: no column 'OK'"):
        source(sewer).load("val")
    write_csv(sewer / "SewerML_Val.csv", HEADER, split_rows("val", 6))
    (sewer / "images" / "train" / "train_0004.png").unlink()
    with pytest.raises(DataError, match=r"SewerML_Train.csv:6: image not found: .*train_0004.png"):
        source(sewer).load("train")
    assert source(sewer, skip_bad_images=True).load("train").stats().skipped == 1
    (sewer / "SewerML_Test.csv").unlink()
    with pytest.raises(DataError, match=r"SewerML_Test.csv: file not found"):
        source(sewer).load("test")
    write_csv(sewer / "SewerML_Test.csv", HEADER, [])
    with pytest.raises(DataError, match="the 'test' split lists no images"):
        source(sewer).load("test")


@pytest.mark.slow
def test_trains_one_epoch_selecting_on_f2_ciw(sewer, outputs, data_cache):
    result = train_on("sewerml", sewer, outputs, data_cache, "trainer.monitor=val/f2_ciw")
    assert result.returncode == 0, result.stderr
    assert "train 12 (33% negative) val 6 test 6" in result.stdout and "best val/f2_ciw" in result.stdout
    (summary,) = outputs.glob("runs/*/*/result.json")
    assert "f2_ciw" in json.loads(summary.read_text())["test"]
