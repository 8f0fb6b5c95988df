"""Single-positive multi-label (SPML) losses: the GR loss (seed 003) and its baselines (LOSSES.md §5).

Target convention: 1 = an observed positive, 0 = unknown (SPML has no observed negatives). Rows with
no observed positive may still occur (mlc's data is negative-heavy) and stay finite.

===========  =====================================  ============================================
option       class                                  per element (y = 1 | y = 0)
===========  =====================================  ============================================
an           AssumeNegativeLoss                     −log p | −log(1 − p)       (Cole et al. 2021)
an_ls        AssumeNegativeLoss(label_smoothing)    BCE towards 1 − ls | ls
wan          AssumeNegativeLoss(negative_weight)    −log p | −log(1 − p)/(C − 1)
epr          ExpectedPositiveLoss                   −log p | 0, + (Σ_c p̄_c − k)²/C² per batch
role         RoleLoss                               EPR for the classifier and for learned estimates
em           EntropyMaximizationLoss                −log p | −α·H(p)            (Zhou et al. 2022)
em_apl       AsymmetricPseudoLabelLoss              EM, soft negative pseudo-labels after warm-up
hill         HillLoss                               focal(z − m) | (λ − p)p²    (Zhang et al. 2021)
splc         SPLCLoss                               focal(z − m) | focal, p > τ → positive
gr           GeneralizedRobustLoss                  −log p | v·[k̂·L2 + (1 − k̂)·L3]   (Chen et al. 2024)
===========  =====================================  ============================================

**−log(x + ε).** The reference code of Cole et al., Zhou et al. and Chen et al. computes −log p and
−log(1 − p) as −log(x + ε) on probabilities (ε = 1e−5; 1e−7 for GR). That ε is the default
(``log_eps``), so published numbers are comparable; ``log_eps: 0`` gives the exact −log σ(±z) from
logits (softplus). Either way 1 − p is computed as σ(−z): the same value, without the cancellation
that 1 − σ(z) suffers in float32 for large z.

Every loss reduces an element-wise matrix with ``reduction`` (``reduce_instances`` over row sums);
a batch-level regulariser (EPR, ROLE) is added after the reduction, as in the reference.

**implementation.** EM, EM + APL, Hill, SPLC and GR compute their value and gradient with a fused
kernel by default (``single_positive_fused``: the closed-form gradient computed in the forward, a few
times fewer passes over the logits than autograd through the forms below); ``implementation:
autograd`` runs the readable forms below (double backward, debugging). Both give the same values and
gradients up to rounding, for soft targets too (every kernel is a lerp by y, as the readable forms are
affine in y). AN/AN-LS/WAN and EPR are a handful of ops and stay on autograd.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from mlc.errors import is_integer, is_real, require
from mlc.losses import single_positive_fused as fused
from mlc.losses.base import ImplementationSwitch, MultiLabelLoss, check_reduction, reduce_instances
from mlc.losses.elementwise import focal_with_logits, log_sigmoid, softplus

WAN_WEIGHT = "1/(C-1)"


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def neg_log_sigmoid(logits: torch.Tensor, eps: float) -> torch.Tensor:
    """−log(σ(z) + ε) as the reference computes −log p; ε = 0 gives softplus(−z) exactly.

    Pass −z for −log(1 − p). With ε > 0 the value is bounded by −log ε (the reference's clipping).
    """
    if eps == 0.0:
        return softplus(-logits)
    return -torch.log(torch.sigmoid(logits) + eps)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """t·(−log p) + (1 − t)·(−log(1 − p)) for a soft target t (a constant or, for H(p), p itself)."""
    return target * neg_log_sigmoid(logits, eps) + (1.0 - target) * neg_log_sigmoid(-logits, eps)


def expected_positive_penalty(probs: torch.Tensor, expected_positives: float) -> torch.Tensor:
    """(mean over the batch of Σ_c p_ic − k)² / C²: the EPR regulariser of Cole et al."""
    return (probs.sum(dim=1).mean() - expected_positives) ** 2 / probs.shape[1] ** 2


def _require_indices(indices: torch.Tensor | None, batch: int) -> None:
    if indices is None or indices.shape != (batch,):
        raise ValueError(f"this loss keeps per-instance state: call it with indices= of shape ({batch},)")


class SinglePositiveLoss(MultiLabelLoss):
    """Shared pieces: class count check, validated ``reduction`` and ``log_eps``, the reduction.

    Args:
        class_counts: per-class positive counts of the training set (filled in by the trainer).
        reduction: ``mean`` (÷ B·C), ``sum``, ``instances`` (÷ B) or ``labels``.
        log_eps: ε of −log(x + ε); 0 = exact from logits.
    """

    def __init__(self, class_counts: Sequence[float], reduction: str, log_eps: float = 0.0):
        super().__init__()
        require(len(class_counts) >= 1, "class_counts", list(class_counts), "must list at least one class")
        check_reduction(reduction)
        require(is_real(log_eps) and 0.0 <= log_eps < 1.0, "log_eps", log_eps, "ε must be in [0, 1)")
        self.num_classes = len(class_counts)
        self.reduction, self.log_eps = reduction, float(log_eps)

    def targets_like(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_inputs(logits, targets, self.num_classes)
        return targets.to(logits.dtype)

    def reduce(self, elementwise: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return reduce_instances(elementwise.sum(dim=1), y, self.reduction)

    def neg_log(self, logits: torch.Tensor) -> torch.Tensor:
        return neg_log_sigmoid(logits, self.log_eps)


class AssumeNegativeLoss(SinglePositiveLoss):
    """AN, AN-LS and WAN (Cole et al. 2021): BCE with every unknown taken as a negative.

    Element loss: w_y · [t·(−log p) + (1 − t)·(−log(1 − p))] with t = 1 − ls for an observed positive
    and ls for an unknown (label smoothing, as the reference smooths both), w = 1 for positives and
    ``negative_weight`` for unknowns.

    Args:
        label_smoothing: ls ∈ [0, 0.5); AN-LS uses 0.1.
        negative_weight: weight ≥ 0 of the unknown-as-negative term, or ``"1/(C-1)"`` (WAN).
    """

    def __init__(self, class_counts: Sequence[float], label_smoothing: float = 0.0,
                 negative_weight: float | str = 1.0, log_eps: float = 1e-5, reduction: str = "mean",
                 **unused_stats: object):
        super().__init__(class_counts, reduction, log_eps)
        require(is_real(label_smoothing) and 0.0 <= label_smoothing < 0.5, "label_smoothing", label_smoothing,
                "must be in [0, 0.5)")
        if negative_weight == WAN_WEIGHT:
            require(self.num_classes >= 2, "negative_weight", negative_weight, "needs at least 2 classes")
            weight = 1.0 / (self.num_classes - 1)
        else:
            require(is_real(negative_weight) and negative_weight >= 0, "negative_weight", negative_weight,
                    f"must be a number >= 0 or '{WAN_WEIGHT}'")
            weight = float(negative_weight)
        self.label_smoothing, self.negative_weight = float(label_smoothing), weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = self.targets_like(logits, targets)
        ls = self.label_smoothing
        elementwise = soft_cross_entropy(logits, y * (1.0 - ls) + (1.0 - y) * ls, self.log_eps)
        return self.reduce(elementwise * (y + (1.0 - y) * self.negative_weight), y)

    def extra_repr(self) -> str:
        return (f"label_smoothing={self.label_smoothing}, negative_weight={self.negative_weight:.6g}, "
                f"log_eps={self.log_eps}, reduction={self.reduction}")


class ExpectedPositiveLoss(SinglePositiveLoss):
    """EPR (Cole et al. 2021): −log p on observed positives, unknowns only through the regulariser
    (mean_i Σ_c p_ic − k)²/C², which asks for k positives per image on average.

    Args:
        expected_positives: k > 0, expected number of positives per image (reference: VOC 1.5,
            COCO 2.5, NUS-WIDE 1.9, CUB 31.4).
    """

    def __init__(self, class_counts: Sequence[float], expected_positives: float = 1.5, log_eps: float = 1e-5,
                 reduction: str = "mean", **unused_stats: object):
        super().__init__(class_counts, reduction, log_eps)
        require(is_real(expected_positives) and 0 < expected_positives <= self.num_classes, "expected_positives",
                expected_positives, f"k must be in (0, {self.num_classes}] (the number of classes)")
        self.expected_positives = float(expected_positives)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = self.targets_like(logits, targets)
        return self.epr(logits, y)

    def epr(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        penalty = expected_positive_penalty(torch.sigmoid(logits), self.expected_positives)
        return self.reduce(y * self.neg_log(logits), y) + penalty

    def extra_repr(self) -> str:
        return f"expected_positives={self.expected_positives}, log_eps={self.log_eps}, reduction={self.reduction}"


class RoleLoss(ExpectedPositiveLoss):
    """ROLE (Cole et al. 2021): a label estimate per training image and class, learned jointly.

    The estimates e = σ(θ) are an ``nn.Parameter`` θ of shape (num_samples, C), optimised with the
    model in their own parameter group (learning rate ``estimate_lr``). With p = σ(z):

        loss = Σ_elements ½[y·(−log p) + y·(−log e)
                            + ē·(−log p) + (1 − ē)·(−log(1 − p))     (classifier towards the estimates)
                            + p̄·(−log e) + (1 − p̄)·(−log(1 − e))] / (B·C)   (estimates towards the classifier)
               + ½[R(p) + R(e)],   R = EPR regulariser,

    where ē and p̄ are detached (the reference), so each side only learns from the other.
    Initialisation as the reference: θ uniform in ±logit(0.6), observed positives at logit(0.995).
    The observed positives are only known from the targets, so a row gets them the first time it is
    seen in training, before its first update (``initialised`` records which rows have).
    In ``eval()`` mode (validation/test loss) the estimates are neither read nor written: the loss is
    the classifier's EPR (positives + regulariser).

    Args:
        num_samples: training-set size (filled in by the trainer).
        estimate_lr: learning rate of θ, or ``None`` for the optimizer's. The reference uses
            10 × the model's learning rate.
        init_seed: seed of θ's random initialisation (independent of the global RNG).
    """

    needs_indices = True
    cost_note = "learns a num_samples × C label-estimate matrix: dense gradient and optimizer state of that size"
    detached_terms = "the estimates in the classifier's cross term and the predictions in the estimates' term"
    INIT_RANGE, INIT_POSITIVE = _logit(0.6), _logit(0.995)

    def __init__(self, class_counts: Sequence[float], num_samples: int, expected_positives: float = 1.5,
                 estimate_lr: float | None = 0.03, init_seed: int = 0, log_eps: float = 1e-5,
                 reduction: str = "mean", **unused_stats: object):
        super().__init__(class_counts, expected_positives, log_eps, reduction)
        require(is_integer(num_samples) and num_samples >= 1, "num_samples", num_samples, "must be >= 1")
        require(estimate_lr is None or (is_real(estimate_lr) and estimate_lr > 0), "estimate_lr", estimate_lr,
                "must be > 0, or null for the optimizer's learning rate")
        require(is_integer(init_seed), "init_seed", init_seed, "must be an integer")
        self.optimizer_options = {} if estimate_lr is None else {"lr": float(estimate_lr)}
        generator = torch.Generator().manual_seed(int(init_seed))
        uniform = torch.rand(num_samples, self.num_classes, generator=generator)
        self.estimate_logits = nn.Parameter(self.INIT_RANGE * (2.0 * uniform - 1.0))
        self.register_buffer("initialised", torch.zeros(num_samples, dtype=torch.bool))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                indices: torch.Tensor | None = None) -> torch.Tensor:
        y = self.targets_like(logits, targets)
        if not self.training:
            return self.epr(logits, y)
        _require_indices(indices, len(y))
        self.initialise_positives(indices, y)
        theta = self.estimate_logits[indices].to(logits.dtype)
        probs, estimates = torch.sigmoid(logits), torch.sigmoid(theta)
        classifier = y * self.neg_log(logits) + soft_cross_entropy(logits, estimates.detach(), self.log_eps)
        estimator = y * self.neg_log(theta) + soft_cross_entropy(theta, probs.detach(), self.log_eps)
        penalty = expected_positive_penalty(probs, self.expected_positives) + \
            expected_positive_penalty(estimates, self.expected_positives)
        return 0.5 * (self.reduce(classifier + estimator, y) + penalty)

    def initialise_positives(self, indices: torch.Tensor, y: torch.Tensor) -> None:
        """Set θ = logit(0.995) at the observed positives of rows seen for the first time."""
        fresh = ~self.initialised[indices]
        if not bool(fresh.any()):
            return
        rows = indices[fresh]
        theta = self.estimate_logits.detach()  # shares storage: an initialisation, not a tracked update
        theta[rows] = torch.where(y[fresh] > 0.5, self.INIT_POSITIVE, theta[rows])
        self.initialised[rows] = True

    def extra_repr(self) -> str:
        return (f"num_samples={len(self.initialised)}, {super().extra_repr()}, "
                f"optimizer_options={self.optimizer_options}")


class EntropyMaximizationLoss(ImplementationSwitch, SinglePositiveLoss):
    """EM (Zhou et al. 2022): −log p on observed positives, −α·H(p) on unknowns (entropy maximisation).

    H(p) = −p log p − (1 − p) log(1 − p), each log as −log(x + ε) of the reference; the loss of an
    unknown is negative and is lowest at p = ½.

    Args:
        alpha: α ≥ 0 (reference: VOC 0.2, COCO 0.1, NUS-WIDE 0.1, CUB 0.01).
        implementation: ``fused`` (closed-form gradient, ``single_positive_fused.em_kernel``) or ``autograd``.
    """

    def __init__(self, class_counts: Sequence[float], alpha: float = 0.2, log_eps: float = 1e-5,
                 reduction: str = "mean", implementation: str = "fused", **unused_stats: object):
        super().__init__(class_counts, reduction, log_eps)
        require(is_real(alpha) and alpha >= 0, "alpha", alpha, "α must be >= 0")
        self.alpha = float(alpha)
        self.select_implementation(implementation)

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor, pseudo: tuple | None = None) -> torch.Tensor:
        """``pseudo`` (EM + APL): (labelled mask, soft label) of the batch's pseudo-labelled unknowns."""
        settings = (self.alpha, self.log_eps)
        if pseudo is not None:
            settings += (pseudo[0].to(logits.dtype), pseudo[1], self.beta)
        return fused.fused_loss(fused.em_kernel, logits, y, settings, self.reduction)

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor, pseudo: tuple | None = None) -> torch.Tensor:
        elementwise = self.entropy_maximization(logits, y)
        if pseudo is not None:
            labelled, soft = pseudo
            elementwise = torch.where(labelled, self.beta * soft_cross_entropy(logits, soft, self.log_eps), elementwise)
        return self.reduce(elementwise, y)

    def entropy_maximization(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        entropy = soft_cross_entropy(logits, torch.sigmoid(logits), self.log_eps)
        return y * self.neg_log(logits) - self.alpha * (1.0 - y) * entropy

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, log_eps={self.log_eps}, reduction={self.reduction}, "
                f"implementation={self.implementation}")


