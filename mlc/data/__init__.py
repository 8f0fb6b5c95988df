"""Datasets: the split contract (``mlc.data.base``) and the built-in ``digits`` scenes."""

from mlc.data.base import SPLITS, DatasetSource, DatasetStats, InMemoryImages, MultiLabelDataset
from mlc.data.digits import DigitScenes

__all__ = ["SPLITS", "DatasetSource", "DatasetStats", "DigitScenes", "InMemoryImages", "MultiLabelDataset"]
