"""Training engine: the loop (``trainer``), DDP helpers (``distributed``), checkpoints (``checkpoint``)."""

from mlc.engine.distributed import DistContext, ShardSampler
from mlc.engine.trainer import FitResult, Trainer, TrainerSettings, TrainingInterrupted

__all__ = ["DistContext", "FitResult", "ShardSampler", "Trainer", "TrainerSettings", "TrainingInterrupted"]
