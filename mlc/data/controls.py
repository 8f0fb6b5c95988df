"""Controls that apply to any dataset: negative ratio, long-tail profile, single-positive labels.

Each control is a pure function of a split's label matrix (N, K) returning the rows it keeps (and,
for single-positive, the labels the loss sees), so it is tested without a single image. ``Controls``
holds the validated settings (the dataset config's fields) and applies them in one fixed order, the
same for every file-backed source:

1. long-tail (training split only): keep positive images so that class counts follow a Pareto
   profile; negative images are left to the next step;
2. negative ratio (every split, or the training / evaluation splits only): subsample — never
   duplicate — to exactly ``round(ratio · n)`` negatives, keeping as many images as possible;
3. single positive (training split only): one observed positive per image, the rest unknown;
   images without a positive are dropped.

Randomness is seeded by (seed, control, split) alone, so a split is the same in every process and
every run with the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlc.errors import ConfigError, require

SCOPES = ("all", "train", "eval")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ControlResult:
    """What the controls left of a split: kept rows (ascending) and their labels.

    ``targets`` is what the loss sees (observed labels under single-positive); ``clean_targets``
    the true labels of the same rows, for analysis and evaluation only.
    """

    indices: np.ndarray
    targets: np.ndarray
    clean_targets: np.ndarray


class Controls:
    """The dataset-level controls, validated when the dataset config is built.

    Args:
        negative_ratio: exact fraction of negative images to reach by subsampling, or ``None`` to
            keep the data's own ratio.
        negative_ratio_scope: which splits the ratio applies to: ``all``, ``train`` or ``eval``
            (val and test).
        longtail: subsample the training split to a Pareto class profile (VOC-LT / COCO-LT).
        longtail_alpha, longtail_max, longtail_min, longtail_tail: the profile (``pareto_profile``).
        single_positive: keep one observed positive per training image (Cole et al. 2021).
        single_positive_seed: seed of that choice (reference: 1200).
        seed: data seed of the negative-ratio and long-tail draws.
    """

    def __init__(self, negative_ratio: float | None = None, negative_ratio_scope: str = "all",
                 longtail: bool = False, longtail_alpha: float = 6.0, longtail_max: int = 800,
                 longtail_min: int = 1, longtail_tail: float = 0.99, single_positive: bool = False,
                 single_positive_seed: int = 1200, seed: int = 0):
        require(negative_ratio is None or (_number(negative_ratio) and 0.0 <= negative_ratio <= 1.0),
                "negative_ratio", negative_ratio, "must be in [0, 1], or null to keep the data's own ratio")
        require(negative_ratio_scope in SCOPES, "negative_ratio_scope", negative_ratio_scope,
                f"must be one of {', '.join(SCOPES)}")
        require(isinstance(longtail, bool), "longtail", longtail, "must be true or false")
        require(_number(longtail_alpha) and longtail_alpha > 0, "longtail_alpha", longtail_alpha, "must be > 0")
        require(_integer(longtail_min) and longtail_min >= 0, "longtail_min", longtail_min, "must be an integer >= 0")
        require(_integer(longtail_max) and longtail_max >= max(longtail_min, 1), "longtail_max", longtail_max,
                f"must be an integer >= longtail_min ({longtail_min}) and >= 1")
        require(_number(longtail_tail) and 0.0 < longtail_tail < 1.0, "longtail_tail", longtail_tail,
                "must be in (0, 1)")
        require(isinstance(single_positive, bool), "single_positive", single_positive, "must be true or false")
        require(_integer(single_positive_seed), "single_positive_seed", single_positive_seed, "must be an integer")
        require(_integer(seed), "seed", seed, "must be an integer")
        require(not (single_positive and negative_ratio and negative_ratio_scope != "eval"), "negative_ratio",
                negative_ratio, "single_positive drops every training image without a positive; set "
                "negative_ratio_scope=eval to apply the ratio to val/test only")
        self.negative_ratio = None if negative_ratio is None else float(negative_ratio)
        self.negative_ratio_scope = negative_ratio_scope
        self.longtail = longtail
        self.longtail_profile = dict(alpha=float(longtail_alpha), max_per_class=int(longtail_max),
                                     min_per_class=int(longtail_min), tail=float(longtail_tail))
        self.single_positive = single_positive
        self.single_positive_seed = int(single_positive_seed)
        self.seed = int(seed)

    def ratio_applies_to(self, split: str) -> bool:
        return self.negative_ratio is not None and (
            self.negative_ratio_scope == "all" or (self.negative_ratio_scope == "train") == (split == "train"))

    def apply(self, targets: np.ndarray, split: str) -> ControlResult:
        """Run the controls that apply to ``split`` on its label matrix, in the documented order."""
        targets = np.asarray(targets, dtype=np.uint8)
        rows = np.arange(len(targets))
        split_id = SPLIT_IDS[split]
        if split == "train" and self.longtail:
            profile = pareto_profile(targets.shape[1], **self.longtail_profile)
            chosen = longtail_indices(targets, profile, np.random.default_rng([self.seed, 1, split_id]))
            rows = np.union1d(chosen, np.flatnonzero(targets.sum(axis=1) == 0))
        if self.ratio_applies_to(split):
            rng = np.random.default_rng([self.seed, 2, split_id])
            try:
                rows = rows[negative_ratio_indices(targets[rows], self.negative_ratio, rng)]
            except ConfigError as err:
                raise ConfigError(err.key, err.value, f"{err.reason} (split '{split}')") from None
        observed = targets[rows]
        if split == "train" and self.single_positive:
            kept, observed = single_positive(targets[rows], self.single_positive_seed)
            rows = rows[kept]
        return ControlResult(indices=rows, targets=observed, clean_targets=targets[rows])


def negative_ratio_indices(targets: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Rows to keep so that exactly ``round(ratio · n)`` of the ``n`` kept rows are negative.

    ``n`` is the largest size reachable by dropping rows (never duplicating them); negatives and
    positives are drawn uniformly at random. A ratio that could only be met by dropping every
    positive or every negative image (other than 0 and 1 themselves) is an error.
    """
    negative = np.asarray(targets).sum(axis=1) == 0
    neg, pos = np.flatnonzero(negative), np.flatnonzero(~negative)
    n = _largest_size(len(pos), len(neg), ratio)
    m = round(ratio * n)
    keep = np.concatenate([rng.choice(neg, m, replace=False), rng.choice(pos, n - m, replace=False)])
    return np.sort(keep)


