"""Sewer-ML from its per-split CSV files: 17 defect columns, negatives where ``Defect == 0``.

``root`` holds ``SewerML_Train.csv``, ``SewerML_Val.csv`` (and a labelled test CSV if you have one:
the benchmark's test labels are withheld, so ``split_files.test`` may point at the validation CSV —
say so when you report) and the images, found by file name in the folders ``image_dirs``. Each CSV
has ``Filename``, the 17 defect codes (0/1) and ``Defect``; the ``VA`` (water level) and ``ND``
columns are not classes (as in the reference, ML-for-Sensor-Data-Western/gmean-mlc
``gmean_mlc/datasets/dataset_sewer.py``). A row with ``Defect == 0`` is a negative image; a row
whose ``Defect`` contradicts its defect columns is an error, never a silent label.

The source carries ``class_weights``: the Sewer-ML benchmark's class-importance weights (Haurum &
Moeslund 2021; the reference's ``gmean_mlc/utils/constants.py``), which the F2-CIW metric uses.
"""

from __future__ import annotations

import numpy as np

from mlc.data.source import FileDatasetSource, SplitFiles, binary_cell, index_files, read_csv
from mlc.errors import DataError, require

DEFECTS = ("RB", "OB", "PF", "DE", "FS", "IS", "RO", "IN", "AF", "BE", "FO", "GR", "PH", "PB", "OS", "OP", "OK")
CLASS_IMPORTANCE = {"RB": 1.00, "OB": 0.5518, "PF": 0.2896, "DE": 0.1622, "FS": 0.6419, "IS": 0.1847, "RO": 0.3559,
                    "IN": 0.3131, "AF": 0.0811, "BE": 0.2275, "FO": 0.2477, "GR": 0.0901, "PH": 0.4167, "PB": 0.4167,
                    "OS": 0.9009, "OP": 0.3829, "OK": 0.4396}


class SewerML(FileDatasetSource):
    """Sewer-ML defect codes as multi-label targets, with the F2-CIW class weights.

    Args:
        split_files: ``{train, val, test}`` -> CSV file relative to ``root``.
        image_dirs: globs (relative to ``root``) of the folders holding the images, searched in order.
        class_weights: ``{code: weight}`` for F2-CIW; ``None`` = the benchmark's weights.
        **common: the fields of every file-backed source (``FileDatasetSource``).
    """

    layout = "SewerML_Train.csv, SewerML_Val.csv (, a test CSV) and the image folders"

    def __init__(self, root: str | None = None, split_files: dict | None = None, image_dirs: list[str] | None = None,
                 class_weights: dict | None = None, **common):
        super().__init__(root, **common)
        split_files = dict(split_files or {"train": "SewerML_Train.csv", "val": "SewerML_Val.csv",
                                           "test": "SewerML_Test.csv"})
        require(set(split_files) == {"train", "val", "test"} and all(split_files.values()), "split_files",
                split_files, "must map train, val and test to CSV files")
        weights = dict(CLASS_IMPORTANCE if class_weights is None else class_weights)
        require(set(weights) == set(DEFECTS) and all(isinstance(w, (int, float)) and w >= 0 for w in weights.values())
                and sum(weights.values()) > 0, "class_weights", class_weights,
                f"must give a weight >= 0 to each of {', '.join(DEFECTS)}")
        self.split_files = split_files
        self.image_dirs = list(image_dirs or ["images", "images/*"])
        self.class_names = list(DEFECTS)
        self.class_weights = [float(weights[c]) for c in DEFECTS]

    def read_splits(self) -> dict[str, SplitFiles]:
        index = index_files(self.root, self.image_dirs)
        return {split: self._read(self.root / name, index) for split, name in self.split_files.items()}

    def _read(self, csv_path, index) -> SplitFiles:
        _, rows = read_csv(csv_path, ["Filename", *DEFECTS, "Defect"])
        paths, targets, origins = [], [], []
        for line_no, row in rows:
            where = f"{csv_path}:{line_no}"
            label = [binary_cell(row[c], c, where) for c in DEFECTS]
            defect = binary_cell(row["Defect"], "Defect", where)
            if defect != int(any(label)):
                raise DataError(f"{where}: Defect={defect} contradicts the defect columns "
                                f"({', '.join(c for c, v in zip(DEFECTS, label, strict=True) if v) or 'none set'})")
            paths.append(index.get(row["Filename"], self.root / self.image_dirs[0] / row["Filename"]))
            targets.append(label)
            origins.append(where)
        return SplitFiles(paths, np.array(targets, dtype=np.uint8).reshape(len(rows), len(DEFECTS)), origins,
                          str(csv_path))

