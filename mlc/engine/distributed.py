"""Process-group setup and the collectives the trainer needs, written so that world size 1 costs nothing.

Launch with torchrun (``torchrun --nproc_per_node=2 -m mlc.cli.train ...``): the backend is ``gloo`` on
CPU and ``nccl`` on CUDA. Evaluation shards the split *without padding* (rank r takes samples
r, r + W, ...), gathers every rank's scores with their sample indices and restores the original
order, so every sample counts exactly once and DDP metrics equal single-process metrics.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from mlc.errors import ConfigError


def wants_cuda(device: str) -> bool:
    """Whether ``trainer.device`` means CUDA here; ``cuda`` without a GPU is refused (before any run folder)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device", device, "CUDA was requested but torch.cuda.is_available() is False")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    ddp: bool = False  # DDP and collectives even in one process (``make gpu-check``'s 1-process NCCL run)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.ddp

    @classmethod
    def from_env(cls, device: str = "auto") -> DistContext:
        """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); start the process group if needed."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = wants_cuda(device)
        if use_cuda:
            torch.cuda.set_device(local_rank)
            dev = torch.device("cuda", local_rank)
        else:
            dev = torch.device("cpu")
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj: object) -> object:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_objects(self, obj: object) -> list:
        if not self.distributed:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any_flags(self, *flags: bool) -> list[bool]:
        """Logical OR of each flag over all ranks, in one collective (so every rank takes the same branch)."""
        if not self.distributed:
            return [bool(f) for f in flags]
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def sum_over_ranks(self, *values: float) -> list[float]:
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.tolist()]

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's rows (any count per rank) on every rank, in rank order."""
        if not self.distributed:
            return tensor
        count = torch.tensor([tensor.shape[0]], device=self.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count)
        sizes = [int(c.item()) for c in counts]
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics drift apart per rank under DDP)."""
        if self.distributed:
            for buf in module.buffers():
                dist.broadcast(buf, src=0)


class ShardSampler(Sampler[int]):
    """This rank's share of an epoch's indices, reproducible per epoch and resumable mid-epoch.

    ``order``: an ``EpochOrder`` (``mlc.data.samplers``) giving each epoch's indices; without one,
    the split in dataset order (evaluation). ``pad``: repeat a few indices so every rank gets the same
    count (training: ranks must take the same number of steps); without it (evaluation) each sample
    appears on exactly one rank. ``set_epoch(epoch, skip)`` drops the first ``skip`` indices of this
    rank's share (resume).
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, order=None, pad: bool = False):
        self.size, self.rank, self.world_size = size, rank, world_size
        self.order, self.pad = order, pad
        self.epoch, self.skip = 0, 0
        self._cached: tuple[int, torch.Tensor] | None = None  # (epoch, shard): the DataLoader asks len() and iter()

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def shard(self) -> torch.Tensor:
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self._compute_shard())
        return self._cached[1]

    def _compute_shard(self) -> torch.Tensor:
        order = self.order.indices(self.epoch) if self.order is not None else torch.arange(self.size)
        n = len(order)
        if self.pad and n % self.world_size:
            total = math.ceil(n / self.world_size) * self.world_size
            order = torch.cat([order, order.repeat(math.ceil(total / n))[: total - n]])
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.shard()[self.skip :].tolist())

    def __len__(self) -> int:
        return max(0, len(self.shard()) - self.skip)
