"""Images on disk, decoded once: the decode cache and the split class of every file-backed dataset.

Decoding a JPEG costs far more than a CPU training step of a small model can afford per image, and
real datasets are read for many epochs. So each split's images are decoded **once** with Pillow
(RGB, resized to ``image_size`` × ``image_size``, the reference's squash resize) into one uint8
array (N, S, S, 3), cached as an ``.npy`` file keyed by a hash of (file paths, their sizes and
modification times, ``image_size``, decoder version) and memory-mapped afterwards: an epoch then
reads pixels from the page cache, augments them with albumentations and normalises them.

- A cache write is atomic (temporary file, then ``os.replace``; the sidecar ``.json`` that makes it
  valid is written last), so concurrent ranks or trials never read half a file; an unreadable or
  inconsistent cache is decoded again.
- An image Pillow cannot decode (corrupt, truncated, not an image) is recorded with its reason in
  the sidecar, so a later run reports (or skips) it without decoding again.
- Augmentation randomness is a function of (seed, epoch, index) alone: ``FileImages`` reseeds its
  pipeline per item, each transform from its own stream, so an item is the same whichever
  DataLoader worker draws it and a resumed run replays the same augmentations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlc.data.base import DatasetStats, MultiLabelDataset
from mlc.errors import DataError

log = logging.getLogger(__name__)

DECODER_VERSION = 1  # bump whenever decoding changes, so stale caches are not reused
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The most pixels one image may decode to (after JPEG's draft scaling): 40 megapixels are 120 MB of RGB per
# decode thread. Pillow's own bomb limit (179 MP) would let 4 threads hold ~2 GB; real photos, X-rays and sewer
# frames are far below either. A larger image is refused with its size (``max_image_pixels`` raises it).
MAX_IMAGE_PIXELS = 40_000_000


def decode_image(path: Path, size: int, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """One image as uint8 (size, size, 3) RGB. JPEGs are decoded at the smallest DCT scale that is
    still at least ``size`` (Pillow's ``draft``), which is several times faster than a full decode;
    grey-scale images (X-rays) get their channel repeated, as the reference's ``Grayscale(3)``. An image
    that would decode to more than ``max_pixels`` pixels is refused from its header, before any decoding."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        width, height = img.size  # what the decode will allocate (after the draft scaling)
        if width * height > max_pixels:
            raise ValueError(f"{width}x{height} = {width * height / 1e6:.1f} megapixels to decode, above "
                             f"max_image_pixels = {max_pixels / 1e6:g} M (dataset.max_image_pixels raises it)")
        rgb = img.convert("RGB")  # forces the decode: a truncated or corrupt file raises here
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def cache_key(paths: Sequence[Path], size: int, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """Hash of what the decoded array depends on: each file's path, size and mtime, the side, the decoder (and
    the pixel bound when it is not the default, since it decides which images are refused)."""
    bound = "" if max_pixels == MAX_IMAGE_PIXELS else f":max{max_pixels}"
    digest = hashlib.sha1(f"v{DECODER_VERSION}:{size}{bound}".encode())
    for path in paths:
        st = os.stat(path)
        digest.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def decoded_images(paths: Sequence[Path], size: int, cache_dir: str | Path | None, workers: int = 4,
                   max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, dict[int, str]]:
    """All ``paths`` decoded: (uint8 array (N, size, size, 3), {row: reason} for undecodable files).

    With a ``cache_dir`` the array is memory-mapped from the cache (decoded and written on a miss);
    without one it is decoded into memory. Rows of undecodable files are left black.
    """
    if cache_dir is None:
        pixels = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
        return pixels, _decode_into(pixels, paths, size, workers, max_pixels)
    key = cache_key(paths, size, max_pixels)
    array_file = Path(cache_dir) / f"images-{key}-{size}px.npy"
    cached = _read_cache(array_file, len(paths), size)
    if cached is not None:
        return cached
    array_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=array_file.parent, prefix=array_file.stem, suffix=".tmp.npy")
    os.close(fd)
    try:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        errors = _decode_into(pixels, paths, size, workers, max_pixels)
        pixels.flush()
        del pixels
        os.replace(tmp, array_file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _write_json(array_file.with_suffix(".json"), {"count": len(paths), "size": size,
                                                  "errors": {str(i): e for i, e in errors.items()}})
    return np.load(array_file, mmap_mode="r"), errors


def _decode_into(pixels: np.ndarray, paths: Sequence[Path], size: int, workers: int,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> dict[int, str]:
    """Decode every path into its row (threads: Pillow releases the GIL while decoding and resizing)."""
    started, errors = time.perf_counter(), {}
    log.info("decoding %d images at %dx%d (once; cached afterwards)", len(paths), size, size)

    def one(i: int) -> None:
        try:
            pixels[i] = decode_image(paths[i], size, max_pixels)
        except Exception as err:  # any failure of the decoder means the file is not a usable image
            errors[i] = f"{type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(one, range(len(paths))):
            pass
    log.info("decoded %d images in %.1f s (%d unreadable)", len(paths), time.perf_counter() - started,
             len(errors))
    return errors


def _read_cache(array_file: Path, count: int, size: int) -> tuple[np.ndarray, dict[int, str]] | None:
    meta_file = array_file.with_suffix(".json")
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        pixels = np.load(array_file, mmap_mode="r")
        if meta["count"] != count or meta["size"] != size or pixels.shape != (count, size, size, 3) \
                or pixels.dtype != np.uint8:
            raise ValueError(f"holds {pixels.shape} {pixels.dtype}, expected ({count}, {size}, {size}, 3) uint8")
        return pixels, {int(i): str(e) for i, e in meta["errors"].items()}
    except Exception as err:  # torn, truncated or foreign: the data is derived, so decode again
        log.warning("image cache %s is unreadable (%s); decoding again", array_file, err)
        return None


def _write_json(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.json")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def seed_pipeline(pipeline, entropy: Sequence[int]) -> None:
    """Seed every node of an albumentations pipeline from ``entropy`` (e.g. (seed, epoch, index)).

    Each node gets its own stream: albumentations' ``set_random_seed`` hands the *same* seed to every
    transform, which would make e.g. two p = 0.5 flips always fire together. Parents are seeded
    before their children (a compose's own seeding propagates downwards and is then overridden).
    """
    nodes = list(_nodes(pipeline))
    for node, seed in zip(nodes, np.random.SeedSequence(list(entropy)).generate_state(len(nodes)), strict=True):
        node.set_random_seed(int(seed))


def _is_identity(pipeline) -> bool:
    """No pipeline, or a compose without transforms (the eval default): items skip augmentation."""
    return pipeline is None or (hasattr(pipeline, "transforms") and len(pipeline.transforms) == 0)


def _nodes(node):
    yield node
    for child in getattr(node, "transforms", ()):
        yield from _nodes(child)


class FileImages(MultiLabelDataset):
    """A split of decoded images: rows of a (memory-mapped) pixel array plus their labels.

    Items are ``{"image": (3, S, S) float, "target": (K,) float, "index": int}``: the pixels of row
    ``rows[index]`` through the albumentations ``transform`` (seeded by (seed, epoch, index)), then
    scaled to [0, 1] and normalised by ``mean``/``std``. ``targets`` are the labels the loss sees;
    ``clean_targets`` the true labels (they differ under the single-positive protocol, where
    ``targets`` holds the observed positive and ``clean_targets`` is for analysis only).
    """

    def __init__(self, pixels: np.ndarray, rows: np.ndarray, targets: np.ndarray, class_names: list[str],
                 mean: Sequence[float], std: Sequence[float], transform=None, seed: int = 0,
                 clean_targets: np.ndarray | None = None, skipped: int = 0, ids: Sequence[str] | None = None):
        if len(rows) != len(targets) or (ids is not None and len(ids) != len(targets)):
            raise ValueError(f"{len(rows)} rows but {len(targets)} label rows")
        self.pixels = pixels
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = np.ascontiguousarray(targets, dtype=np.uint8)
        self.clean_targets = self.targets if clean_targets is None else np.ascontiguousarray(clean_targets,
                                                                                             dtype=np.uint8)
        self.class_names = list(class_names)
        self.transform = None if _is_identity(transform) else transform
        self.seed, self.epoch, self.skipped = int(seed), 0, int(skipped)
        self.ids = [str(i) for i in ids] if ids is not None else None  # e.g. image paths, for scores files
        self.size = pixels.shape[1]
        self._offset = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        self._scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0)
        self._targets_t = torch.from_numpy(self.targets).float()

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch: the epoch is part of every item's augmentation seed."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        image = self.pixels[self.rows[index]]
        if self.transform is not None:
            seed_pipeline(self.transform, (self.seed, self.epoch, int(index)))
            image = self.transform(image=image)["image"]
            if image.shape != (self.size, self.size, 3):
                raise DataError(f"the augmentation pipeline turned a {self.size}x{self.size}x3 image into "
                                f"{'x'.join(map(str, image.shape))}; every item of a batch must have the dataset's "
                                f"image_size (add a Resize/crop to image_size at the end of the pipeline)")
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # a copy: the map stays read-only
        return {"image": chw.float().sub_(self._offset).mul_(self._scale), "target": self._targets_t[index],
                "index": index}

    def stats(self) -> DatasetStats:
        return DatasetStats.from_targets(self.targets, self.class_names, skipped=self.skipped)

    def __getstate__(self) -> dict:
        """Pickle (DataLoader workers under spawn) the cache file's name, not the mapped pixels."""
        state = self.__dict__.copy()
        if isinstance(self.pixels, np.memmap) and self.pixels.filename:
            state["pixels"] = ("memmap", self.pixels.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["pixels"], tuple):
            state["pixels"] = np.load(state["pixels"][1], mmap_mode="r")
        self.__dict__.update(state)
