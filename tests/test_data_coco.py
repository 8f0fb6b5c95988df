"""COCO instances JSON fixtures: plain hold-out splits, the modified-COCO recipe, bad input."""

from __future__ import annotations

import json

import pytest
from sklearn.model_selection import train_test_split

from mlc.data import CocoInstances
from mlc.errors import DataError
from tests.conftest import compose
from tests.test_data_fixtures import train_on, truncate, write_coco_set

CATEGORIES = ["person", "boat", "cat", "dog", "dining table"]
KEPT = ["boat", "cat", "dog"]
# Per image, the categories of its annotations (in annotation order): 6 to 10 images per first kept
# category and per "no kept category" (person or dining table only, or nothing), so that the
# reference's stratified split has at least two images of each stratum wherever it needs them.
TRAIN = ([["cat", "person"], ["cat"], ["cat", "dog"]] * 3 + [["person", "dog"], ["dog"], ["dog", "boat"]] * 3
         + [["boat"], ["boat", "cat"]] * 3 + [["person"], [], ["dining table"]] * 2 + [["cat"]])
VAL = [["dog", "cat"], ["boat"], ["dog"], ["boat", "dog"], ["cat"], ["person"], [], ["person", "person"],
       ["boat"], ["dining table"], ["cat"], ["dog"]]


@pytest.fixture
def coco(tmp_path):
    write_coco_set(tmp_path, "train2017", TRAIN, CATEGORIES, first_id=1)
    write_coco_set(tmp_path, "val2017", VAL, CATEGORIES, first_id=500, seed=100)
    return tmp_path


def source(root, **kwargs) -> CocoInstances:
    kwargs = {"categories": KEPT, "image_size": 16, "cache_dir": None, "decode_workers": 1} | kwargs
    return CocoInstances(root=str(root), **kwargs)


def label(*names: str) -> list[int]:
    return [int(c in names) for c in KEPT]


def test_holdout_splits_and_kept_categories(coco):
    src = source(coco)
    train, val, test = (src.load(s) for s in ("train", "val", "test"))
    held_out = round(0.2 * len(TRAIN))
    assert (len(train), len(val), len(test)) == (len(TRAIN) - held_out, held_out, len(VAL))  # test = val2017
    assert test.targets.tolist()[:3] == [label("dog", "cat"), label("boat"), label("dog")]
    assert test.targets[5].tolist() == label() and test.targets[9].tolist() == label()  # person / dining table only
    assert test.stats().negative_count == 4
    assert train[0]["image"].shape == (3, 16, 16)


def reference_split(images: list[list[str]]) -> dict[str, list[int]]:
    """The reference notebook's procedure, rewritten from its description: relabel kept categories
    1..K in category order, "unlabeled" K+1, stratify by each image's first annotation, two splits."""
    new_id = {name: k + 1 for k, name in enumerate(c for c in CATEGORIES if c in KEPT)}
    ids = list(range(len(images)))
    labels = [next((new_id[n] for n in names if n in new_id), len(KEPT) + 1) for names in images]
    train, rest, _, rest_labels = train_test_split(ids, labels, train_size=0.7, stratify=labels, random_state=42)
    val, test = train_test_split(rest, train_size=0.15 / (0.15 + 0.15), stratify=rest_labels, random_state=42)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def test_modified_coco_recipe_merges_sets_and_reproduces_the_reference_split(coco):
    src = source(coco, split_mode="merged")
    merged = TRAIN + VAL
    expected = reference_split(merged)
    for split, rows in expected.items():
        files, _ = src.files(split)
        assert [int(p.stem) for p in files.paths] == [r + 1 if r < len(TRAIN) else 500 + r - len(TRAIN) for r in rows]
        assert files.targets.tolist() == [label(*merged[r]) for r in rows]
    assert [len(src.load(s)) for s in ("train", "val", "test")] == [30, 6, 7]  # 43 images, 70/15/15
    negatives = [src.load(s).stats().negative_count for s in ("train", "val", "test")]
    assert sum(negatives) == sum(not set(names) & set(KEPT) for names in merged) and min(negatives) >= 1


def test_the_modified_coco_config_keeps_the_41_reference_categories():
    cfg = compose(["dataset=coco_modified"]).dataset
    assert len(cfg.categories) == 41 and {"boat", "dining table"} <= set(cfg.categories)
    assert not {"person", "car", "cup", "bowl", "giraffe"} & set(cfg.categories)
    assert cfg.split_mode == "merged" and list(cfg.fractions) == [0.7, 0.15, 0.15] and cfg.split_seed == 42
    assert len(compose(["dataset=coco"]).dataset.categories) == 80


def test_unknown_category_id_and_unknown_kept_name_are_errors(coco):
    path = coco / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][3]["category_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"val2017.json: annotations\[3\] \(id \d+\): unknown category_id 999"):
        source(coco).load("test")
    with pytest.raises(DataError, match=r"instances_train2017.json: category 'catt' \(dataset.categories\) not among"):
        source(coco, categories=["boat", "catt"]).load("train")


def test_malformed_json_names_file_and_line(coco):
    path = coco / "annotations" / "instances_train2017.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=1)[:-40])
    with pytest.raises(DataError, match=r"instances_train2017.json:\d+: not valid JSON"):
        source(coco).load("train")


def test_missing_truncated_images_and_empty_split(coco):
    (coco / "val2017" / "000000000502.jpg").unlink()
    with pytest.raises(DataError, match=r"instances_val2017.json: images\[2\] \(id 502\): image not found"):
        source(coco).load("test")
    truncate(coco / "val2017" / "000000000503.jpg")
    src = source(coco, skip_bad_images=True)
    test = src.load("test")
    assert len(test) == 10 and test.stats().skipped == 2
    path = coco / "annotations" / "instances_val2017.json"
    categories = json.loads(path.read_text())["categories"]
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    with pytest.raises(DataError, match=r"instances_val2017.json: the 'test' split lists no images"):
        source(coco).load("test")


@pytest.mark.slow
def test_trains_one_epoch_on_the_modified_recipe_with_a_negative_ratio(coco, outputs, data_cache):
    result = train_on("coco_modified", coco, outputs, data_cache, "dataset.categories=[boat,cat,dog]",
                      "dataset.negative_ratio=0.25")
    assert result.returncode == 0, result.stderr
    expected = {s: source(coco, split_mode="merged", negative_ratio=0.25).label_stats(s) for s in ("train", "val")}
    assert all(round(0.25 * st.num_samples) == st.negative_count for st in expected.values())
    train, val = expected["train"], expected["val"]
    assert (f"train {train.num_samples} ({100 * train.negative_ratio:.0f}% negative) val {val.num_samples}"
            in result.stdout) and "epoch 1/1" in result.stdout
    (summary,) = outputs.glob("runs/*/*/result.json")
    assert "map" in json.loads(summary.read_text())["test"]