class AsymmetricPseudoLabelLoss(EntropyMaximizationLoss):
    """EM + APL (Zhou et al. 2022): EM, plus soft negative pseudo-labels for the lowest-scored unknowns.

    From epoch ``warmup_epochs`` on (0-based; the reference labels after its 1-based epoch
    ``warmup_epoch``, i.e. before the same 0-based epoch), ``set_epoch`` pseudo-labels, for each class c,
    the ⌊proportion · U_c / (max_epochs − warmup_epochs)⌋ lowest-scored unknowns not labelled yet
    (U_c = training entries of class c that are not observed positives), so that ``proportion`` of
    them are labelled by the last epoch. A pseudo-labelled entry's loss becomes
    β · [s·(−log p) + (1 − s)·(−log(1 − p))] with s its score when labelled (reference) or
    ``soft_label``.

    Departure from the reference (which makes an extra pass over the training set in eval mode after
    the epoch): the scores are those seen during the epoch's own training steps, recorded per row
    through ``indices``; rows not seen in the epoch are not candidates. In ``eval()`` mode the loss is
    plain EM and the state is left alone. ``set_epoch`` is idempotent for an epoch already started
    (a mid-epoch resume keeps the partial scores).

    Args:
        num_samples: training-set size (filled in by the trainer).
        beta: β ≥ 0, weight of the pseudo-label term (reference: VOC 0.02, COCO 0.9, NUS 0.2, CUB 0.4).
        warmup_epochs: epochs before the first pseudo-labelling, ≥ 1 (reference 5; NUS 4, CUB 3).
        proportion: fraction of each class's unknowns labelled by the end, in [0, 1] (reference 0.9).
        soft_label: ``None`` = the entry's score when labelled (reference), or a value in [0, 1).
        implementation: ``fused`` (EM's kernel with the pseudo-labels mixed in) or ``autograd``.
    """

    needs_indices = True
    cost_note = ("every step writes the batch's B × C scores into a num_samples × C record and gathers B × C "
                 "pseudo-label masks and values; sorts each class's scores once per epoch")

    def __init__(self, class_counts: Sequence[float], num_samples: int, alpha: float = 0.2, beta: float = 0.02,
                 warmup_epochs: int = 5, proportion: float = 0.9, soft_label: float | None = None,
                 log_eps: float = 1e-5, reduction: str = "mean", implementation: str = "fused",
                 **unused_stats: object):
        super().__init__(class_counts, alpha, log_eps, reduction, implementation)
        require(is_integer(num_samples) and num_samples >= 1, "num_samples", num_samples, "must be >= 1")
        require(is_real(beta) and beta >= 0, "beta", beta, "β must be >= 0")
        require(is_integer(warmup_epochs) and warmup_epochs >= 1, "warmup_epochs", warmup_epochs,
                "must be an integer >= 1")
        require(is_real(proportion) and 0.0 <= proportion <= 1.0, "proportion", proportion, "must be in [0, 1]")
        require(soft_label is None or (is_real(soft_label) and 0.0 <= soft_label < 1.0), "soft_label", soft_label,
                "must be in [0, 1), or null for the score at labelling time")
        require(all(is_real(n) and 0 <= n <= num_samples for n in class_counts), "class_counts", list(class_counts),
                f"counts must be in [0, num_samples={num_samples}]")
        self.beta, self.warmup_epochs, self.proportion = float(beta), int(warmup_epochs), float(proportion)
        self.soft_label = None if soft_label is None else float(soft_label)
        self.unknown_counts = [num_samples - n for n in class_counts]
        shape = (num_samples, self.num_classes)
        self.register_buffer("scores", torch.full(shape, math.inf))  # this epoch's p; inf = not a candidate
        self.register_buffer("pseudo_mask", torch.zeros(shape, dtype=torch.bool))
        self.register_buffer("pseudo_value", torch.zeros(shape))
        self.register_buffer("current_epoch", torch.tensor(-1))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                indices: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return super().forward(logits, targets)
        y = self.targets_like(logits, targets)
        _require_indices(indices, len(y))
        unknown = y < 0.5
        scores = torch.sigmoid(logits).detach().to(self.scores.dtype)
        self.scores[indices] = torch.where(unknown, scores, math.inf)
        labelled = self.pseudo_mask[indices] & unknown
        return self.dispatch(logits, y, (labelled, self.pseudo_value[indices].to(logits.dtype)))

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        """Pseudo-label from the last epoch's scores (after the warm-up), then start a new record."""
        if epoch == int(self.current_epoch):
            return
        if epoch == 0 and self.warmup_epochs >= max_epochs:  # a run that would silently be plain EM
            logging.getLogger("mlc.losses").warning(
                "em_apl: warmup_epochs=%d >= trainer.max_epochs=%d: no pseudo-labelling will happen (this run is "
                "plain EM); lower loss.warmup_epochs or raise trainer.max_epochs", self.warmup_epochs, max_epochs)
        if self.warmup_epochs <= epoch < max_epochs:
            self.pseudo_label(max_epochs - self.warmup_epochs)
        self.scores.fill_(math.inf)
        self.current_epoch.fill_(epoch)

    def pseudo_label(self, rounds: int) -> None:
        """Label, per class, the lowest-scored candidates (seen this epoch, unknown, not yet labelled)."""
        per_round = torch.tensor([int(self.proportion * u / rounds) for u in self.unknown_counts],
                                 device=self.scores.device)
        candidates = torch.isfinite(self.scores) & ~self.pseudo_mask
        order = torch.where(candidates, self.scores, math.inf).argsort(dim=0, stable=True)
        rank = torch.arange(len(order), device=order.device).unsqueeze(1)
        chosen_sorted = candidates.gather(0, order) & (rank < per_round)
        chosen = torch.zeros_like(self.pseudo_mask).scatter_(0, order, chosen_sorted)
        value = self.scores if self.soft_label is None else torch.full_like(self.scores, self.soft_label)
        self.pseudo_value.copy_(torch.where(chosen, value, self.pseudo_value))
        self.pseudo_mask |= chosen

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, beta={self.beta}, warmup_epochs={self.warmup_epochs}, "
                f"proportion={self.proportion}, soft_label={self.soft_label}")


