"""Users' own data: a CSV per split, or a folder per split with one sub-folder per class.

**CSV** (``CsvImages``): one file per split (``split_files``), a header, one row per image. The
``path_column`` holds the image path, relative to ``root / image_root``. Labels are
either one 0/1 column per class (``labels_column: null``: every other column is a class) or one
column of ``separator``-joined class names (``labels_column: labels``; an empty cell is a negative
image). Every split must have the same class columns; a name outside ``class_names`` is an error
naming the file and line.

**Folder** (``FolderImages``): ``root/<split>/<class>/<image>``; an image in several class folders
(same file name) has all those labels; images in ``negative_folder`` have none. Class names are the
training split's sub-folders (sorted); a val/test sub-folder naming another class is an error.
Only files with an image extension are read.

Both read only inside ``root``: a CSV row, split file, image root or split folder whose path leaves it (``..``,
an absolute path elsewhere) is an error naming it, unless ``allow_outside_root`` is true (a shared image store
beside the labels, say). The check is on the written path, so a ``root`` that is itself a symlink still works.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mlc.data.source import FileDatasetSource, SplitFiles, binary_cell, read_csv
from mlc.errors import DataError, require

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
DEFAULT_SPLITS = {"train": "train", "val": "val", "test": "test"}


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (absolute, or relative to the working folder) lies in ``root``, as written (no symlinks)."""
    base, mine = os.path.normpath(os.path.abspath(root)), os.path.normpath(os.path.abspath(path))
    return mine == base or mine.startswith(base.rstrip(os.sep) + os.sep)


def _check_inside(root: Path, path: Path, allowed: bool, where: str, what: str) -> None:
    if not allowed and not _inside(root, path):
        raise DataError(f"{where}: {what} {str(path)!r} leaves dataset.root {str(root)!r}; paths are relative to "
                        "it (set dataset.allow_outside_root=true to read outside it)")


def _split_map(value: dict | None, key: str, default: dict) -> dict:
    mapping = dict(value or default)
    require(set(mapping) == set(default) and all(mapping.values()), key, value, "must map train, val and test")
    return mapping


class CsvImages(FileDatasetSource):
    """Images listed in CSV files, labelled by 0/1 columns or by a column of class names.

    Args:
        split_files: ``{train, val, test}`` -> CSV file relative to ``root``.
        path_column: the column holding each image's path.
        labels_column: ``null`` for one 0/1 column per class, else the column of joined class names.
        separator: joins class names in ``labels_column``.
        class_names: the classes, in order; ``null`` = the training CSV's class columns (in header
            order) or the class names it uses (sorted).
        image_root: folder (relative to ``root``) that image paths are relative to.
        allow_outside_root: read paths that leave ``root`` (refused by default).
        **common: the fields of every file-backed source (``FileDatasetSource``).
    """

    layout = "one CSV per split (split_files) and the images they list"

    def __init__(self, root: str | None = None, split_files: dict | None = None, path_column: str = "path",
                 labels_column: str | None = None, separator: str = "|", class_names: list[str] | None = None,
                 image_root: str = ".", allow_outside_root: bool = False, **common):
        super().__init__(root, **common)
        require(isinstance(allow_outside_root, bool), "allow_outside_root", allow_outside_root, "must be true or false")
        self.allow_outside_root = allow_outside_root
        self.split_files = _split_map(split_files, "split_files",
                                      {"train": "train.csv", "val": "val.csv", "test": "test.csv"})
        require(bool(separator), "separator", separator, "must be a non-empty string")
        require(class_names is None or (len(class_names) >= 1 and len(set(class_names)) == len(class_names)),
                "class_names", class_names, "must be null or a list of distinct names")
        self.path_column, self.labels_column, self.separator = path_column, labels_column, separator
        self.image_root = self.root / image_root
        _check_inside(self.root, self.image_root, allow_outside_root, "dataset.image_root", "folder")
        for split, name in self.split_files.items():
            _check_inside(self.root, self.root / name, allow_outside_root, f"dataset.split_files.{split}", "file")
        self.class_names = list(class_names) if class_names else self._train_classes()

    def _train_classes(self) -> list[str]:
        """Class names from the training CSV: its class columns, or every name its label column uses."""
        header, rows = read_csv(self.root / self.split_files["train"], self._required())
        if self.labels_column is None:
            names = [c for c in header if c != self.path_column]
            if not names:
                raise DataError(f"{self.root / self.split_files['train']}:1: wrong header: no class column "
                                f"besides {self.path_column!r}")
            return names
        return sorted({n for _, row in rows for n in self._names(row[self.labels_column])})

    def _required(self) -> list[str]:
        return [self.path_column] + ([self.labels_column] if self.labels_column else [])

    def _names(self, cell: str) -> list[str]:
        return [n.strip() for n in cell.split(self.separator) if n.strip()]

    def read_splits(self) -> dict[str, SplitFiles]:
        return {split: self._read(self.root / name) for split, name in self.split_files.items()}

    def _read(self, csv_path: Path) -> SplitFiles:
        header, rows = read_csv(csv_path, self._required())
        if self.labels_column is None:
            columns = [c for c in header if c != self.path_column]
            if set(columns) != set(self.class_names):
                raise DataError(f"{csv_path}:1: wrong header: class columns {columns}, expected {self.class_names}")
        k = len(self.class_names)
        targets = np.zeros((len(rows), k), dtype=np.uint8)
        for i, (line_no, row) in enumerate(rows):
            where = f"{csv_path}:{line_no}"
            if self.labels_column is None:
                targets[i] = [binary_cell(row[c], c, where) for c in self.class_names]
                continue
            for name in self._names(row[self.labels_column]):
                if name not in self.class_names:
                    raise DataError(f"{where}: unknown class {name!r} (classes: {', '.join(self.class_names)})")
                targets[i, self.class_names.index(name)] = 1
        paths = [self.image_root / row[self.path_column] for _, row in rows]
        for (line_no, _), path in zip(rows, paths, strict=True):
            _check_inside(self.root, path, self.allow_outside_root, f"{csv_path}:{line_no}", "image path")
        return SplitFiles(paths, targets, [f"{csv_path}:{line_no}" for line_no, _ in rows], str(csv_path))