def _largest_size(n_pos: int, n_neg: int, ratio: float) -> int:
    """Largest n with round(ratio·n) <= n_neg negatives and n − round(ratio·n) <= n_pos positives."""
    if ratio == 0.0:
        require(n_pos > 0, "negative_ratio", ratio, "the split has no positive image to keep")
        return n_pos
    if ratio == 1.0:
        require(n_neg > 0, "negative_ratio", ratio, "the split has no negative image to keep")
        return n_neg
    require(n_pos > 0 and n_neg > 0, "negative_ratio", ratio,
            f"cannot be reached by subsampling a split of {n_neg} negative and {n_pos} positive images")
    n = min(n_pos + n_neg, int(n_neg / ratio) + 2, int(n_pos / (1.0 - ratio)) + 2)
    while n > 0:
        m = round(ratio * n)
        if 1 <= m <= n_neg and 1 <= n - m <= n_pos:
            return n
        n -= 1
    raise ConfigError("negative_ratio", ratio, f"cannot be reached by subsampling a split of {n_neg} negative "
                      f"and {n_pos} positive images without dropping every image of one kind")


def pareto_profile(num_classes: int, alpha: float = 6.0, max_per_class: int = 800, min_per_class: int = 1,
                   tail: float = 0.99) -> np.ndarray:
    """Per-class image targets of the VOC-LT / COCO-LT construction (Wu et al. 2020, DB loss).

    The Pareto(α) density is evaluated at ``num_classes`` evenly spaced points between its 0 and
    ``tail`` quantiles and scaled to [min, max]: target_i = ⌊(max − min) · x_i^−(α+1) + min⌋ (the
    density divided by α, which is 1 at x = 1). Reference values (``tools/create_longtail_dataset.py``
    of wutong16/DistributionBalancedLoss): α = 6, tail = 0.99, max 800 (VOC) / 1200 (COCO), min 1.
    """
    x = np.linspace(1.0, (1.0 - tail) ** (-1.0 / alpha), num_classes)
    return ((max_per_class - min_per_class) * x ** -(alpha + 1.0) + min_per_class).astype(np.int64)


def longtail_indices(targets: np.ndarray, profile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positive rows whose class counts follow ``profile`` (greedy, as in the DB-loss construction).

    Classes are ranked by how often other classes' images contain them (the column sums of the
    conditional co-occurrence P(j | i)), so classes that are dragged in by everything get the head
    of the profile. Walking the ranking, each class's count is brought to its target by adding
    random unselected images that contain it (as many as exist) or removing random selected ones;
    later steps may move earlier classes a little, as in the reference. Negative rows are never
    selected. Single-label data meets the profile exactly (capped by what each class has).
    """
    targets = np.asarray(targets, dtype=np.int64)
    counts = targets.sum(axis=0)
    present = counts > 0
    co = targets.T @ targets
    dragged_in = (co[present] / counts[present, None]).sum(axis=0)
    order = np.lexsort((-dragged_in, ~present))  # present classes first, most dragged-in first
    members = [np.flatnonzero(targets[:, c]) for c in range(targets.shape[1])]
    selected = np.zeros(len(targets), dtype=bool)
    current = np.zeros(targets.shape[1], dtype=np.int64)
    for want, c in zip(profile, order, strict=True):
        have = current[c]
        if have < want:
            pool = members[c][~selected[members[c]]]
            change = rng.choice(pool, min(int(want - have), len(pool)), replace=False)
            selected[change] = True
            current += targets[change].sum(axis=0)
        elif have > want:
            pool = members[c][selected[members[c]]]
            change = rng.choice(pool, int(have - want), replace=False)
            selected[change] = False
            current -= targets[change].sum(axis=0)
    return np.flatnonzero(selected)


def single_positive(targets: np.ndarray, seed: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    """Cole et al. (2021) single-positive labels: (kept rows, observed targets of those rows).

    Follows the reference ``observe_uniform`` draw for draw: one ``np.random.RandomState(seed)``
    walks the rows in order, shuffles each row's positive class indices and keeps the first, then
    shuffles its negative indices (the reference does so even when observing no negative), so the
    observed labels equal the reference's for the same label matrix. Observed targets are 1 for
    the kept positive and 0 (unknown) elsewhere; rows without a positive are dropped.
    """
    targets = np.asarray(targets)
    rng = np.random.RandomState(seed)
    observed = np.zeros(targets.shape, dtype=np.uint8)
    for i, row in enumerate(targets):
        positives, negatives = np.flatnonzero(row == 1), np.flatnonzero(row != 1)
        rng.shuffle(positives)
        rng.shuffle(negatives)
        if len(positives):
            observed[i, positives[0]] = 1
    kept = np.flatnonzero(observed.sum(axis=1) > 0)
    return kept, observed[kept]


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


def _integer(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
