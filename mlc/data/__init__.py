"""Datasets: the split contract (``mlc.data.base``), the built-in ``digits`` scenes, and the sources
that read real datasets' on-disk formats (COCO, Pascal VOC, ChestX-ray14, Sewer-ML, CSV, folders)."""

from mlc.data.base import SPLITS, DatasetSource, DatasetStats, InMemoryImages, MultiLabelDataset
from mlc.data.chestxray import ChestXray14
from mlc.data.coco import CocoInstances
from mlc.data.csv_folder import CsvImages, FolderImages
from mlc.data.digits import DigitScenes
from mlc.data.images import FileImages
from mlc.data.sewerml import SewerML
from mlc.data.source import FileDatasetSource
from mlc.data.voc import PascalVOC

__all__ = ["SPLITS", "ChestXray14", "CocoInstances", "CsvImages", "DatasetSource", "DatasetStats", "DigitScenes",
           "FileDatasetSource", "FileImages", "FolderImages", "InMemoryImages", "MultiLabelDataset", "PascalVOC",
           "SewerML"]
