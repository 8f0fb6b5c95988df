"""``digits``: the built-in benchmark — multi-label scenes composed from real handwritten digits.

Source images are scikit-learn's handwritten digits (``load_digits``: 1,797 real 8×8 scans shipped
with the package, no download). Each scene is a canvas (default 32×32, 3 channels) holding a few
digits at random scale and position, in random colours, possibly overlapping, over a tinted
background with pixel noise. Digits ``0..K−1`` are the classes; ``K..9`` are *distractor* objects
(a 5 next to a 6, a 1 next to a 7, a 4 next to a 9 make them hard to tell apart at low resolution).
A scene whose objects are all distractors, or which is empty, is a **negative** instance.

Why a generator rather than a fixed file: the negative ratio is the variable the any-class loss is
about, so it is a knob (``negative_ratio``, met *exactly* in every split). The source digit scans are
split disjointly between train/val/test (60/20/20 per digit), so no scan seen in training appears in
evaluation. Class frequencies follow a Zipf profile (``class_imbalance``) so that class balancing
matters. The same parameters and ``seed`` always give identical arrays; they are cached under
``cache_dir`` keyed by a hash of every parameter that changes the data.

The dataset controls of the file-backed sources (``mlc.data.controls.Controls``) apply too, with the
same fields: ``longtail`` subsamples the training split to a Pareto class profile (every negative
scene is kept, so the training negative ratio rises above ``negative_ratio``), ``single_positive``
keeps one observed positive per training scene (Cole et al. 2021; ``clean_targets`` keeps the true
labels) and drops the negative training scenes. They pick and relabel rows of the generated split
when it is loaded, so they are not part of the cache key; val and test are never changed by them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from mlc.data.base import SPLITS, DatasetSource, DatasetStats, InMemoryImages
from mlc.data.controls import ControlResult, Controls, pareto_profile
from mlc.errors import ConfigError, DataError, config_scope, require

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever the rendering changes, so stale caches are not reused
SOURCE_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


class DigitImages(InMemoryImages):
    """A loaded digits split: ``targets`` are the labels the loss sees, ``clean_targets`` the scenes'
    true labels (they differ under ``single_positive``: analysis only) and ``rows`` the kept scenes'
    indices in the generated split (all of them unless a control dropped some)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, class_names: list[str], mean: tuple[float, ...],
                 std: tuple[float, ...], clean_targets: np.ndarray | None = None, rows: np.ndarray | None = None):
        super().__init__(images, targets, class_names, mean, std)
        self.clean_targets = self.targets if clean_targets is None else np.ascontiguousarray(clean_targets,
                                                                                             dtype=np.uint8)
        self.rows = np.arange(len(self.targets)) if rows is None else np.asarray(rows, dtype=np.int64)


