"""ChestX-ray14 from a release-layout fixture: Data_Entry CSV, official lists, validation splits, bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mlc.data import ChestXray14
from mlc.data.chestxray import FINDINGS
from mlc.errors import DataError
from tests.test_data_fixtures import train_on, write_csv, write_image

HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
          "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
FINDING_LABELS = ["No Finding", "Effusion", "Cardiomegaly|Effusion", "No Finding", "Mass", "Infiltration|Nodule",
                  "No Finding", "Hernia", "Atelectasis", "No Finding", "Pneumothorax|Mass|Edema", "No Finding",
                  "Fibrosis", "Emphysema", "No Finding", "Consolidation", "Pleural_Thickening", "Pneumonia",
                  "No Finding", "Effusion|Infiltration"]
NAMES = [f"{i // 3 + 1:08d}_{i % 3:03d}.png" for i in range(len(FINDING_LABELS))]  # 3 images per patient
TEST = NAMES[-5:]


@pytest.fixture
def chest(tmp_path):
    rows = [[name, labels, i % 3, i // 3 + 1, 50, "M", "PA", 24, 20, 0.14, 0.14]
            for i, (name, labels) in enumerate(zip(NAMES, FINDING_LABELS, strict=True))]
    write_csv(tmp_path / "Data_Entry_2017_v2020.csv", HEADER, rows)
    (tmp_path / "train_val_list.txt").write_text("".join(f"{n}\n" for n in reversed(NAMES[:-5])))
    (tmp_path / "test_list.txt").write_text("".join(f"{n}\n" for n in TEST))
    for i, name in enumerate(NAMES):  # spread over the release's folders, grey-scale PNGs
        write_image(tmp_path / f"images_{i % 2 + 1:03d}" / "images" / name, seed=i, mode="L")
    return tmp_path


def source(root, **kwargs) -> ChestXray14:
    return ChestXray14(root=str(root), image_size=16, cache_dir=None, decode_workers=1, **kwargs)


def names(files) -> list[str]:
    return [p.name for p in files.paths]


def test_official_lists_reference_validation_split_and_no_finding_negatives(chest):
    src = source(chest)
    train, val, test = (src.files(s)[0] for s in ("train", "val", "test"))
    listed = list(reversed(NAMES[:-5]))
    random.seed(42)  # the reference notebook: random.seed(42); random.shuffle(train_val); first n*10/80 = val
    random.shuffle(listed)
    assert names(val) == sorted(listed[:int(15 * 10 / 80)]) and names(test) == TEST
    assert names(train) == [n for n in NAMES[:-5] if n not in names(val)]  # the CSV's order
    row = NAMES.index("00000001_002.png")
    assert train.targets[names(train).index(NAMES[row])].tolist() == [int(f in ("Cardiomegaly", "Effusion"))
                                                                      for f in FINDINGS]
    assert src.load("test").stats().negative_count == 1
    assert src.label_stats("train").negative_count + src.label_stats("val").negative_count == \
        FINDING_LABELS[:-5].count("No Finding")


def test_grey_scale_images_become_three_equal_channels(chest):
    ds = source(chest).load("test")
    pixels = ds.pixels[ds.rows[0]]
    assert pixels.shape == (16, 16, 3) and np.array_equal(pixels[..., 0], pixels[..., 2])


def test_patient_split_keeps_each_patient_in_one_split(chest):
    src = source(chest, val_split="patient", val_fraction=0.25)
    train, val = names(src.files("train")[0]), names(src.files("val")[0])
    patient = lambda n: n.split("_")[0]  # noqa: E731
    assert val and not {patient(n) for n in train} & {patient(n) for n in val}
    assert sorted(train + val) == sorted(NAMES[:-5])
    assert names(source(chest, val_split="patient", val_fraction=0.25).files("val")[0]) == val


@pytest.mark.parametrize("labels,message", [
    ("Pneumonitis", r"Data_Entry_2017_v2020.csv:5: unknown finding 'Pneumonitis' in 'Pneumonitis' \(the findings"),
    ("No Finding|Mass", r"Data_Entry_2017_v2020.csv:5: unknown finding 'No Finding' .*cannot be combined"),
])
def test_unknown_findings_name_the_csv_line(chest, labels, message):
    csv_file = chest / "Data_Entry_2017_v2020.csv"
    lines = csv_file.read_text().splitlines()
    lines[4] = lines[4].replace(FINDING_LABELS[3], labels)
    csv_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        source(chest).load("train")


def test_wrong_header_missing_image_and_list_errors(chest):
    csv_file = chest / "Data_Entry_2017_v2020.csv"
    original = csv_file.read_text()
    csv_file.write_text(original.replace("Patient ID", "PatientID", 1))
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020.csv:1: wrong header: no column 'Patient ID'"):
        source(chest).load("train")
    csv_file.write_text(original)
    (chest / "images_001" / "images" / TEST[1]).unlink()  # NAMES[15] (CSV line 18) is in images_002
    (chest / "images_002" / "images" / TEST[1]).unlink(missing_ok=True)
    with pytest.raises(DataError, match=rf"Data_Entry_2017_v2020.csv:18: image not found: .*{TEST[1]}"):
        source(chest).load("test")
    (chest / "test_list.txt").write_text(f"{TEST[0]}\n00009999_000.png\n")
    with pytest.raises(DataError, match=r"test_list.txt:2: 00009999_000.png has no row in"):
        source(chest).load("test")
    (chest / "test_list.txt").write_text("")
    with pytest.raises(DataError, match="the 'test' split lists no images"):
        source(chest).load("test")


@pytest.mark.slow
def test_trains_one_epoch_from_the_fixture(chest, outputs, data_cache):
    result = train_on("chestxray14", chest, outputs, data_cache)
    assert result.returncode == 0, result.stderr
    assert "train 14 (36% negative) val 1 test 5" in result.stdout and "epoch 1/1" in result.stdout
