"""File-backed dataset sources: the fields they share, the one load path, and helpers for the formats.

A format module (``coco``, ``voc``, ``chestxray``, ``sewerml``, ``csv_folder``) only says how its
annotations list each split: ``read_splits`` returns, per split, the image paths, the label matrix
and where each image was listed (``file:line``). Everything else happens here, identically for
every format:

1. the listing is checked: an empty split, or an image file that does not exist, is a ``DataError``
   naming the annotation file and line (or, with ``skip_bad_images``, a skipped count);
2. images are decoded once and cached (``mlc.data.images``); an undecodable image is an error
   naming its file and line, or skipped and counted;
3. the dataset controls (``mlc.data.controls``) pick rows and labels from the remaining images;
4. the split is a ``FileImages`` with the train or eval albumentations pipeline.

Constructors stay cheap (``check_config`` builds the source before any compute): they validate
their fields and fix ``class_names``; annotations are read on the first ``load``.
"""

from __future__ import annotations

import csv
import logging
import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlc.data.base import SPLITS, DatasetSource, DatasetStats
from mlc.data.controls import ControlResult, Controls
from mlc.data.images import IMAGENET_MEAN, IMAGENET_STD, MAX_IMAGE_PIXELS, FileImages, decoded_images
from mlc.errors import DataError, config_scope, require

log = logging.getLogger(__name__)


@dataclass
class SplitFiles:
    """One split as its annotations list it: image paths, labels (N, K uint8), and for each image the
    place that listed it (``file:line``, or a JSON entry), which every error about it names."""

    paths: list[Path]
    targets: np.ndarray
    origins: list[str]
    listing: str  # the annotation file(s) defining the split, named when the split is empty

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: Sequence[int]) -> SplitFiles:
        rows = [int(r) for r in rows]
        return SplitFiles([self.paths[r] for r in rows], self.targets[rows], [self.origins[r] for r in rows],
                          self.listing)