class FolderImages(FileDatasetSource):
    """Images sorted into class folders per split; an image in several class folders has several labels.

    Args:
        split_dirs: ``{train, val, test}`` -> folder relative to ``root``.
        negative_folder: the sub-folder of images with no class.
        allow_outside_root: read split folders that leave ``root`` (refused by default).
        **common: the fields of every file-backed source (``FileDatasetSource``).
    """

    layout = "root/<split>/<class>/<image> (negatives in root/<split>/<negative_folder>/)"

    def __init__(self, root: str | None = None, split_dirs: dict | None = None, negative_folder: str = "_negative",
                 allow_outside_root: bool = False, **common):
        super().__init__(root, **common)
        require(isinstance(allow_outside_root, bool), "allow_outside_root", allow_outside_root, "must be true or false")
        self.split_dirs = _split_map(split_dirs, "split_dirs", DEFAULT_SPLITS)
        for split, name in self.split_dirs.items():
            _check_inside(self.root, self.root / name, allow_outside_root, f"dataset.split_dirs.{split}", "folder")
        self.negative_folder = negative_folder
        train_dir = self.root / self.split_dirs["train"]
        require(train_dir.is_dir(), "split_dirs", self.split_dirs, f"{train_dir} is not a directory")
        self.class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and p.name != negative_folder)
        require(len(self.class_names) >= 1, "root", str(root), f"{train_dir} has no class folder")

    def read_splits(self) -> dict[str, SplitFiles]:
        return {split: self._read(self.root / name) for split, name in self.split_dirs.items()}

    def _read(self, split_dir: Path) -> SplitFiles:
        if not split_dir.is_dir():
            raise DataError(f"{split_dir}: split folder not found")
        labels: dict[str, set[str]] = {}
        first_path: dict[str, Path] = {}
        for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if folder.name != self.negative_folder and folder.name not in self.class_names:
                raise DataError(f"{folder}: unknown class folder {folder.name!r} "
                                f"(the training classes are {', '.join(self.class_names)})")
            for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
                labels.setdefault(image.name, set()).add(folder.name)
                first_path.setdefault(image.name, image)
        names = sorted(labels)
        targets = np.zeros((len(names), len(self.class_names)), dtype=np.uint8)
        for i, name in enumerate(names):
            if self.negative_folder in labels[name] and len(labels[name]) > 1:
                raise DataError(f"{first_path[name]}: {name} is in {self.negative_folder}/ and in class folder(s) "
                                f"{', '.join(sorted(labels[name] - {self.negative_folder}))}")
            for c in labels[name] - {self.negative_folder}:
                targets[i, self.class_names.index(c)] = 1
        paths = [first_path[n] for n in names]
        return SplitFiles(paths, targets, [str(p) for p in paths], str(split_dir))
