"""sigmoidF1 (Bénédict et al., "sigmoidF1: A Smooth F1 Score Surrogate Loss for Multilabel
Classification", arXiv 2108.10566) and the plain soft-F1 surrogate it generalises.

A tunable sigmoid S(u) = 1/(1 + exp(−β(u + η))) replaces the thresholded prediction; per class c,
over the batch,

    tp = Σ_i S·y,   fp = Σ_i S·(1 − y),   fn = Σ_i (1 − S)·y,
    F1_c = 2tp / (2tp + fn + fp + ε),   loss = mean_c (1 − F1_c)   (macro; ``reduction``).

2tp + fn + fp = Σ_i S + Σ_i y, which is how the denominator is computed: no cancellation, and at
least ε, so a class with no positive and no prediction in the batch has F1 = 0 (loss 1) and a finite
gradient. The paper's text applies S to the logit z; the reference code applies it to σ(z)
(``apply_to``), and its default slope/offset are β = 1, η = 0 (S = −β, E = η in its notation;
ε = 1e-16). soft-F1 is S = σ: ``apply_to=logit`` with β = 1, η = 0.
"""

from __future__ import annotations

import torch

from mlc.errors import is_real, require
from mlc.losses.base import MultiLabelLoss

APPLY_TO = ("probability", "logit")


class SigmoidF1Loss(MultiLabelLoss):
    """Macro 1 − F1 of the batch with S(u) = σ(β(u + η)) as the soft prediction.

    Args:
        beta: β > 0, slope of S (reference 1).
        eta: η, offset of S (reference 0).
        eps: ε > 0 in the F1 denominator (reference 1e-16).
        apply_to: ``"probability"`` (u = σ(z), the reference code) or ``"logit"`` (u = z, the paper's text).
        reduction: ``mean`` over classes (macro, reference) or ``sum``.
    """

    def __init__(self, beta: float = 1.0, eta: float = 0.0, eps: float = 1e-16, apply_to: str = "probability",
                 reduction: str = "mean", **unused_stats: object):
        super().__init__()
        require(is_real(beta) and beta > 0, "beta", beta, "β must be > 0")
        require(is_real(eta), "eta", eta, "η must be a finite number")
        require(is_real(eps) and eps > 0, "eps", eps, "ε must be > 0 (keeps empty classes finite)")
        require(apply_to in APPLY_TO, "apply_to", apply_to, f"must be one of {', '.join(APPLY_TO)}")
        require(reduction in ("mean", "sum"), "reduction", reduction, "must be 'mean' or 'sum' (over classes)")
        self.beta, self.eta, self.eps = float(beta), float(eta), float(eps)
        self.apply_to, self.reduction = apply_to, reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_inputs(logits, targets)
        y = targets.to(logits.dtype)
        u = torch.sigmoid(logits) if self.apply_to == "probability" else logits
        soft = torch.sigmoid(self.beta * (u + self.eta))
        true_positives = (soft * y).sum(dim=0)
        f1 = 2.0 * true_positives / (soft.sum(dim=0) + y.sum(dim=0) + self.eps)
        cost = 1.0 - f1
        return cost.mean() if self.reduction == "mean" else cost.sum()

    def extra_repr(self) -> str:
        return (f"beta={self.beta}, eta={self.eta}, eps={self.eps}, apply_to={self.apply_to}, "
                f"reduction={self.reduction}")
