"""Training engine: the loop (``trainer``), its callbacks, settings, EMA, DDP helpers and checkpoints."""

from mlc.engine.callbacks import Callback, Checkpointer, ProgressLog, ScoresWriter, TrackingCallback, standard_callbacks
from mlc.engine.distributed import DistContext, ShardSampler
from mlc.engine.settings import TrainerSettings, optimizer_steps_per_epoch
from mlc.engine.trainer import FitResult, TestResult, TrainData, Trainer, TrainingInterrupted

__all__ = ["Callback", "Checkpointer", "DistContext", "FitResult", "ProgressLog", "ScoresWriter", "ShardSampler",
           "TestResult", "TrackingCallback", "TrainData", "Trainer", "TrainerSettings", "TrainingInterrupted",
           "optimizer_steps_per_epoch", "standard_callbacks"]