class FileDatasetSource(DatasetSource):
    """Base of the sources that read a dataset's real on-disk format (fields shared by all of them).

    Args:
        root: the dataset's top folder (required; each format documents its layout).
        image_size: side in pixels images are decoded and resized to (once, cached).
        mean, std: per-channel normalisation of [0, 1] pixels.
        train_transform, eval_transform: albumentations pipelines (e.g. ``albumentations.Compose``)
            on uint8 (S, S, 3) images; they must keep the size. ``None`` = no augmentation.
        negative_ratio, negative_ratio_scope, longtail, longtail_*, single_positive,
        single_positive_seed: the dataset controls (``mlc.data.controls.Controls``).
        seed: data seed (hold-out splits, negative-ratio and long-tail draws).
        augment_seed: seed of the per-item augmentation streams (the YAML ties it to the training
            seed, so training seeds vary the augmentations and the data stays fixed).
        skip_bad_images: leave missing or undecodable images out (counted in the split's stats as
            ``skipped`` and logged) instead of stopping with an error naming them.
        cache_dir: where decoded images are cached (``None``: decode into memory every run).
        decode_workers: threads decoding images on a cache miss.
        max_image_pixels: the most pixels one image may decode to (``images.MAX_IMAGE_PIXELS``, 40 M);
            a larger one is an undecodable image (an error naming it, or skipped with ``skip_bad_images``).
    """

    layout = "see the dataset's YAML for the expected layout"  # each format says what `root` holds

    def __init__(self, root: str | None = None, image_size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, train_transform=None, eval_transform=None,
                 negative_ratio: float | None = None, negative_ratio_scope: str = "all", longtail: bool = False,
                 longtail_alpha: float = 6.0, longtail_max: int = 800, longtail_min: int = 1,
                 longtail_tail: float = 0.99, single_positive: bool = False, single_positive_seed: int = 1200,
                 seed: int = 0, augment_seed: int = 0, skip_bad_images: bool = False, cache_dir: str | None = None,
                 decode_workers: int = 4, max_image_pixels: int = MAX_IMAGE_PIXELS):
        require(root is not None and str(root) != "", "root", root,
                f"is required: the folder holding the dataset ({self.layout})")
        self.root = Path(str(root)).expanduser()
        require(self.root.is_dir(), "root", str(root), f"is not a directory (expected {self.layout})")
        require(_int(image_size) and image_size >= 8, "image_size", image_size, "must be an integer >= 8")
        require(len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std), "std", list(std),
                "mean and std need 3 entries, std > 0")
        for key, value in (("train_transform", train_transform), ("eval_transform", eval_transform)):
            require(value is None or (callable(value) and hasattr(value, "set_random_seed")), key, value,
                    "must be an albumentations pipeline (e.g. albumentations.Compose; it is seeded per item) or null")
        require(isinstance(skip_bad_images, bool), "skip_bad_images", skip_bad_images, "must be true or false")
        require(_int(augment_seed), "augment_seed", augment_seed, "must be an integer")
        require(_int(decode_workers) and decode_workers >= 1, "decode_workers", decode_workers, "must be >= 1")
        require(_int(max_image_pixels) and max_image_pixels >= image_size * image_size, "max_image_pixels",
                max_image_pixels, f"must be an integer >= image_size² ({image_size * image_size})")
        self.max_image_pixels = int(max_image_pixels)
        self.controls = Controls(negative_ratio, negative_ratio_scope, longtail, longtail_alpha, longtail_max,
                                 longtail_min, longtail_tail, single_positive, single_positive_seed, seed)
        self.image_size, self.mean, self.std = int(image_size), tuple(mean), tuple(std)
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.seed, self.augment_seed = int(seed), int(augment_seed)
        self.skip_bad_images = skip_bad_images
        self.cache_dir = cache_dir
        self.decode_workers = int(decode_workers)
        self._listed: dict[str, SplitFiles] | None = None
        self._checked: dict[str, tuple[SplitFiles, int]] = {}

    @abstractmethod
    def read_splits(self) -> dict[str, SplitFiles]:
        """Every split as the annotations list it (paths may not exist yet: that is checked after)."""

    # -- the load path ------------------------------------------------------------------------------

    def files(self, split: str) -> tuple[SplitFiles, int]:
        """The split's listed images that exist, and how many listed ones were missing (skipped)."""
        require(split in SPLITS, "split", split, f"must be one of {', '.join(SPLITS)}")
        if split not in self._checked:
            if self._listed is None:
                self._listed = self.read_splits()
            listed = self._listed[split]
            if len(listed) == 0:
                raise DataError(f"{listed.listing}: the '{split}' split lists no images (empty split)")
            missing = [i for i, path in enumerate(listed.paths) if not path.is_file()]
            if missing and not self.skip_bad_images:
                raise DataError(_first_of([f"{listed.origins[i]}: image not found: {listed.paths[i]}"
                                           for i in missing], "missing images", "skip_bad_images=true leaves them out"))
            if missing:
                log.warning("%s: skipped %d missing image(s), e.g. %s: %s", split, len(missing),
                            listed.origins[missing[0]], listed.paths[missing[0]])
            kept = np.setdiff1d(np.arange(len(listed)), missing)
            if len(kept) == 0:
                raise DataError(f"{listed.listing}: every image of the '{split}' split is missing")
            self._checked[split] = (listed.take(kept), len(missing))
        return self._checked[split]

    def load(self, split: str) -> FileImages:
        files, missing = self.files(split)
        pixels, errors = decoded_images(files.paths, self.image_size, self.cache_dir, self.decode_workers,
                                        self.max_image_pixels)
        if errors and not self.skip_bad_images:
            raise DataError(_first_of([f"{files.origins[i]}: cannot decode {files.paths[i]} ({errors[i]})"
                                       for i in sorted(errors)], "unreadable images",
                                      "skip_bad_images=true leaves them out"))
        if errors:
            first = min(errors)
            log.warning("%s: skipped %d unreadable image(s), e.g. %s: %s (%s)", split, len(errors),
                        files.origins[first], files.paths[first], errors[first])
        good = np.setdiff1d(np.arange(len(files)), list(errors))
        if len(good) == 0:
            raise DataError(f"{files.listing}: no image of the '{split}' split can be decoded")
        result = self._controlled(files.targets[good], split, files.listing)
        if len(result.indices) < len(good):
            log.info("%s: the dataset controls kept %d of %d images (negative ratio %.4f)", split,
                     len(result.indices), len(good), float((result.targets.sum(axis=1) == 0).mean()))
        transform = self.train_transform if split == "train" else self.eval_transform
        rows = good[result.indices]
        return FileImages(pixels, rows, result.targets, self.class_names, self.mean, self.std,
                          transform, seed=self.augment_seed, clean_targets=result.clean_targets,
                          skipped=missing + len(errors), ids=[str(files.paths[i]) for i in rows])

    def label_stats(self, split: str) -> DatasetStats:
        """The split's statistics from its annotations alone (no image decoded): missing files are
        counted, but a corrupt image is only found by ``load``."""
        files, missing = self.files(split)
        result = self._controlled(files.targets, split, files.listing)
        return DatasetStats.from_targets(result.targets, self.class_names, skipped=missing)

    def _controlled(self, targets: np.ndarray, split: str, listing: str) -> ControlResult:
        with config_scope("dataset"):
            result = self.controls.apply(targets, split)
        if len(result.indices) == 0:  # only single_positive can drop everything: the ratio would fail first
            raise DataError(f"{listing}: no '{split}' image has a positive label to keep (single_positive)")
        return result


