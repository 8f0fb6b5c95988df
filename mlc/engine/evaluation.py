"""Predict and score a whole split: every sample exactly once, in dataset order, on any world size."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mlc.data.base import MultiLabelDataset
from mlc.engine.contracts import needs_indices
from mlc.engine.distributed import DistContext, ShardSampler
from mlc.metrics import multilabel_metrics


@torch.no_grad()
def predict(module: nn.Module, dataset: MultiLabelDataset, dist: DistContext, batch_size: int,
            num_workers: int = 0, autocast_dtype: torch.dtype | None = None, channels_last: bool = False):
    """Logits, targets and indices of the whole split, gathered from all ranks and sorted by index.

    Each rank scores a strided shard without padding; rows are gathered with their dataset indices
    and put back in order, so the result is the same as one process scoring the split alone.
    """
    dist.broadcast_buffers(module)
    module.eval()
    device = dist.device
    sampler = ShardSampler(len(dataset), dist.rank, dist.world_size, pad=False)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    autocast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    k = len(dataset.class_names)
    logits, targets, indices = [torch.zeros(0, k, device=device)], [torch.zeros(0, k, device=device)], \
        [torch.zeros(0, dtype=torch.long, device=device)]
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        with autocast:
            out = module(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        logits.append(out.float())
        targets.append(batch["target"].to(device))
        indices.append(torch.as_tensor(batch["index"], device=device))
    logits_t, targets_t, index_t = (dist.gather_rows(torch.cat(t)) for t in (logits, targets, indices))
    order = torch.argsort(index_t)
    index_t = index_t[order]
    if len(index_t) != len(dataset) or not torch.equal(index_t.cpu(), torch.arange(len(dataset))):
        raise RuntimeError(f"evaluation saw {len(index_t)} samples, expected each of {len(dataset)} exactly once")
    return logits_t[order], targets_t[order], index_t


@dataclass
class SplitScores:
    """A whole split scored once: probabilities, labels and the split's loss, for metrics and scores files."""

    probs: np.ndarray  # (N, K) float32 sigmoid probabilities, in dataset order
    targets: np.ndarray  # (N, K) the labels the loss saw
    loss: float | None

    def metrics(self, threshold=0.5, class_weights=None, class_groups=None) -> dict[str, float]:
        out = multilabel_metrics(self.probs, self.targets, threshold=threshold, class_weights=class_weights,
                                 class_groups=class_groups)
        if self.loss is not None:
            out["loss"] = self.loss
        return out


def score_split(module: nn.Module, dataset: MultiLabelDataset, dist: DistContext, batch_size: int,
                loss_fn: nn.Module | None = None, num_workers: int = 0,
                autocast_dtype: torch.dtype | None = None, channels_last: bool = False) -> SplitScores:
    """Predict the split (``predict``) and, with ``loss_fn``, its loss taken as one batch."""
    logits, targets, indices = predict(module, dataset, dist, batch_size, num_workers, autocast_dtype, channels_last)
    loss = None
    if loss_fn is not None:  # in eval mode: a stateful loss must not touch its training-set state here
        was_training = loss_fn.training
        loss_fn.eval()
        extra = {"indices": indices} if needs_indices(loss_fn) else {}
        with torch.no_grad():
            loss = float(loss_fn(logits, targets, **extra))
        loss_fn.train(was_training)
    return SplitScores(torch.sigmoid(logits).cpu().numpy(), targets.cpu().numpy(), loss)


def evaluate(module: nn.Module, dataset: MultiLabelDataset, dist: DistContext, batch_size: int,
             loss_fn: nn.Module | None = None, threshold: float = 0.5, class_weights=None, num_workers: int = 0,
             autocast_dtype: torch.dtype | None = None, class_groups=None) -> dict[str, float]:
    """Split-level metrics (``mlc.metrics``) plus the loss of the whole split taken as one batch."""
    scored = score_split(module, dataset, dist, batch_size, loss_fn, num_workers, autocast_dtype)
    return scored.metrics(threshold, class_weights, class_groups)