class DigitScenes(DatasetSource):
    """Generator and cache of the ``digits`` scenes; ``load(split)`` gives an in-memory split.

    Args:
        num_classes: K ∈ [1, 10]; digits 0..K−1 are classes, K..9 distractors.
        image_size: canvas side in pixels.
        train_size, val_size, test_size: number of scenes per split.
        negative_ratio: exact fraction of negative scenes generated in every split, in [0, 1]. The
            controls below then change the training split's: ``longtail`` keeps every negative scene,
            ``single_positive`` drops them all (the ratio then holds in val/test only, like the file
            datasets' ``negative_ratio_scope=eval``), so it must leave a positive training scene.
        objects_per_scene: [min, max] number of digits on a canvas (min 0 allows empty negatives).
        digit_size: [min, max] side in pixels of a rendered digit.
        max_overlap: largest fraction of a digit's box another digit may cover (rejection sampling).
        class_object_prob: probability that an extra object in a positive scene is a class digit
            (otherwise a distractor); controls how many scenes carry several labels.
        class_imbalance: Zipf exponent of class frequencies (0 = uniform; 1 = class 0 is K× class K−1).
        noise_std: standard deviation of the Gaussian pixel noise (pixel range [0, 1]).
        seed: data seed (independent of the training seed, so seeds of a run vary only the model); also
            seeds the long-tail draw.
        cache_dir: where generated arrays are cached (``None``: no cache).
        mean, std: per-channel normalisation applied when a split is loaded.
        longtail, longtail_alpha, longtail_max, longtail_min, longtail_tail: subsample the training
            split to the Pareto class profile ``pareto_profile(num_classes, ...)`` (VOC-LT / COCO-LT).
            The defaults give [800, 187, 57, 21, 9, 4] for 6 classes, which the default 4,000 scenes
            can serve (the greedy draw reaches about [657, 169, 50, 21, 9, 4]: co-occurring classes
            move each other's counts); a profile the generated split cannot serve (its k-th most frequent class has
            fewer scenes than the k-th target) is a ``ConfigError`` on ``longtail_max`` when loaded.
        single_positive, single_positive_seed: one observed positive per training scene, the rest 0 =
            unknown (Cole et al. 2021, ``mlc.data.controls.single_positive``).
    """

    def __init__(self, num_classes: int = 6, image_size: int = 32, train_size: int = 4000,
                 val_size: int = 1000, test_size: int = 1000, negative_ratio: float = 0.5,
                 objects_per_scene: tuple[int, int] = (1, 3), digit_size: tuple[int, int] = (12, 20),
                 max_overlap: float = 0.3, class_object_prob: float = 0.5, class_imbalance: float = 1.0,
                 noise_std: float = 0.15, seed: int = 0, cache_dir: str | None = None,
                 mean: tuple[float, ...] = (0.5, 0.5, 0.5), std: tuple[float, ...] = (0.25, 0.25, 0.25),
                 longtail: bool = False, longtail_alpha: float = 6.0, longtail_max: int = 800, longtail_min: int = 1,
                 longtail_tail: float = 0.99, single_positive: bool = False, single_positive_seed: int = 1200):
        objects_per_scene, digit_size = tuple(objects_per_scene), tuple(digit_size)
        require(isinstance(num_classes, int) and 1 <= num_classes <= 10, "num_classes", num_classes,
                "must be an integer in [1, 10] (digits 0..K-1 are the classes)")
        require(isinstance(image_size, int) and image_size >= 8, "image_size", image_size, "must be an integer >= 8")
        for key, size in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            require(isinstance(size, int) and size >= 1, key, size, "must be a positive integer")
        require(_number(negative_ratio) and 0.0 <= negative_ratio <= 1.0, "negative_ratio", negative_ratio,
                "must be in [0, 1]")
        require(len(objects_per_scene) == 2 and 0 <= objects_per_scene[0] <= objects_per_scene[1] <= 8,
                "objects_per_scene", list(objects_per_scene), "must be [min, max] with 0 <= min <= max <= 8")
        require(objects_per_scene[1] >= 1, "objects_per_scene", list(objects_per_scene),
                "max must be >= 1 (a positive scene needs an object)")
        require(len(digit_size) == 2 and 4 <= digit_size[0] <= digit_size[1] <= image_size, "digit_size",
                list(digit_size), f"must be [min, max] with 4 <= min <= max <= image_size ({image_size})")
        require(_number(max_overlap) and 0.0 <= max_overlap <= 1.0, "max_overlap", max_overlap, "must be in [0, 1]")
        require(_number(class_object_prob) and 0.0 <= class_object_prob <= 1.0, "class_object_prob",
                class_object_prob, "must be in [0, 1]")
        require(_number(class_imbalance) and class_imbalance >= 0, "class_imbalance", class_imbalance, "must be >= 0")
        require(_number(noise_std) and noise_std >= 0, "noise_std", noise_std, "must be >= 0")
        require(len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std), "std", list(std),
                "mean and std need 3 entries, std > 0")
        # The generated ratio is digits' own (exact per split); the controls only pick and relabel rows.
        self.controls = Controls(negative_ratio=None, longtail=longtail, longtail_alpha=longtail_alpha,
                                 longtail_max=longtail_max, longtail_min=longtail_min, longtail_tail=longtail_tail,
                                 single_positive=single_positive, single_positive_seed=single_positive_seed, seed=seed)
        require(not single_positive or round(negative_ratio * train_size) < train_size, "negative_ratio",
                negative_ratio, f"makes all {train_size} training scenes negative, and single_positive drops every "
                "training scene without a positive; use a lower ratio")
        self.params = dict(num_classes=num_classes, image_size=image_size,
                           sizes=dict(train=train_size, val=val_size, test=test_size),
                           negative_ratio=float(negative_ratio), objects_per_scene=list(objects_per_scene),
                           digit_size=list(digit_size), max_overlap=float(max_overlap),
                           class_object_prob=float(class_object_prob), class_imbalance=float(class_imbalance),
                           noise_std=float(noise_std), seed=int(seed), version=GENERATOR_VERSION)
        self.class_names = [str(d) for d in range(num_classes)]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.mean, self.std = tuple(mean), tuple(std)
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def cache_key(self) -> str:
        return hashlib.sha1(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:16]

    def load(self, split: str) -> DigitImages:
        """The split after the dataset controls (only the training split is changed by them)."""
        require(split in SPLITS, "split", split, f"must be one of {', '.join(SPLITS)}")
        arrays = self.arrays()
        images, targets = arrays[f"{split}_images"], arrays[f"{split}_targets"]
        result = self._controlled(targets, split)
        if len(result.indices) < len(targets):
            images = images[result.indices]
            log.info("%s: the dataset controls kept %d of %d scenes (negative ratio %.4f, class counts %s)", split,
                     len(result.indices), len(targets), float((result.targets.sum(axis=1) == 0).mean()),
                     result.targets.sum(axis=0).tolist())
        return DigitImages(images, result.targets, self.class_names, self.mean, self.std,
                           clean_targets=result.clean_targets, rows=result.indices)

    def label_stats(self, split: str) -> DatasetStats:
        """The split's statistics (after the controls) without converting its images."""
        require(split in SPLITS, "split", split, f"must be one of {', '.join(SPLITS)}")
        return DatasetStats.from_targets(self._controlled(self.arrays()[f"{split}_targets"], split).targets,
                                         self.class_names)

    def _controlled(self, targets: np.ndarray, split: str) -> ControlResult:
        with config_scope("dataset"):
            if split == "train" and self.controls.longtail:
                self._check_longtail(targets)
            result = self.controls.apply(targets, split)
        if len(result.indices) == 0:  # the constructor already refuses an all-negative training split
            raise DataError(f"digits: no '{split}' scene has a positive label to keep (single_positive)")
        return result

    def _check_longtail(self, targets: np.ndarray) -> None:
        """Refuse a profile the split cannot serve: some assignment of classes to ranks gives every rank
        enough scenes iff the k-th most frequent class has >= the k-th target, for every k (on multi-label
        scenes the greedy draw still ends a little off the targets: co-occurring classes move each other)."""
        profile = pareto_profile(targets.shape[1], **self.controls.longtail_profile)
        available = np.sort(targets.sum(axis=0))[::-1]
        short = np.flatnonzero(available < profile)
        if len(short):
            k = int(short[0])
            raise ConfigError("longtail_max", self.controls.longtail_profile["max_per_class"],
                              f"the long-tail profile {profile.tolist()} wants {profile[k]} training scenes for "
                              f"rank {k + 1}, but the rank-{k + 1} class of the generated split has {available[k]} "
                              f"(class counts {targets.sum(axis=0).tolist()}); lower longtail_max or raise train_size")

    def arrays(self) -> dict[str, np.ndarray]:
        """All splits as uint8 arrays, from the cache when possible, else generated (and cached)."""
        if self._arrays is None:
            self._arrays = self._read_cache() or self._generate_and_cache()
        return self._arrays

    # -- generation -------------------------------------------------------------------------------

    def generate(self) -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits  # imported here: only needed on a cache miss

        digits = load_digits()
        scans = (digits.images / 16.0).astype(np.float32)
        pools = _split_sources(digits.target, self.params["seed"])
        out = {}
        for split_id, split in enumerate(SPLITS):
            rng = np.random.default_rng([self.params["seed"], split_id, GENERATOR_VERSION])
            pool = {d: scans[idx] for d, idx in pools[split].items()}
            images, targets = self._render_split(rng, pool, self.params["sizes"][split])
            out[f"{split}_images"], out[f"{split}_targets"] = images, targets
        return out

    def _render_split(self, rng: np.random.Generator, pool: dict[int, np.ndarray], n: int):
        p = self.params
        k, side = p["num_classes"], p["image_size"]
        n_neg = round(p["negative_ratio"] * n)
        negative = np.zeros(n, dtype=bool)
        negative[rng.permutation(n)[:n_neg]] = True
        class_probs = 1.0 / np.arange(1, k + 1) ** p["class_imbalance"]
        class_probs /= class_probs.sum()
        images = np.empty((n, side, side, 3), dtype=np.uint8)
        targets = np.zeros((n, k), dtype=np.uint8)
        lo, hi = p["objects_per_scene"]
        for i in range(n):
            count = int(rng.integers(lo, hi + 1))
            if negative[i]:
                objects = [int(d) for d in rng.integers(k, 10, size=count)] if k < 10 else []
            else:
                objects = [int(rng.choice(k, p=class_probs))]
                for _ in range(max(count, 1) - 1):
                    if k == 10 or rng.random() < p["class_object_prob"]:
                        objects.append(int(rng.choice(k, p=class_probs)))
                    else:
                        objects.append(int(rng.integers(k, 10)))
            for d in objects:
                if d < k:
                    targets[i, d] = 1
            images[i] = self._render_scene(rng, pool, objects)
        return images, targets

    def _render_scene(self, rng: np.random.Generator, pool: dict[int, np.ndarray], objects: list[int]):
        p = self.params
        side = p["image_size"]
        canvas = np.broadcast_to(rng.uniform(0.0, 0.3, size=3).astype(np.float32), (side, side, 3)).copy()
        boxes: list[tuple[int, int, int]] = []
        for d in objects:
            scan = pool[d][rng.integers(len(pool[d]))]
            size = int(rng.integers(p["digit_size"][0], p["digit_size"][1] + 1))
            x, y = _place(rng, side, size, boxes, p["max_overlap"])
            boxes.append((x, y, size))
            glyph = np.asarray(Image.fromarray(scan, mode="F").resize((size, size), Image.BILINEAR))
            colour = rng.uniform(0.45, 1.0, size=3).astype(np.float32)
            patch = np.clip(glyph, 0.0, 1.0)[..., None] * colour
            region = canvas[y:y + size, x:x + size]
            np.maximum(region, patch, out=region)
        canvas += rng.normal(0.0, p["noise_std"], size=canvas.shape).astype(np.float32)
        return (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    # -- cache --------------------------------------------------------------------------------------

    def _cache_file(self) -> Path | None:
        return self.cache_dir / f"digits-{self.cache_key}.npz" if self.cache_dir else None

    def _read_cache(self) -> dict[str, np.ndarray] | None:
        path = self._cache_file()
        if path is None or not path.exists():
            return None
        try:
            with np.load(path) as data:
                arrays = {name: data[name] for name in data.files}
            expected = {f"{s}_{kind}" for s in SPLITS for kind in ("images", "targets")}
            if set(arrays) != expected:
                raise ValueError(f"unexpected arrays {sorted(arrays)}")
            return arrays
        except Exception as err:  # a torn or foreign file: the data is derived, so regenerate it
            log.warning("digits cache %s is unreadable (%s); regenerating it", path, err)
            return None

    def _generate_and_cache(self) -> dict[str, np.ndarray]:
        log.info("generating digits scenes (%s)", ", ".join(f"{s}={n}" for s, n in self.params["sizes"].items()))
        arrays = self.generate()
        path = self._cache_file()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, **arrays)
                os.replace(tmp, path)  # atomic: concurrent ranks/trials never see a half-written file
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return arrays


