"""MS-COCO from its instances JSON (pycocotools), plain 80-class or the "modified COCO" recipe.

``root`` holds ``annotations/instances_<set>.json`` and the images of each set in ``<set>/``
(the official layout: ``train2017/``, ``val2017/``); both patterns are fields. An image is labelled
with the categories of its annotations (crowd annotations included, as in the reference), limited
to ``categories``: images left without a kept annotation are **negatives**.

Two ways to split (``split_mode``):

- ``holdout`` (plain COCO): the first set is the training pool, ``val_fraction`` of it is held out
  for validation (Cole et al.'s protocol: 0.2, seed 1200) and the second set is the test split —
  COCO's own test images have no public labels.
- ``merged`` (the any-class paper's modified COCO, reference repository
  ML-for-Sensor-Data-Western/gmean-mlc, ``data_scripts/COCO2017_DataProcessing.ipynb``): all sets
  are concatenated in order and split 70/15/15 by scikit-learn's ``train_test_split`` with
  ``random_state`` 42, twice (train vs rest, then val vs test with 0.15 / 0.30), stratified by each
  image's *first kept annotation's category* (a pseudo-class after the kept ones for images with
  none), exactly as the reference does; each split keeps the merged order.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from mlc.data.source import FileDatasetSource, SplitFiles, holdout
from mlc.errors import DataError, require

SPLIT_MODES = ("holdout", "merged")


class CocoInstances(FileDatasetSource):
    """COCO instances annotations as multi-label targets.

    Args:
        sets: annotation sets, e.g. ``[train2017, val2017]`` (``holdout`` needs exactly two: train pool, test).
        categories: category names to keep, in class order (the YAML lists them; unknown names are an
            error when the JSON is read).
        annotations, images: where a set's JSON and image folder are, relative to ``root``
            (``{set}`` is replaced by the set name).
        split_mode: ``holdout`` or ``merged`` (module docstring).
        val_fraction, val_seed: the ``holdout`` validation split.
        fractions, split_seed: the ``merged`` train/val/test fractions and ``random_state``.
        **common: the fields of every file-backed source (``FileDatasetSource``).
    """

    layout = "annotations/instances_<set>.json and one image folder per set (e.g. train2017/, val2017/)"

    def __init__(self, root: str | None = None, sets: list[str] | None = None, categories: list[str] | None = None,
                 annotations: str = "annotations/instances_{set}.json", images: str = "{set}",
                 split_mode: str = "holdout", val_fraction: float = 0.2, val_seed: int = 1200,
                 fractions: list[float] | None = None, split_seed: int = 42, **common):
        super().__init__(root, **common)
        sets = list(sets or ["train2017", "val2017"])
        fractions = [float(f) for f in (fractions or [0.7, 0.15, 0.15])]
        require(split_mode in SPLIT_MODES, "split_mode", split_mode, f"must be one of {', '.join(SPLIT_MODES)}")
        require(len(sets) >= 1 and all(isinstance(s, str) and s for s in sets), "sets", sets,
                "must be a list of annotation set names, e.g. [train2017, val2017]")
        require(split_mode == "merged" or len(sets) == 2, "sets", sets,
                "split_mode=holdout needs two sets: the training pool and the test set")
        require(isinstance(categories, list) and len(categories) >= 1 and len(set(categories)) == len(categories),
                "categories", categories, "must be a non-empty list of distinct COCO category names")
        require(0.0 < val_fraction < 1.0, "val_fraction", val_fraction, "must be in (0, 1)")
        require(len(fractions) == 3 and all(f > 0 for f in fractions) and abs(sum(fractions) - 1.0) < 1e-6,
                "fractions", fractions, "must be three positive train/val/test fractions summing to 1")
        self.sets, self.split_mode = sets, split_mode
        self.annotations, self.images = annotations, images
        self.val_fraction, self.val_seed = float(val_fraction), int(val_seed)
        self.fractions, self.split_seed = fractions, int(split_seed)
        self.class_names = [str(c) for c in categories]

    def read_splits(self) -> dict[str, SplitFiles]:
        parts = [self._read_set(name) for name in self.sets]
        if self.split_mode == "holdout":
            (pool, _), (test, _) = parts
            train, val = holdout(len(pool), self.val_fraction, self.val_seed)
            return {"train": pool.take(train), "val": pool.take(val), "test": test}
        merged = SplitFiles([p for part, _ in parts for p in part.paths],
                            np.concatenate([part.targets for part, _ in parts]),
                            [o for part, _ in parts for o in part.origins],
                            " + ".join(part.listing for part, _ in parts))
        strata = np.concatenate([s for _, s in parts])
        return {split: merged.take(rows) for split, rows in self._stratified(strata, merged.listing).items()}

    def _stratified(self, strata: np.ndarray, listing: str) -> dict[str, np.ndarray]:
        """The reference's two stratified ``train_test_split`` calls, as positions in merged order."""
        from sklearn.model_selection import train_test_split

        train_f, val_f, test_f = self.fractions
        positions = np.arange(len(strata))
        try:
            train, rest, _, rest_strata = train_test_split(positions, strata, train_size=train_f, stratify=strata,
                                                           random_state=self.split_seed)
            val, test = train_test_split(rest, train_size=val_f / (val_f + test_f), stratify=rest_strata,
                                         random_state=self.split_seed)
        except ValueError as err:
            raise DataError(f"{listing}: cannot split {len(strata)} images {self.fractions} stratified by first "
                            f"category ({err})") from None
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

    def _read_set(self, name: str) -> tuple[SplitFiles, np.ndarray]:
        """One set's images and targets, and each image's stratum (first kept annotation's class + 1,
        or K + 1 when it has none: the reference's relabelled category ids and its "unlabeled")."""
        ann_file = self.root / self.annotations.format(set=name)
        coco = _load_coco(ann_file)
        by_name = {c["name"]: c["id"] for c in coco.dataset.get("categories", [])}
        unknown = [c for c in self.class_names if c not in by_name]
        if unknown:
            raise DataError(f"{ann_file}: categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))} "
                            f"(dataset.categories) not among its categories ({', '.join(by_name)})")
        class_of = {by_name[c]: k for k, c in enumerate(self.class_names)}
        images = coco.dataset.get("images", [])
        row_of = {img["id"]: i for i, img in enumerate(images)}
        k = len(self.class_names)
        targets = np.zeros((len(images), k), dtype=np.uint8)
        strata = np.full(len(images), k + 1, dtype=np.int64)
        for j, ann in enumerate(coco.dataset.get("annotations", [])):
            where = f"{ann_file}: annotations[{j}] (id {ann.get('id')})"
            if ann.get("category_id") not in coco.cats:
                raise DataError(f"{where}: unknown category_id {ann.get('category_id')!r}")
            if ann.get("image_id") not in row_of:
                raise DataError(f"{where}: unknown image_id {ann.get('image_id')!r}")
            c = class_of.get(ann["category_id"])
            if c is not None:
                row = row_of[ann["image_id"]]
                if strata[row] == k + 1:
                    strata[row] = c + 1
                targets[row, c] = 1
        folder = self.root / self.images.format(set=name)
        paths = [folder / img["file_name"] for img in images]
        origins = [f"{ann_file}: images[{i}] (id {img['id']})" for i, img in enumerate(images)]
        return SplitFiles(paths, targets, origins, str(ann_file)), strata


def _load_coco(ann_file: Path):
    """pycocotools' index of an instances file (its progress prints kept off stdout); a missing or
    malformed file is a ``DataError`` naming the file (and line, for JSON syntax errors)."""
    from pycocotools.coco import COCO

    if not ann_file.is_file():
        raise DataError(f"{ann_file}: annotation file not found")
    coco = COCO()
    try:
        coco.dataset = json.loads(ann_file.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{ann_file}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(coco.dataset, dict) or "images" not in coco.dataset:
        raise DataError(f"{ann_file}: not a COCO instances file (no 'images' list)")
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