class HillLoss(ImplementationSwitch, SinglePositiveLoss):
    """Hill (Zhang et al. 2021): positives focal on the margin logit, unknowns (λ − p)·p².

    Positive: (1 − σ(z − m))^γ · (−log σ(z − m)); unknown: (λ − p)p² with p = σ(z). Nothing is
    detached (the reference's focusing weight carries gradient). Reference reduction: sum.

    Args:
        hill_lambda: λ ≥ 0 (reference 1.5; named apart from the any-class loss's ``lam``, so that a
            ``loss.lam`` sweep cannot reach it); margin: m ≥ 0 (reference 1); gamma: γ ≥ 0 (reference 2).
        implementation: ``fused`` (closed-form gradient, ``single_positive_fused.hill_kernel``) or ``autograd``.
    """

    def __init__(self, class_counts: Sequence[float], hill_lambda: float = 1.5, margin: float = 1.0,
                 gamma: float = 2.0, reduction: str = "sum", implementation: str = "fused", **unused_stats: object):
        super().__init__(class_counts, reduction)
        require(is_real(hill_lambda) and hill_lambda >= 0, "hill_lambda", hill_lambda, "λ must be >= 0")
        self.margin, self.gamma = _margin_and_gamma(margin, gamma)
        self.hill_lambda = float(hill_lambda)
        self.select_implementation(implementation)

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        settings = (self.hill_lambda, self.margin, self.gamma)
        return fused.fused_loss(fused.hill_kernel, logits, y, settings, self.reduction)

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        positive = focal_with_logits(logits - self.margin, torch.ones_like(y), self.gamma)
        p = torch.sigmoid(logits)
        return self.reduce(y * positive + (1.0 - y) * (self.hill_lambda - p) * p * p, y)

    def extra_repr(self) -> str:
        return (f"hill_lambda={self.hill_lambda}, margin={self.margin}, gamma={self.gamma}, "
                f"reduction={self.reduction}, implementation={self.implementation}")


