"""Fixture writers for the dataset tests: each real on-disk format, a handful of tiny generated images.

Nothing binary lives in git: every test writes its dataset into a temporary folder in the format's
real layout (VOC devkit XML, COCO instances JSON, ChestX-ray14 / Sewer-ML CSVs, user CSV/folders).
The helpers are shared by ``tests/test_data_<format>.py``; this module holds no test of its own.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import run_cli

# One epoch on a fixture takes well under a second: tiny images, tiny batches, no tracking store.
E2E = ["trainer.max_epochs=1", "trainer.batch_size=4", "trainer.eval_batch_size=8", "tracking=none",
       "dataset.image_size=16", "dataset.decode_workers=1"]


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 20), mode: str = "RGB") -> Path:
    """A small noisy image (JPEG or PNG by suffix) with a bright block whose place depends on ``seed``."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 80, size=(size[1], size[0], channels), dtype=np.uint8)
    y, x = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    pixels[y:y + size[1] // 2, x:x + size[0] // 2] = rng.integers(150, 255, size=channels, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path)
    return path


def truncate(path: Path) -> None:
    """Cut a file in half, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_voc(root: Path, image_sets: dict[str, list[str]], objects: dict[str, list[tuple[str, int]]]) -> Path:
    """A VOCdevkit/VOC20xx folder: XML per image (objects as (name, difficult)), Main lists, JPEGs."""
    for i, (image_id, objs) in enumerate(sorted(objects.items())):
        xml = ["<annotation>", "\t<folder>VOC</folder>", f"\t<filename>{image_id}.jpg</filename>",
               "\t<size><width>24</width><height>20</height><depth>3</depth></size>"]
        for name, difficult in objs:
            xml += ["\t<object>", f"\t\t<name>{name}</name>", "\t\t<pose>Unspecified</pose>",
                    "\t\t<truncated>0</truncated>", f"\t\t<difficult>{difficult}</difficult>",
                    "\t\t<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>", "\t</object>"]
        xml.append("</annotation>")
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text("\n".join(xml) + "\n")
        write_image(root / "JPEGImages" / f"{image_id}.jpg", seed=i)
    for name, ids in image_sets.items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def write_coco_set(root: Path, set_name: str, images: list[list[str]], categories: list[str], first_id: int = 1,
                   seed: int = 0) -> Path:
    """``annotations/instances_<set>.json`` plus ``<set>/`` JPEGs; image i holds one annotation per
    category name in ``images[i]`` (an empty list: an image without annotation)."""
    cats = [{"id": 10 + 3 * k, "name": name, "supercategory": "thing"} for k, name in enumerate(categories)]
    cat_id = {c["name"]: c["id"] for c in cats}
    imgs, anns = [], []
    for i, names in enumerate(images):
        image_id = first_id + i
        file_name = f"{image_id:012d}.jpg"
        write_image(root / set_name / file_name, seed=seed + i)
        imgs.append({"id": image_id, "file_name": file_name, "width": 24, "height": 20})
        for name in names:
            anns.append({"id": len(anns) + 1000 * first_id, "image_id": image_id, "category_id": cat_id[name],
                         "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0})
    path = root / "annotations" / f"instances_{set_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": imgs, "annotations": anns, "categories": cats}))
    return path


def train_on(option: str, root: Path, outputs: Path, cache: Path, *extra: str):
    """``python -m mlc.cli.train dataset=<option> dataset.root=<root>`` for one small epoch."""
    return run_cli([f"dataset={option}", f"dataset.root={root}", *E2E, *extra], outputs, cache, timeout=240)

