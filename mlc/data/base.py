"""The dataset contract shared by every `dataset/` config option.

A `dataset/` config instantiates to a ``DatasetSource``: it knows the class names and builds the
``train``/``val``/``test`` splits. A split is a ``MultiLabelDataset``: a torch ``Dataset`` whose items
are ``{"image": float tensor (C, H, W), "target": float tensor (K,), "index": int}`` and whose whole
label matrix is available as ``targets`` (N, K) without decoding any image, so statistics, losses'
class counts and samplers never touch pixels.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")


class MultiLabelDataset(Dataset):
    """Base for a split: subclasses set ``targets`` (N, K uint8) and ``class_names`` and load images."""

    targets: np.ndarray
    class_names: list[str]
    ids: list[str] | None = None  # one name per instance (an image path) for scores files; None = its index

    def __len__(self) -> int:
        return len(self.targets)

    def instance_ids(self) -> list[str]:
        return list(self.ids) if self.ids is not None else [str(i) for i in range(len(self))]

    def stats(self) -> DatasetStats:
        return DatasetStats.from_targets(self.targets, self.class_names)


class InMemoryImages(MultiLabelDataset):
    """A split whose images already sit in memory as uint8 (N, H, W, C) — e.g. generated scenes.

    Images are converted and normalised once, up front, into a float tensor: the per-item cost is
    then an index, which keeps the data pipeline far ahead of a CPU training step.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, class_names: list[str],
                 mean: tuple[float, ...], std: tuple[float, ...]):
        if images.ndim != 4 or len(images) != len(targets):
            raise ValueError(f"expected images (N, H, W, C) and targets (N, K); got {images.shape}, {targets.shape}")
        self.targets = np.ascontiguousarray(targets, dtype=np.uint8)
        self.class_names = list(class_names)
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.images = ((pixels - mean_t) / std_t).contiguous()
        self._targets_t = torch.from_numpy(self.targets).float()

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "target": self._targets_t[index], "index": index}


class DatasetSource(ABC):
    """What a `dataset/` config instantiates to."""

    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def load(self, split: str) -> MultiLabelDataset:
        """Build one split (``train``, ``val`` or ``test``)."""


@dataclass(frozen=True)
class DatasetStats:
    """Label statistics of one split; ``class_counts``/``negative_count`` feed the losses."""

    num_samples: int
    class_names: list[str]
    class_counts: list[int]
    negative_count: int
    label_cardinality: float  # mean number of present classes per instance
    skipped: int = 0  # unreadable images left out of the split (file-backed datasets with skip_bad_images)

    @property
    def negative_ratio(self) -> float:
        return self.negative_count / self.num_samples if self.num_samples else float("nan")

    @classmethod
    def from_targets(cls, targets: np.ndarray, class_names: list[str], skipped: int = 0) -> DatasetStats:
        targets = np.asarray(targets)
        return cls(num_samples=int(targets.shape[0]), class_names=list(class_names),
                   class_counts=[int(c) for c in targets.sum(axis=0)],
                   negative_count=int((targets.sum(axis=1) == 0).sum()),
                   label_cardinality=float(targets.sum(axis=1).mean()) if len(targets) else 0.0,
                   skipped=int(skipped))

    def to_dict(self) -> dict:
        return asdict(self) | {"negative_ratio": self.negative_ratio}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
