"""Label-distribution-aware margin loss, LDAM (Cao et al., "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019, arXiv 1906.07413), in a multi-label form.

The single-label paper subtracts a class margin m_k ∝ n_k^{−1/4} from the true class's logit before a
scaled softmax cross-entropy. Multi-label form: each class is a binary problem, and a positive's
logit must clear its class margin,

    ℓ_ik = BCE(s·(z_ik − y_ik·m_k), y_ik),   m_k = max_m · (min_j n_j / n_k)^{1/4},

so the rarest class gets the largest margin ``max_m``. Reduction: the mean over B·C (the BCE default;
the single-label reference averages its cross-entropy over the batch).

The reference uses s = 30 together with a cosine (normalised) classifier whose logits lie in [−1, 1];
mlc's backbones end in a plain linear layer, whose logits are already on the scale the margin is
meant for, so the default here is s = 1 (set s = 30 for the reference value). The reference's
deferred re-weighting schedule (LDAM-DRW) is not part of this loss. A class without any training
instance (n_k = 0) cannot be positive in a training batch; it gets margin ``max_m`` and is left out
of the normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mlc.errors import is_real, require
from mlc.losses.base import MultiLabelLoss, check_reduction, reduce_instances
from mlc.losses.elementwise import bce_with_logits


class LDAMLoss(MultiLabelLoss):
    """BCE on s·(z − y·m) with class margins m_k ∝ n_k^{−1/4}, the largest equal to ``max_m``.

    Args:
        class_counts: per-class positive counts n_k of the training set (filled in by the trainer).
        max_m: the largest margin, > 0 (reference 0.5).
        s: logit scale, > 0 (reference 30 with a cosine classifier; default 1 for a linear head).
        reduction: ``mean`` (÷B·C), ``sum``, ``instances`` (÷B) or ``labels``.
    """

    def __init__(self, class_counts: Sequence[float], max_m: float = 0.5, s: float = 1.0, reduction: str = "mean",
                 **unused_stats: object):
        super().__init__()
        require(is_real(max_m) and max_m > 0, "max_m", max_m, "must be > 0")
        require(is_real(s) and s > 0, "s", s, "must be > 0")
        check_reduction(reduction)
        counts = torch.tensor(list(class_counts), dtype=torch.float64)
        require(counts.numel() > 0 and bool(torch.isfinite(counts).all() and (counts >= 0).all()), "class_counts",
                list(class_counts), "must be a non-empty list of counts >= 0")
        self.max_m, self.s, self.reduction = float(max_m), float(s), reduction
        self.num_classes = len(counts)
        seen = counts > 0
        margins = torch.full_like(counts, self.max_m)
        if seen.any():
            # numpy, not tensor ** 0.25: a torch pow with a fractional exponent changes log1p's speed for the whole
            # process (benchmarks/losses.py)
            margins[seen] = torch.from_numpy(self.max_m * np.power((counts[seen].min() / counts[seen]).numpy(), 0.25))
        self.register_buffer("margins", margins, persistent=False)  # float64; cast per call

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_inputs(logits, targets, self.num_classes)
        y = targets.to(logits.dtype)
        loss = bce_with_logits(self.s * (logits - y * self.margins.to(y.dtype)), y)
        return reduce_instances(loss.sum(dim=1), y, self.reduction)

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, reduction={self.reduction}"
