"""NIH ChestX-ray14 from its release files: the ``Data_Entry`` CSV and the official split lists.

``root`` holds ``Data_Entry_2017_v2020.csv`` (columns ``Image Index``, ``Finding Labels`` —
``|``-joined findings or ``No Finding`` —, ``Patient ID``, ...), ``train_val_list.txt``,
``test_list.txt`` and the PNGs, found by file name in the folders ``image_dirs`` (globs: the
release's ``images_001/images/`` ... or one ``images/`` folder). The 14 findings are the classes
(in the reference's order); ``No Finding`` is a **negative** image.

The official lists give train_val and test only. The validation split (``val_split``):

- ``reference`` (default): the reference repository's data script (ML-for-Sensor-Data-Western/
  gmean-mlc, ``data_scripts/ChestXray_DataProcessing.ipynb``, "old split"): Python's
  ``random.seed(42)`` shuffle of the train_val list, the first ⌊n · 10/80⌋ images are validation.
  Images are split, not patients: a patient may appear in train and val (not in test).
- ``patient``: the train_val patients are permuted with ``val_seed`` and the first
  round(fraction · patients) become validation, so no patient is in two splits.

Each split keeps the CSV's row order (as the reference's loader does).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from mlc.data.source import FileDatasetSource, SplitFiles, index_files, read_csv
from mlc.errors import DataError, require

FINDINGS = ("Infiltration", "Effusion", "Atelectasis", "Nodule", "Mass", "Pneumothorax", "Consolidation",
            "Pleural_Thickening", "Cardiomegaly", "Emphysema", "Edema", "Fibrosis", "Pneumonia", "Hernia")
NO_FINDING = "No Finding"
VAL_SPLITS = ("reference", "patient")


class ChestXray14(FileDatasetSource):
    """ChestX-ray14 findings as multi-label targets.

    Args:
        csv_file, train_val_list, test_list: the release's files, relative to ``root``.
        image_dirs: globs (relative to ``root``) of the folders holding the PNGs, searched in order.
        val_split: ``reference`` or ``patient`` (module docstring).
        val_fraction: share of train_val used for validation (reference: 10/80 = 0.125).
        val_seed: seed of the validation split (reference: 42).
        **common: the fields of every file-backed source (``FileDatasetSource``).
    """

    layout = "Data_Entry_2017_v2020.csv, train_val_list.txt, test_list.txt and the PNG folders"

    def __init__(self, root: str | None = None, csv_file: str = "Data_Entry_2017_v2020.csv",
                 train_val_list: str = "train_val_list.txt", test_list: str = "test_list.txt",
                 image_dirs: list[str] | None = None, val_split: str = "reference", val_fraction: float = 0.125,
                 val_seed: int = 42, **common):
        super().__init__(root, **common)
        require(val_split in VAL_SPLITS, "val_split", val_split, f"must be one of {', '.join(VAL_SPLITS)}")
        require(0.0 < val_fraction < 1.0, "val_fraction", val_fraction, "must be in (0, 1)")
        self.csv_file, self.train_val_list, self.test_list = csv_file, train_val_list, test_list
        self.image_dirs = list(image_dirs or ["images", "images_*/images"])
        self.val_split, self.val_fraction, self.val_seed = val_split, float(val_fraction), int(val_seed)
        self.class_names = list(FINDINGS)

    def read_splits(self) -> dict[str, SplitFiles]:
        csv_path = self.root / self.csv_file
        _, rows = read_csv(csv_path, ["Image Index", "Finding Labels", "Patient ID"])
        entries = {}  # image name -> (CSV line, targets, patient)
        for line_no, row in rows:
            name = row["Image Index"]
            if name in entries:
                raise DataError(f"{csv_path}:{line_no}: {name} is listed twice (first at line {entries[name][0]})")
            entries[name] = (line_no, _findings(row["Finding Labels"], f"{csv_path}:{line_no}"), row["Patient ID"])
        train_val = self._names(self.root / self.train_val_list, entries, csv_path)
        test = self._names(self.root / self.test_list, entries, csv_path)
        both = set(train_val) & set(test)
        if both:
            raise DataError(f"{self.root / self.test_list}: {sorted(both)[0]} is also in {self.train_val_list} "
                            f"({len(both)} image(s) in both lists)")
        val = self._validation(train_val, entries)
        train = [n for n in train_val if n not in val]
        index = index_files(self.root, self.image_dirs)
        listing = f"{csv_path} + {self.root / self.train_val_list}"

        def split_files(names: list[str], source: str) -> SplitFiles:
            names = sorted(names, key=lambda n: entries[n][0])  # the CSV's order
            paths = [index.get(n, self.root / self.image_dirs[0] / n) for n in names]
            targets = np.array([entries[n][1] for n in names], dtype=np.uint8).reshape(len(names), len(FINDINGS))
            return SplitFiles(paths, targets, [f"{csv_path}:{entries[n][0]}" for n in names], source)

        return {"train": split_files(train, listing), "val": split_files(sorted(val), listing),
                "test": split_files(test, f"{csv_path} + {self.root / self.test_list}")}

    def _names(self, list_path: Path, entries: dict, csv_path: Path) -> list[str]:
        """Image names of an official list file, in file order; each must have a CSV row."""
        if not list_path.is_file():
            raise DataError(f"{list_path}: split list not found")
        names = []
        for line_no, line in enumerate(list_path.read_text().splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            if name not in entries:
                raise DataError(f"{list_path}:{line_no}: {name} has no row in {csv_path}")
            names.append(name)
        return names

    def _validation(self, train_val: list[str], entries: dict) -> set[str]:
        if self.val_split == "reference":
            shuffled = list(train_val)
            random.Random(self.val_seed).shuffle(shuffled)  # = random.seed(42); random.shuffle(...)
            return set(shuffled[:int(len(shuffled) * self.val_fraction)])
        patients = sorted({entries[n][2] for n in train_val})
        order = np.random.default_rng(self.val_seed).permutation(len(patients))
        held = {patients[i] for i in order[:round(self.val_fraction * len(patients))]}
        return {n for n in train_val if entries[n][2] in held}


def _findings(labels: str, where: str) -> list[int]:
    """A ``Finding Labels`` cell as a 0/1 row; ``No Finding`` (alone) is the negative image."""
    names = [n.strip() for n in labels.split("|")]
    if names == [NO_FINDING]:
        return [0] * len(FINDINGS)
    bad = [n for n in names if n not in FINDINGS]
    if bad:
        hint = f"{NO_FINDING!r} cannot be combined with a finding" if NO_FINDING in bad else \
            f"the findings are {', '.join(FINDINGS)} or {NO_FINDING!r}"
        raise DataError(f"{where}: unknown finding {bad[0]!r} in {labels!r} ({hint})")
    return [int(f in names) for f in FINDINGS]
