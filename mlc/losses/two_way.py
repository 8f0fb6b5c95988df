"""Two-way multi-label loss (Kobayashi, "Two-way Multi-Label Loss", CVPR 2023; reference code
github.com/tk1980/TwoWayMultiLabelLoss, ``utils/criterion.py``, ``TwoWayLoss``).

Softmax-like, not element-wise: a set of positive logits is compared with a set of negative logits
through one softplus of two temperature-scaled log-sum-exps,

    ℓ(P, N) = softplus( T_n·log Σ_{n∈N} e^{z_n/T_n} + T_p·log Σ_{p∈P} e^{−z_p/T_p} ),

a smooth max of the negatives minus a smooth min of the positives (T → 0: the hinge-like
softplus(max_N z − min_P z)). It is applied both ways: per instance (P_i, N_i = the classes present /
absent in row i) and per class (P_c, N_c = the instances that have / lack class c in the batch):

    loss = mean_{i: P_i ≠ ∅} ℓ(P_i, N_i) + mean_{c: P_c ≠ ∅} ℓ(P_c, N_c).

**Rows and columns without a positive.** As in the reference (``sample_mask``, ``class_mask``), a row
with no positive has no instance term and does not count in the instance mean; its negatives still
enter the class terms of the columns that have a positive. The same for a column with no positive.
mlc's data has many all-negative rows: they only teach through the class-wise term. A batch without
any positive gives 0 with a zero gradient (the reference: the mean of nothing, NaN).

**Set membership and the mask.** Positive: y > 0; negative: y = 0 (the reference's tests, so a y < 0
entry would be in neither set). The reference excludes the other entries from a log-sum-exp by adding
nINF = −100 to their scaled logit (z/T − 100), not −∞; ``masked_logit`` is that constant (default −100,
the reference). Excluded entries then still weigh e^{−100} each: nothing, unless a logit nears 100·T
(an all-positive row at z ≈ 100 with T_n = 1 is scored as if it had a negative at z − 100).
``masked_logit: null`` excludes them exactly (the paper's sums); a set that is then empty makes its
term 0 (softplus(−∞)), e.g. a row whose classes are all present.

**No absolute level.** Adding one constant c to every logit moves each T_n·log Σ e^{z/T_n} by +c and each
T_p·log Σ e^{−z/T_p} by −c: the loss (with either mask) is unchanged, and its gradient sums to 0 over the
batch. It only orders positives above negatives, both ways; where the logits sit relative to 0 is left to
the initialisation and the optimiser. Metrics at a fixed threshold (mlc's F1/F2 at p = 0.5, F1-Neg) are
therefore arbitrary for this loss; mAP (what the paper reports) and the val-tuned per-class thresholds are not.

Defaults T_p = 4, T_n = 1 (reference ``--loss-Tp 4``, ``--loss-Tn 1``). Nothing is detached.
"""

from __future__ import annotations

import torch

from mlc.errors import is_real, require
from mlc.losses.base import MultiLabelLoss
from mlc.losses.elementwise import softplus


def _log_sum_exp(scaled: torch.Tensor, member: torch.Tensor, masked_logit: float | None, dim: int) -> torch.Tensor:
    """log Σ_{member} e^{scaled} along ``dim``: the others at scaled + ``masked_logit`` (reference) or left out.

    Left out exactly, an empty set gives −∞; its input is then filled with 0 so that the backward pass
    stays finite (the caller's softplus(−∞) = 0 has a zero gradient anyway).
    """
    if masked_logit is not None:
        return torch.logsumexp(scaled + torch.where(member, 0.0, masked_logit), dim=dim)
    nonempty = member.any(dim=dim, keepdim=True)
    kept = torch.where(member, scaled, -torch.inf)
    return torch.where(nonempty, torch.logsumexp(torch.where(nonempty, kept, 0.0), dim=dim, keepdim=True),
                       -torch.inf).squeeze(dim)


class TwoWayLoss(MultiLabelLoss):
    """Two-way loss: softplus(T_n·LSE(z_N/T_n) + T_p·LSE(−z_P/T_p)), per instance and per class.

    Args:
        pos_temperature: T_p > 0 of the positives' smooth minimum (reference 4).
        neg_temperature: T_n > 0 of the negatives' smooth maximum (reference 1).
        masked_logit: constant added to an excluded entry's scaled logit (reference −100); ``None`` =
            excluded exactly.
    """

    def __init__(self, pos_temperature: float = 4.0, neg_temperature: float = 1.0,
                 masked_logit: float | None = -100.0, **unused_stats: object):
        super().__init__()
        for key, value in (("pos_temperature", pos_temperature), ("neg_temperature", neg_temperature)):
            require(is_real(value) and value > 0, key, value, "the temperature must be > 0")
        require(masked_logit is None or (is_real(masked_logit) and masked_logit < 0), "masked_logit", masked_logit,
                "must be a negative number (reference −100), or null to exclude entries exactly")
        self.pos_temperature, self.neg_temperature = float(pos_temperature), float(neg_temperature)
        self.masked_logit = None if masked_logit is None else float(masked_logit)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_inputs(logits, targets)
        positive, negative = targets > 0, targets == 0
        return self.one_way(logits, positive, negative, dim=1) + self.one_way(logits, positive, negative, dim=0)

    def one_way(self, logits: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, dim: int) -> torch.Tensor:
        """The mean of ℓ over the rows (``dim=1``: instances) or columns (``dim=0``: classes) with a positive."""
        tp, tn = self.pos_temperature, self.neg_temperature
        positives = tp * _log_sum_exp(-logits / tp, positive, self.masked_logit, dim)
        negatives = tn * _log_sum_exp(logits / tn, negative, self.masked_logit, dim)
        counted = positive.any(dim=dim)
        terms = torch.where(counted, softplus(torch.where(counted, negatives + positives, 0.0)), 0.0)
        return terms.sum() / counted.sum().clamp(min=1)

    def extra_repr(self) -> str:
        return (f"pos_temperature={self.pos_temperature}, neg_temperature={self.neg_temperature}, "
                f"masked_logit={self.masked_logit}")
