"""The ``trainer/`` config group as a validated dataclass: every mistake is one line, before any data or compute."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from mlc.errors import require
from mlc.metrics import METRIC_NAMES

PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision
TUNE_BETA = {"f1": 1.0, "f2": 2.0}  # trainer.tune_thresholds: which F-beta the per-class thresholds maximise
MONITORED = (*METRIC_NAMES, "loss", "f2_ciw")
MONITORABLE = tuple(f"val/{m}" for m in MONITORED)
EMA_MONITORABLE = tuple(f"val_ema/{m}" for m in MONITORED)  # the EMA weights' validation metrics


@dataclass
class TrainerSettings:
    """The ``trainer/`` config group (``conf/trainer/default.yaml`` documents each field)."""

    max_epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    device: str = "auto"
    precision: str = "32"
    grad_clip_norm: float | None = None
    monitor: str = "val/f1_macro"
    monitor_mode: str = "max"
    threshold: float = 0.5
    resume: str | None = None
    test_after_fit: bool = True
    log_every_n_steps: int = 50
    tune_thresholds: str | None = "f1"
    save_scores: bool = True
    nproc: int = 1  # ranks per node
    nnodes: int = 1
    rdzv_endpoint: str | None = None  # host:port of the c10d rendezvous, the same on every node (nnodes > 1)
    rdzv_id: str | None = None  # the job's name at that endpoint; null: derived from hydra.run.dir
    accumulate_grad_batches: int = 1
    checkpoint_every_n_steps: int = 0
    ema_decay: float | None = None
    compile: bool = False
    channels_last: bool = False
    matmul_precision: str = "highest"
    cudnn_benchmark: bool = True

    def __post_init__(self) -> None:
        require(_int(self.max_epochs) and self.max_epochs >= 1, "max_epochs", self.max_epochs,
                "must be an integer >= 1")
        require(_int(self.batch_size) and self.batch_size >= 2, "batch_size", self.batch_size,
                "must be an integer >= 2 (BatchNorm needs two samples)")
        require(_int(self.eval_batch_size) and self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size,
                "must be an integer >= 1")
        require(_int(self.num_workers) and self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        require(self.device in ("auto", "cpu", "cuda"), "device", self.device, "must be auto, cpu or cuda")
        require(str(self.precision) in PRECISIONS, "precision", self.precision,
                f"must be one of {', '.join(PRECISIONS)}")
        self.precision = str(self.precision)
        require(self.precision != "16-mixed" or (self.device != "cpu" and torch.cuda.is_available()), "precision",
                self.precision, "fp16 AMP needs CUDA (no GPU here); use '32' or 'bf16-mixed' on CPU")
        require(self.grad_clip_norm is None or (isinstance(self.grad_clip_norm, (int, float))
                                                and self.grad_clip_norm > 0),
                "grad_clip_norm", self.grad_clip_norm, "must be > 0, or null for no clipping")
        require(self.ema_decay is None or (isinstance(self.ema_decay, (int, float)) and 0 < self.ema_decay < 1),
                "ema_decay", self.ema_decay, "must be in (0, 1), e.g. 0.999, or null for no EMA")
        allowed = MONITORABLE + (EMA_MONITORABLE if self.ema_decay is not None else ())
        hint = "" if self.ema_decay is not None else " (val_ema/* needs trainer.ema_decay)"
        require(self.monitor in allowed, "monitor", self.monitor, f"must be one of {', '.join(allowed)}{hint}")
        require(self.monitor_mode in ("max", "min"), "monitor_mode", self.monitor_mode, "must be max or min")
        require(isinstance(self.threshold, (int, float)) and 0 < self.threshold < 1, "threshold", self.threshold,
                "must be in (0, 1)")
        require(_int(self.log_every_n_steps) and self.log_every_n_steps >= 1, "log_every_n_steps",
                self.log_every_n_steps, "must be an integer >= 1 (optimizer steps between health checks)")
        require(self.tune_thresholds in (None, *TUNE_BETA), "tune_thresholds", self.tune_thresholds,
                f"must be one of {', '.join(TUNE_BETA)}, or null")
        for name in ("save_scores", "test_after_fit", "compile", "channels_last", "cudnn_benchmark"):
            require(isinstance(getattr(self, name), bool), name, getattr(self, name), "must be true or false")
        require(_int(self.nproc) and self.nproc >= 1, "nproc", self.nproc, "must be an integer >= 1")
        require(self.nproc == 1 or self.device != "cuda" or torch.cuda.device_count() >= self.nproc, "nproc",
                self.nproc, f"needs that many GPUs ({torch.cuda.device_count()} visible)")
        self._check_nodes()
        require(_int(self.accumulate_grad_batches) and self.accumulate_grad_batches >= 1, "accumulate_grad_batches",
                self.accumulate_grad_batches, "must be an integer >= 1")
        require(_int(self.checkpoint_every_n_steps) and self.checkpoint_every_n_steps >= 0,
                "checkpoint_every_n_steps", self.checkpoint_every_n_steps,
                "must be an integer >= 0 (0: checkpoints at the end of each epoch only)")
        require(self.matmul_precision in MATMUL_PRECISIONS, "matmul_precision", self.matmul_precision,
                f"must be one of {', '.join(MATMUL_PRECISIONS)}")

    def _check_nodes(self) -> None:
        """``trainer.nnodes > 1``: every node runs the same command and meets the others at one rendezvous
        endpoint; a missing or malformed endpoint would only show as a rendezvous that never completes."""
        require(_int(self.nnodes) and self.nnodes >= 1, "nnodes", self.nnodes, "must be an integer >= 1")
        if self.nnodes == 1:
            for name in ("rdzv_endpoint", "rdzv_id"):
                require(getattr(self, name) is None, name, getattr(self, name),
                        "is only used with trainer.nnodes > 1 (one node: its ranks meet on 127.0.0.1); drop it")
            return
        require(self.rdzv_endpoint is not None, "rdzv_endpoint", None, f"trainer.nnodes={self.nnodes} needs "
                "<host>:<port> of the rendezvous (a node every node reaches; the same on every node)")
        host, _, port = str(self.rdzv_endpoint).rpartition(":")
        require(isinstance(self.rdzv_endpoint, str) and bool(host.strip("[]")) and port.isdigit()
                and 1 <= int(port) <= 65535, "rdzv_endpoint", self.rdzv_endpoint,
                "must be <host>:<port>, e.g. node0:29400 (port 1-65535)")
        if self.rdzv_id is not None:
            self.rdzv_id = str(self.rdzv_id) if _int(self.rdzv_id) else self.rdzv_id
            require(isinstance(self.rdzv_id, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", self.rdzv_id)
                    is not None, "rdzv_id", self.rdzv_id,
                    "must be letters, digits, '_', '.' or '-' (at most 100), or null (derived from hydra.run.dir)")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]


def batches_per_epoch(settings: TrainerSettings, epoch_length: int, world_size: int = 1) -> int:
    """Training batches per rank in one epoch of ``epoch_length`` samples: each rank sees ⌈N / world⌉ of
    them in batches of ``batch_size``; a trailing batch of one is dropped (BatchNorm cannot train on it)."""
    per_rank = -(-epoch_length // world_size)
    return per_rank // settings.batch_size + (1 if per_rank % settings.batch_size >= 2 else 0)


def optimizer_steps_per_epoch(settings: TrainerSettings, epoch_length: int, world_size: int = 1) -> int:
    """Optimizer steps in one epoch (what the LR schedule counts): one per ``accumulate_grad_batches``
    batches, a shorter last group making one more."""
    return -(-batches_per_epoch(settings, epoch_length, world_size) // settings.accumulate_grad_batches)


def _int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