class SPLCLoss(ImplementationSwitch, SinglePositiveLoss):
    """SPLC (Zhang et al. 2021): focal-margin loss whose confident unknowns count as positives.

    Observed positives: focal on z − m; unknowns: focal (same γ) as negatives, except that from epoch
    ``start_epoch`` on (0-based, as the reference) an unknown with σ(z) > τ is treated as a positive
    for this batch (its logit is not shifted by the margin, as in the reference). The decision is a
    constant of the batch; the focusing weights carry gradient. Reference reduction: sum.

    Args:
        tau: τ ∈ (0, 1) (reference 0.6); start_epoch: first epoch of the correction (reference 1);
        margin: m ≥ 0 (reference 1); gamma: γ ≥ 0 (reference 2).
        implementation: ``fused`` (closed-form gradient, ``single_positive_fused.splc_kernel``) or ``autograd``.
    """

    def __init__(self, class_counts: Sequence[float], tau: float = 0.6, start_epoch: int = 1, margin: float = 1.0,
                 gamma: float = 2.0, reduction: str = "sum", implementation: str = "fused", **unused_stats: object):
        super().__init__(class_counts, reduction)
        require(is_real(tau) and 0.0 < tau < 1.0, "tau", tau, "τ must be in (0, 1)")
        require(is_integer(start_epoch) and start_epoch >= 0, "start_epoch", start_epoch,
                "must be an integer >= 0")
        self.margin, self.gamma = _margin_and_gamma(margin, gamma)
        self.tau, self.start_epoch = float(tau), int(start_epoch)
        self.select_implementation(implementation)
        self.epoch = 0

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        self.epoch = epoch

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        settings = (self.tau, self.margin, self.gamma, self.epoch >= self.start_epoch)
        return fused.fused_loss(fused.splc_kernel, logits, y, settings, self.reduction)

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        corrected = y
        if self.epoch >= self.start_epoch:
            corrected = torch.where(torch.sigmoid(logits.detach()) > self.tau, torch.ones_like(y), y)
        return self.reduce(focal_with_logits(logits - self.margin * y, corrected, self.gamma), y)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, start_epoch={self.start_epoch}, margin={self.margin}, gamma={self.gamma}, "
                f"reduction={self.reduction}, epoch={self.epoch}, implementation={self.implementation}")


