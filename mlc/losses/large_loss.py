"""Large-loss modification for single-positive labels: LL-R, LL-Ct, LL-Cp (Kim et al., "Large Loss
Matters in Weakly Supervised Multi-Label Classification", CVPR 2022, arXiv 2206.03740; reference code
github.com/snucml/LargeLossMatters: ``losses.py`` ``compute_batch_loss``, ``train.py`` ``run_train``).

Target convention as ``single_positive``: 1 = an observed positive, 0 = unobserved. The base loss is
AN, BCE(z, y) from logits with every unobserved label assumed negative (the reference's
``F.binary_cross_entropy_with_logits``, exact, no ε). Unobserved labels that are in truth positive
are the ones the model fits late, with a large loss: per batch, the unobserved entries whose AN loss
is among the k largest are

- LL-R (``scheme: reject``): rejected, their loss set to 0 (and its gradient);
- LL-Ct (``scheme: correct``): corrected for this step, their loss becomes BCE(z, 1) = −log p;
- LL-Cp (``PermanentLargeLossCorrection``): corrected as LL-Ct, and remembered: from the next epoch
  on the entry is an observed positive of that training example.

**Which entries.** Only unobserved entries (y = 0) are candidates: their losses, with 0 in place of
the observed positives', are ranked over the whole batch (B·C entries, not per row or class); the
threshold is the k-th largest value and every unobserved entry at or above it is modified (ties
included), as the reference does. Departure: the reference applies the modification to every entry
not below the threshold, so when the threshold is 0 (k larger than the number of unobserved entries
with a non-zero loss) it would also zero (LL-R) or flip (LL-Ct) the observed positives; here an
observed positive is never a candidate.

**Schedule.** The reference keeps ``clean_rate`` = 1 during the first epoch and lowers it by Δ
(``delta_rel``, given in percent, ÷ 100) after every epoch; ``set_epoch`` computes the same number for
0-based epoch e by the same repeated float subtraction, so that ⌈·⌉ sees what the reference saw.
While clean_rate = 1 (epoch 0, or Δ = 0) nothing is modified. Then

- LL-R, LL-Ct: k = ⌈B·C·(1 − clean_rate)⌉ = ⌈B·C·e·Δ⌉, a rate growing without bound in the
  reference (its runs are 10 epochs, Δ ≤ 0.5 %); ``max_rate`` (mlc's addition, default none) caps it;
- LL-Cp: k = ⌈B·C·Δ⌉ at every step from epoch 1 on (the corrections accumulate instead).

**LL-Cp's memory.** The reference writes 1 into its dataset's label matrix at the entries whose loss is
strictly *above* the threshold (``correction_idx``; the k-th entry itself is only corrected for the
step, so with k = 1 nothing is ever kept). ``keep: above_threshold`` is that (default), ``keep: selected``
(mlc's option) keeps every entry the step corrects. The reference's loader sees the new
labels from the next epoch on (each example is drawn once per epoch, and its loader workers hold a copy
of the labels made when the epoch starts); here the entries of an epoch are recorded in ``pending`` and
become positives (``flipped``) when ``set_epoch`` starts the next epoch, so the loss is a pure function
of its inputs within an epoch, whatever the sampler. Both masks are checkpointed.

**Validation/test loss** (``eval()`` mode): the step's modification at the current epoch's k, on the
whole split, without reading or writing LL-Cp's memory (its indices are another split's).

Reduction (reference): mean over B·C, modified entries included in the count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mlc.errors import is_integer, is_real, require
from mlc.losses.elementwise import bce_with_logits, softplus
from mlc.losses.single_positive import SinglePositiveLoss, _require_indices

SCHEMES = ("reject", "correct")
KEEP = ("above_threshold", "selected")


class LargeLossModification(SinglePositiveLoss):
    """LL-R / LL-Ct: AN whose largest unobserved losses are rejected or corrected, at a rate growing per epoch.

    Args:
        scheme: ``reject`` (LL-R) or ``correct`` (LL-Ct).
        delta_rel: Δ ≥ 0 in percent: the modified share of the batch's B·C entries grows by Δ % per
            epoch (reference ``--delta_rel``, 0.1–0.5; it has no default).
        max_rate: cap in [0, 1] on that share, or ``None`` (the reference: no cap).
        reduction: ``mean`` (÷ B·C, reference), ``sum``, ``instances`` (÷ B) or ``labels``.
    """

    def __init__(self, class_counts: Sequence[float], scheme: str = "reject", delta_rel: float = 0.2,
                 max_rate: float | None = None, reduction: str = "mean", **unused_stats: object):
        super().__init__(class_counts, reduction)
        require(scheme in SCHEMES, "scheme", scheme, f"must be one of {', '.join(SCHEMES)}")
        require(is_real(delta_rel) and 0 <= delta_rel <= 100, "delta_rel", delta_rel,
                "must be a percentage in [0, 100] (reference 0.1 to 0.5)")
        require(max_rate is None or (is_real(max_rate) and 0 <= max_rate <= 1), "max_rate", max_rate,
                "must be in [0, 1], or null for no cap")
        self.scheme, self.delta_rel = scheme, float(delta_rel)
        self.max_rate = None if max_rate is None else float(max_rate)
        self.delta = self.delta_rel / 100  # as the reference's `args.delta_rel /= 100`
        self.clean_rate = 1.0

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        """clean_rate at the start of 0-based ``epoch``: 1, lowered by Δ after each epoch (reference order)."""
        clean_rate = 1.0
        for _ in range(epoch):
            clean_rate -= self.delta
        self.clean_rate = clean_rate

    def modified_count(self, elements: int) -> int:
        """k for a batch of ``elements`` = B·C entries: ⌈B·C·(1 − clean_rate)⌉ (0 while clean_rate = 1), ≤ B·C."""
        rate = 1 - self.clean_rate
        if self.max_rate is not None:
            rate = min(rate, self.max_rate)
        return min(math.ceil(elements * rate), elements)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = self.targets_like(logits, targets)
        return self.modified_loss(logits, y, self.modified_count(y.numel()))[0]

    def modified_loss(self, logits: torch.Tensor, y: torch.Tensor,
                      k: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The reduced loss with the k largest unobserved losses modified; the modified entries and those
        strictly above the threshold (``None`` for k = 0). The ranking is on detached losses: a selection."""
        elementwise = bce_with_logits(logits, y)
        if k == 0:
            return self.reduce(elementwise, y), None, None
        unobserved = y == 0
        candidate = torch.where(unobserved, elementwise.detach(), 0.0)
        threshold = candidate.flatten().topk(k).values[-1]
        chosen = unobserved & (candidate >= threshold)
        modified = softplus(-logits) if self.scheme == "correct" else torch.zeros_like(elementwise)
        return self.reduce(torch.where(chosen, modified, elementwise), y), chosen, chosen & (candidate > threshold)

    def extra_repr(self) -> str:
        return (f"scheme={self.scheme}, delta_rel={self.delta_rel}, max_rate={self.max_rate}, "
                f"clean_rate={self.clean_rate:.6g}, reduction={self.reduction}")