def _split_sources(labels: np.ndarray, seed: int) -> dict[str, dict[int, np.ndarray]]:
    """Disjoint per-digit split of the source scans: 60% train, 20% val, 20% test."""
    rng = np.random.default_rng([seed, 1797])
    out: dict[str, dict[int, np.ndarray]] = {s: {} for s in SPLITS}
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        n_train = int(round(SOURCE_FRACTIONS["train"] * len(idx)))
        n_val = int(round(SOURCE_FRACTIONS["val"] * len(idx)))
        out["train"][d], out["val"][d], out["test"][d] = np.split(idx, [n_train, n_train + n_val])
    return out


def _place(rng: np.random.Generator, side: int, size: int, boxes: list[tuple[int, int, int]],
           max_overlap: float, attempts: int = 20) -> tuple[int, int]:
    """A random top-left corner whose box overlaps each earlier box by at most ``max_overlap``."""
    best, best_overlap = (0, 0), float("inf")
    for _ in range(attempts):
        x, y = (int(v) for v in rng.integers(0, side - size + 1, size=2))
        worst = max((_overlap(x, y, size, b) for b in boxes), default=0.0)
        if worst <= max_overlap:
            return x, y
        if worst < best_overlap:
            best, best_overlap = (x, y), worst
    return best


def _overlap(x: int, y: int, size: int, box: tuple[int, int, int]) -> float:
    bx, by, bs = box
    w = max(0, min(x + size, bx + bs) - max(x, bx))
    h = max(0, min(y + size, by + bs) - max(y, by))
    return w * h / min(size * size, bs * bs)


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