def _margin_and_gamma(margin: float, gamma: float) -> tuple[float, float]:
    require(is_real(margin) and margin >= 0, "margin", margin, "must be >= 0")
    require(is_real(gamma) and gamma >= 0, "gamma", gamma, "γ must be >= 0")
    return float(margin), float(gamma)


class GeneralizedRobustLoss(ImplementationSwitch, SinglePositiveLoss):
    """GR loss (Chen et al., IJCAI 2024; seed 003).

    Observed positive: −log p. Unknown: v(p)·[k̂(p)·L2(p) + (1 − k̂(p))·L3(p)] with
    k̂ = σ(w·p + b) (soft pseudo-label), v = exp(−(p − μ)²/(2σ²)) (reweighting, on detached p),
    L2 = (1 − p^{q2})/q2 (robust loss towards positive), L3 = (1 − (1 − p)^{q3})/q3 (towards negative).
    p^q is computed as exp(q·logsigmoid(z)) and 1 − e^x as −expm1(x): finite value and gradient at any
    logit, where the reference's pow(σ(z), 0.01) has an infinite derivative at σ(z) = 0.

    k̂ is detached by default as in the reference code (``detach_k``); the paper does not say.

    Schedules (``set_epoch``): each of w, b, μ, σ moves linearly from its first to its last value.
    ``schedule: reference`` reproduces the reference code (``linear_init`` = 0): at 0-based epoch e of
    T, w and b are at fraction e/T (they never quite reach their last value) and μ, σ at (e + 1)/T (they
    start one step in). ``schedule: linear`` puts all four at e/(T − 1): first values at the first epoch,
    last values at the last. Before any ``set_epoch`` call, the first values.

    Args:
        w, b, mu, sigma: [first, last] of each schedule (reference [0, 2], [−2, −2], [0.5, 0.8], [2, 0.5]).
        q2, q3: exponents in (0, 1] (reference 0.01, 1).
        implementation: ``fused`` (closed-form gradient, ``single_positive_fused.gr_kernel``) or ``autograd``.
    """

    detached_terms = "v(p) (and k̂(p) with detach_k)"
    SCHEDULES = ("reference", "linear")

    def __init__(self, class_counts: Sequence[float], w: Sequence[float] = (0.0, 2.0),
                 b: Sequence[float] = (-2.0, -2.0), mu: Sequence[float] = (0.5, 0.8),
                 sigma: Sequence[float] = (2.0, 0.5), q2: float = 0.01, q3: float = 1.0, detach_k: bool = True,
                 schedule: str = "reference", log_eps: float = 1e-7, reduction: str = "mean",
                 implementation: str = "fused", **unused_stats: object):
        super().__init__(class_counts, reduction, log_eps)
        self.ranges = {name: _pair(name, value) for name, value in
                       (("w", w), ("b", b), ("mu", mu), ("sigma", sigma))}
        require(min(self.ranges["sigma"]) > 0, "sigma", list(sigma), "σ must be > 0")
        for name, q in (("q2", q2), ("q3", q3)):
            require(is_real(q) and 0 < q <= 1, name, q, "must be in (0, 1]")
        require(isinstance(detach_k, bool), "detach_k", detach_k, "must be true or false")
        require(schedule in self.SCHEDULES, "schedule", schedule, f"must be one of {', '.join(self.SCHEDULES)}")
        self.q2, self.q3, self.detach_k, self.schedule = float(q2), float(q3), detach_k, schedule
        self.detached_terms = "v(p) and k̂(p)" if detach_k else "v(p)"
        self.select_implementation(implementation)
        self.current: dict[str, float] = {}
        self.move_to(0.0, 0.0)

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        if self.schedule == "reference":
            self.move_to(epoch / max_epochs, (epoch + 1) / max_epochs)
        else:
            fraction = epoch / max(max_epochs - 1, 1)
            self.move_to(fraction, fraction)

    def move_to(self, k_fraction: float, v_fraction: float) -> None:
        """Set w, b at ``k_fraction`` and μ, σ at ``v_fraction`` of the way from first to last."""
        for name, fraction in (("w", k_fraction), ("b", k_fraction), ("mu", v_fraction), ("sigma", v_fraction)):
            first, last = self.ranges[name]
            self.current[name] = first + (last - first) * fraction

    def fused_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.current
        settings = (s["w"], s["b"], s["mu"], s["sigma"], self.q2, self.q3, self.detach_k, self.log_eps)
        return fused.fused_loss(fused.gr_kernel, logits, y, settings, self.reduction)

    def autograd_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.current
        p = torch.sigmoid(logits)
        k_hat = torch.sigmoid(s["w"] * (p.detach() if self.detach_k else p) + s["b"])
        v = torch.exp(-((p.detach() - s["mu"]) ** 2) / (2.0 * s["sigma"] ** 2))
        towards_positive = -torch.expm1(self.q2 * log_sigmoid(logits)) / self.q2
        towards_negative = -torch.expm1(self.q3 * log_sigmoid(-logits)) / self.q3
        unknown = v * (k_hat * towards_positive + (1.0 - k_hat) * towards_negative)
        return self.reduce(y * self.neg_log(logits) + (1.0 - y) * unknown, y)

    def extra_repr(self) -> str:
        now = ", ".join(f"{k}={v:.4g}" for k, v in self.current.items())
        return (f"{now}, q2={self.q2}, q3={self.q3}, detach_k={self.detach_k}, schedule={self.schedule}, "
                f"log_eps={self.log_eps}, reduction={self.reduction}, implementation={self.implementation}")


def _pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    require(ok and all(is_real(x) for x in value), name, value, "must be [first, last]: two numbers")
    return float(value[0]), float(value[1])