class PermanentLargeLossCorrection(LargeLossModification):
    """LL-Cp: LL-Ct on k = ⌈B·C·Δ⌉ entries per step, and the corrected labels kept as positives.

    Args:
        num_samples: training-set size (filled in by the trainer).
        delta_rel: Δ ≥ 0 in percent of the batch's B·C entries corrected per step (reference ``--delta_rel``).
        keep: ``above_threshold`` (reference: the entries strictly above the k-th largest loss) or
            ``selected`` (all the entries corrected in the step).
        reduction: as ``LargeLossModification``.
    """

    needs_indices = True
    cost_note = ("keeps two num_samples × C boolean masks (corrected labels; this epoch's corrections) and "
                 "gathers/scatters B × C of them every step")

    def __init__(self, class_counts: Sequence[float], num_samples: int, delta_rel: float = 0.2,
                 keep: str = "above_threshold", reduction: str = "mean", **unused_stats: object):
        super().__init__(class_counts, "correct", delta_rel, None, reduction)
        require(is_integer(num_samples) and num_samples >= 1, "num_samples", num_samples, "must be >= 1")
        require(keep in KEEP, "keep", keep, f"must be one of {', '.join(KEEP)}")
        self.keep = keep
        shape = (int(num_samples), self.num_classes)
        self.register_buffer("flipped", torch.zeros(shape, dtype=torch.bool))  # positives from earlier epochs
        self.register_buffer("pending", torch.zeros(shape, dtype=torch.bool))  # this epoch's, from the next one
        self.register_buffer("current_epoch", torch.tensor(-1))

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        """The schedule, and at a new epoch the last epoch's corrections become positives (a resumed epoch
        keeps its partial record)."""
        super().set_epoch(epoch, max_epochs)
        if epoch == int(self.current_epoch):
            return
        self.flipped |= self.pending
        self.pending.zero_()
        self.current_epoch.fill_(epoch)

    def modified_count(self, elements: int) -> int:
        return 0 if self.clean_rate == 1 else min(math.ceil(elements * self.delta), elements)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                indices: torch.Tensor | None = None) -> torch.Tensor:
        y = self.targets_like(logits, targets)
        k = self.modified_count(y.numel())
        if not self.training:
            return self.modified_loss(logits, y, k)[0]
        _require_indices(indices, len(y))
        y = torch.where(self.flipped[indices] & (y == 0), 1.0, y)
        loss, chosen, above = self.modified_loss(logits, y, k)
        if chosen is not None:
            self.pending[indices] = self.pending[indices] | (above if self.keep == "above_threshold" else chosen)
        return loss

    def extra_repr(self) -> str:
        return (f"num_samples={len(self.flipped)}, delta_rel={self.delta_rel}, keep={self.keep}, "
                f"clean_rate={self.clean_rate:.6g}, reduction={self.reduction}")