# -- helpers for the formats --------------------------------------------------------------------------

def read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV file's header and its (line number, row) pairs; blank lines are ignored.

    A missing file, a header without a required column, or a row with the wrong number of fields
    is a ``DataError`` naming the file and line.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}:1: wrong header: no column {', '.join(map(repr, missing))} "
                            f"(the header is {', '.join(header) or 'empty'})")
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataError(f"{path}:{reader.line_num}: {len(values)} fields, but the header has {len(header)}")
            rows.append((reader.line_num, dict(zip(header, (v.strip() for v in values), strict=True))))
    return header, rows


def binary_cell(value: str, column: str, where: str) -> int:
    """A 0/1 label cell (``1``, ``0``, ``1.0``, ...); anything else is an error naming the line and column."""
    try:
        number = float(value)
    except ValueError:
        number = None
    if number not in (0.0, 1.0):
        raise DataError(f"{where}: column {column} is {value!r}, expected 0 or 1")
    return int(number)


def index_files(root: Path, patterns: Sequence[str]) -> dict[str, Path]:
    """File name -> path of every file in the folders matching ``patterns`` (globs relative to
    ``root``, searched in order; the first folder holding a name wins). For datasets whose
    annotations give bare file names while the images are spread over several folders."""
    index: dict[str, Path] = {}
    for pattern in patterns:
        for folder in sorted(root.glob(pattern)):
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_file():
                            index.setdefault(entry.name, Path(entry.path))
    return index


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` items into (kept, held out) index arrays, both ascending; round(fraction·n) are held out.

    Cole et al.'s ``generate_split``: one ``np.random.RandomState(seed)`` permutation, the last
    ``round(fraction·n)`` positions are held out (their reference seed is 1200, fraction 0.2).
    """
    n_held = int(np.round(fraction * n))
    order = np.random.RandomState(seed).permutation(n)
    return np.sort(order[:n - n_held]), np.sort(order[n - n_held:])


def _first_of(problems: list[str], what: str, hint: str) -> str:
    more = f" (and {len(problems) - 1} more {what}; {hint})" if len(problems) > 1 else f" ({hint})"
    return problems[0] + more


def _int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
