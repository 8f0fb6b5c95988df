"""Pascal VOC (2007, 2012) from its devkit layout: XML annotations, ``ImageSets/Main`` split lists.

``root`` is a ``VOCdevkit/VOC2007`` (or ``VOC2012``) folder holding ``Annotations/<id>.xml``,
``ImageSets/Main/<set>.txt`` and ``JPEGImages/<id>.jpg``. An image's label is the set of its
objects' ``<name>``s; **difficult objects count as positives** (the multi-label convention: the
object is there). Every VOC image has at least one object, so VOC has no negative images.

Splits are image-set names: VOC2007 has train / val / test. VOC2012's test annotations are not
public, so its standard multi-label protocol (Cole et al. 2021, the single-positive benchmark)
trains on ``train`` with ``val_fraction`` (0.2) of it held out for validation and tests on the
official ``val``: set ``image_sets.val`` to null to hold out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from mlc.data.source import FileDatasetSource, SplitFiles, holdout
from mlc.errors import DataError, require

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


class PascalVOC(FileDatasetSource):
    """Pascal VOC classification labels from the detection annotations.

    Args:
        image_sets: ``{train, val, test}`` -> name of a list in ``ImageSets/Main`` (e.g. ``trainval``);
            ``val: null`` holds ``val_fraction`` of the train list out for validation.
        val_fraction, val_seed: the hold-out (``mlc.data.source.holdout``; Cole et al.: 0.2, 1200).
        **common: the fields of every file-backed source (``FileDatasetSource``).
    """

    layout = "a VOCdevkit/VOC20xx folder with Annotations/, ImageSets/Main/ and JPEGImages/"

    def __init__(self, root: str | None = None, image_sets: dict | None = None, val_fraction: float = 0.2,
                 val_seed: int = 1200, **common):
        super().__init__(root, **common)
        image_sets = dict(image_sets or {"train": "train", "val": "val", "test": "test"})
        require(set(image_sets) == {"train", "val", "test"} and image_sets["train"] and image_sets["test"],
                "image_sets", image_sets, "must map train, val and test to ImageSets/Main list names (val may be null)")
        require(isinstance(val_fraction, float) and 0.0 < val_fraction < 1.0, "val_fraction", val_fraction,
                "must be in (0, 1)")
        self.image_sets, self.val_fraction, self.val_seed = image_sets, val_fraction, int(val_seed)
        self.class_names = list(VOC_CLASSES)

    def read_splits(self) -> dict[str, SplitFiles]:
        splits = {split: self._read_set(name) for split, name in self.image_sets.items() if name}
        if not self.image_sets["val"]:
            train, val = holdout(len(splits["train"]), self.val_fraction, self.val_seed)
            splits["train"], splits["val"] = splits["train"].take(train), splits["train"].take(val)
        return splits

    def _read_set(self, name: str) -> SplitFiles:
        listing = self.root / "ImageSets" / "Main" / f"{name}.txt"
        if not listing.is_file():
            raise DataError(f"{listing}: image set '{name}' not found")
        paths, rows, origins = [], [], []
        for line_no, line in enumerate(listing.read_text().splitlines(), start=1):
            image_id = line.split()[0] if line.strip() else ""
            if not image_id:
                continue
            xml_file = self.root / "Annotations" / f"{image_id}.xml"
            if not xml_file.is_file():
                raise DataError(f"{listing}:{line_no}: no annotation file {xml_file}")
            rows.append(self._labels(xml_file))
            paths.append(self.root / "JPEGImages" / f"{image_id}.jpg")
            origins.append(f"{listing}:{line_no}")
        targets = np.array(rows, dtype=np.uint8).reshape(len(rows), len(VOC_CLASSES))
        return SplitFiles(paths, targets, origins, str(listing))

    def _labels(self, xml_file: Path) -> np.ndarray:
        text = xml_file.read_text()
        try:
            tree = ET.fromstring(text)
        except ET.ParseError as err:
            raise DataError(f"{xml_file}:{err.position[0]}: not valid XML ({err})") from None
        label = np.zeros(len(VOC_CLASSES), dtype=np.uint8)
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in VOC_CLASSES:
                raise DataError(f"{xml_file}:{_line_of(text, name)}: unknown class {name!r} "
                                f"(VOC classes: {', '.join(VOC_CLASSES)})")
            label[VOC_CLASSES.index(name)] = 1  # difficult or not: the object is present
        return label


def _line_of(text: str, name: str) -> int:
    """Line of the first ``<name>`` element holding ``name`` (ElementTree keeps no line numbers)."""
    at = text.find(f">{name}<") if name else text.find("<name")
    return text.count("\n", 0, max(at, 0)) + 1
