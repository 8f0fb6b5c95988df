"""Users' own data: CSV files (0/1 columns or joined names) and class folders, with their bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mlc.data import CsvImages, FolderImages
from mlc.errors import ConfigError, DataError
from tests.test_data_fixtures import train_on, truncate, write_csv, write_image

CLASSES = ["cat", "dog", "bird"]
LABELS = {"train": [("cat",), ("dog", "cat"), (), ("bird",), (), ("dog",), ("cat", "bird"), (), ("dog",), ("cat",)],
          "val": [("cat",), (), ("dog", "bird"), ()], "test": [("bird",), ("cat",), (), ("dog", "cat")]}


def write_images(root, split: str) -> list[str]:
    paths = [f"img/{split}/{i:03d}.jpg" for i in range(len(LABELS[split]))]
    for i, path in enumerate(paths):
        write_image(root / path, seed=i + 50 * len(split))
    return paths


@pytest.fixture
def columns_csv(tmp_path):
    """path + one 0/1 column per class (val's columns in another order: matched by name)."""
    tmp_path = tmp_path / "columns"
    for split, labels in LABELS.items():
        header = ["path", *CLASSES] if split != "val" else ["bird", "path", "cat", "dog"]
        rows = [[p, *(int(c in lab) for c in CLASSES)] for p, lab in zip(write_images(tmp_path, split), labels,
                                                                        strict=True)]
        if split == "val":
            rows = [[r[3], r[0], r[1], r[2]] for r in rows]
        write_csv(tmp_path / f"{split}.csv", header, rows)
    return tmp_path


@pytest.fixture
def names_csv(tmp_path):
    """path + one column of |-joined class names (empty = negative)."""
    tmp_path = tmp_path / "names"
    for split, labels in LABELS.items():
        rows = [[p, "|".join(lab)] for p, lab in zip(write_images(tmp_path, split), labels, strict=True)]
        write_csv(tmp_path / f"{split}.csv", ["path", "labels"], rows)
    return tmp_path


def common(**kwargs) -> dict:
    return {"image_size": 16, "cache_dir": None, "decode_workers": 1} | kwargs


def expected(split: str, classes: list[str]) -> list[list[int]]:
    return [[int(c in lab) for c in classes] for lab in LABELS[split]]


def test_class_columns_are_matched_by_name_in_every_split(columns_csv):
    src = CsvImages(root=str(columns_csv), **common())
    assert src.class_names == CLASSES
    for split in LABELS:
        ds = src.load(split)
        assert ds.targets.tolist() == expected(split, CLASSES)
    assert src.load("train").stats().negative_count == 3 and src.load("val")[2]["image"].shape == (3, 16, 16)


def test_joined_names_column_with_empty_negatives(names_csv):
    src = CsvImages(root=str(names_csv), labels_column="labels", **common())
    assert src.class_names == sorted(CLASSES)
    assert src.load("test").targets.tolist() == expected("test", sorted(CLASSES))


def test_unknown_class_name_wrong_header_and_bad_cells_name_file_and_line(names_csv, columns_csv):
    lines = (names_csv / "val.csv").read_text().splitlines()
    lines[3] = lines[3].replace("dog|bird", "dog|birb")
    (names_csv / "val.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"val.csv:4: unknown class 'birb' \(classes: bird, cat, dog\)"):
        CsvImages(root=str(names_csv), labels_column="labels", **common()).load("val")
    with pytest.raises(DataError, match=r"train.csv:1: wrong header: no column 'file'"):
        CsvImages(root=str(names_csv), path_column="file", labels_column="labels", **common())
    test_csv = columns_csv / "test.csv"
    test_csv.write_text(test_csv.read_text().replace("path,cat,dog,bird", "path,cat,dog,brid", 1))
    with pytest.raises(DataError, match=r"test.csv:1: wrong header: class columns \['cat', 'dog', 'brid'\]"):
        CsvImages(root=str(columns_csv), **common()).load("test")
    (columns_csv / "train.csv").write_text((columns_csv / "train.csv").read_text().replace(",1,0,0", ",yes,0,0", 1))
    with pytest.raises(DataError, match=r"train.csv:2: column cat is 'yes', expected 0 or 1"):
        CsvImages(root=str(columns_csv), **common()).load("train")


def test_missing_and_truncated_images_and_an_empty_split(columns_csv):
    (columns_csv / "img" / "val" / "001.jpg").unlink()
    truncate(columns_csv / "img" / "val" / "002.jpg")
    with pytest.raises(DataError, match=r"val.csv:3: image not found: .*img/val/001.jpg"):
        CsvImages(root=str(columns_csv), **common()).load("val")
    skipping = CsvImages(root=str(columns_csv), **common(skip_bad_images=True)).load("val")
    assert skipping.stats().skipped == 2 and skipping.targets.tolist() == [expected("val", CLASSES)[i] for i in (0, 3)]
    write_csv(columns_csv / "test.csv", ["path", *CLASSES], [])
    with pytest.raises(DataError, match=r"test.csv: the 'test' split lists no images"):
        CsvImages(root=str(columns_csv), **common()).load("test")


@pytest.fixture
def folders(tmp_path):
    """root/<split>/<class>/<image>; an image in two class folders has two labels."""
    for split, labels in LABELS.items():
        for i, lab in enumerate(labels):
            for folder in lab or ("_negative",):
                write_image(tmp_path / split / folder / f"{i:03d}.png", seed=i)
        (tmp_path / split / "notes.txt").write_text("not an image")
    return tmp_path


def test_folders_give_multi_labels_and_negatives(folders):
    src = FolderImages(root=str(folders), **common())
    assert src.class_names == sorted(CLASSES)
    for split in LABELS:
        ds = src.load(split)
        assert ds.targets.tolist() == expected(split, sorted(CLASSES))
    assert src.load("val").stats().negative_count == 2


def test_folder_errors_unknown_class_contradiction_corrupt_image_empty_split(folders):
    write_image(folders / "val" / "cats" / "009.png", seed=9)
    with pytest.raises(DataError, match=r"val/cats: unknown class folder 'cats' \(the training classes are"):
        FolderImages(root=str(folders), **common()).load("val")
    (folders / "val" / "cats" / "009.png").rename(folders / "val" / "cat" / "001.png")  # 001 is a negative in val
    (folders / "val" / "cats").rmdir()
    with pytest.raises(DataError, match=r"001.png is in _negative/ and in class folder\(s\) cat"):
        FolderImages(root=str(folders), **common()).load("val")
    (folders / "val" / "cat" / "001.png").unlink()
    (folders / "test" / "bird" / "000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"test/bird/000.png: cannot decode .* \(UnidentifiedImageError"):
        FolderImages(root=str(folders), **common()).load("test")
    for image in (folders / "test").rglob("*.png"):
        image.unlink()
    with pytest.raises(DataError, match=r"test: the 'test' split lists no images"):
        FolderImages(root=str(folders), **common()).load("test")
    with pytest.raises(ConfigError) as err:
        FolderImages(root=str(folders), split_dirs={"train": "training", "val": "val", "test": "test"})
    assert err.value.key == "split_dirs"


def test_items_are_deterministic_per_epoch_and_index_under_augmentation(columns_csv):
    import albumentations as A

    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.Rotate(limit=30, p=1.0)])
    ds = CsvImages(root=str(columns_csv), train_transform=pipeline, augment_seed=3, **common()).load("train")
    first = [ds[i]["image"] for i in range(len(ds))]
    again = [ds[i]["image"] for i in reversed(range(len(ds)))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    ds.set_epoch(1)
    assert not all(np.array_equal(a, ds[i]["image"]) for i, a in enumerate(first))


@pytest.mark.slow
@pytest.mark.parametrize("option", ["csv", "folder"])
def test_trains_one_epoch_from_the_fixture(option, columns_csv, outputs, data_cache):
    if option == "folder":
        root = columns_csv / "as_folders"
        for split, labels in LABELS.items():
            for i, lab in enumerate(labels):
                for folder in lab or ("_negative",):
                    write_image(root / split / folder / f"{i:03d}.jpg", seed=i)
    result = train_on(option, columns_csv if option == "csv" else root, outputs, data_cache)
    assert result.returncode == 0, result.stderr
    assert "train 10 (30% negative) val 4 test 4" in result.stdout and "epoch 1/1" in result.stdout


def test_single_positive_training_split_and_splits_left_empty(columns_csv):
    src = CsvImages(root=str(columns_csv), single_positive=True, **common())
    train = src.load("train")
    assert len(train) == 7 and (train.targets.sum(1) == 1).all() and (train.clean_targets >= train.targets).all()
    assert src.load("val").targets.tolist() == expected("val", CLASSES)  # evaluation labels stay clean
    write_csv(columns_csv / "train.csv", ["path", *CLASSES], [["img/train/002.jpg", 0, 0, 0]])
    with pytest.raises(DataError, match=r"train.csv: no 'train' image has a positive label to keep"):
        CsvImages(root=str(columns_csv), single_positive=True, **common()).load("train")
    write_csv(columns_csv / "test.csv", ["path", *CLASSES], [["img/test/nothing.jpg", 1, 0, 0]])
    with pytest.raises(DataError, match=r"test.csv: every image of the 'test' split is missing"):
        CsvImages(root=str(columns_csv), **common(skip_bad_images=True)).load("test")


def test_paths_that_leave_the_root_are_refused_unless_allowed(columns_csv, tmp_path):
    """dataset.root says where the data is: a CSV row with `..` or an absolute path elsewhere, a split file or split
    folder outside it, is refused naming it (file and line for a row); allow_outside_root=true reads it."""
    outside = tmp_path / "elsewhere.jpg"
    write_image(outside, seed=3)
    rows = [["../elsewhere.jpg", 1, 0, 0], ["img/train/000.jpg", 0, 1, 0], [str(outside), 0, 0, 1]]
    write_csv(columns_csv / "train.csv", ["path", *CLASSES], rows)
    src = CsvImages(root=str(columns_csv), **common())
    with pytest.raises(DataError, match=r"train.csv:2: image path '.*/columns/\.\./elsewhere.jpg' leaves dataset.root "
                                        r".*allow_outside_root=true"):
        src.load("train")
    write_csv(columns_csv / "train.csv", ["path", *CLASSES], rows[1:])
    with pytest.raises(DataError, match=r"train.csv:3: image path '.*elsewhere.jpg' leaves dataset.root"):
        CsvImages(root=str(columns_csv), **common()).load("train")
    allowed = CsvImages(root=str(columns_csv), allow_outside_root=True, **common()).load("train")
    assert len(allowed) == 2
    with pytest.raises(DataError, match="dataset.split_files.val: file .* leaves dataset.root"):
        CsvImages(root=str(columns_csv), split_files={"train": "train.csv", "val": "../val.csv", "test": "test.csv"},
                  **common())
    with pytest.raises(DataError, match="dataset.split_dirs.test: folder .* leaves dataset.root"):
        FolderImages(root=str(columns_csv / "img"), split_dirs={"train": "train", "val": "val", "test": "/tmp"},
                     **common())


def test_an_image_that_would_decode_to_too_many_pixels_is_refused_from_its_header(columns_csv, tmp_path):
    """max_image_pixels bounds the memory of one decode: the size is read from the header (after JPEG's draft
    scaling, which decodes a large JPEG at a fraction of its size), and a larger image is refused naming it."""
    from mlc.data.images import decode_image

    big_png = write_image(tmp_path / "big.png", seed=1, size=(400, 300))
    with pytest.raises(ValueError, match=r"400x300 = 0.1 megapixels to decode, above max_image_pixels = 0.1 M"):
        decode_image(big_png, 16, max_pixels=100_000)
    assert decode_image(big_png, 16, max_pixels=120_000).shape == (16, 16, 3)
    big_jpeg = write_image(tmp_path / "big.jpg", seed=1, size=(400, 300))
    assert decode_image(big_jpeg, 16, max_pixels=100_000).shape == (16, 16, 3)  # drafted to 50x38 before decoding
    write_image(columns_csv / "img/train/000.png", seed=2, size=(400, 300))
    rows = [["img/train/000.png", 1, 0, 0], ["img/train/001.jpg", 0, 1, 0]]
    write_csv(columns_csv / "train.csv", ["path", *CLASSES], rows)
    with pytest.raises(DataError, match=r"000.png.*above max_image_pixels"):
        CsvImages(root=str(columns_csv), max_image_pixels=100_000, **common()).load("train")
    with pytest.raises(ConfigError, match="max_image_pixels"):
        CsvImages(root=str(columns_csv), max_image_pixels=100, **common())  # below image_size² = 256
