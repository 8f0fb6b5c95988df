"""Class-balanced weights from the "effective number of samples" (Cui et al. 2019)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from mlc.errors import require

log = logging.getLogger(__name__)


def class_balanced_weights(counts: Sequence[float], beta: float) -> np.ndarray:
    """w_k = (1 − β) / (1 − β^{n_k}), scaled so the weights sum to the number of classes (float64).

    ``1 − β^n`` is computed as ``−expm1(n·log β)``: with β = 0.9999 and small n the naive form loses
    most of its significant digits in float32 (the reference code's precision).

    A class with n_k = 0 has an infinite weight by the formula; it can never appear in a training
    batch, so instead of letting it zero every other weight through the normalisation, it is left out
    of the normalisation and given weight 1 (the mean weight). With every n_k > 0 this is exactly the
    reference computation. β = 0 gives uniform weights.
    """
    n = np.asarray(counts, dtype=np.float64)
    require(n.ndim == 1 and n.size > 0, "class_counts", list(n.ravel()[:8]), "must be a non-empty 1-D list")
    require(bool(np.all(np.isfinite(n)) and np.all(n >= 0)), "class_counts", list(n), "counts must be >= 0")
    require(0.0 <= beta < 1.0, "beta", beta, "class-balancing β must be in [0, 1)")
    weights = np.ones_like(n)
    seen = n > 0
    if seen.any():
        with np.errstate(divide="ignore"):
            log_beta = np.log(beta) if beta > 0 else -np.inf
        effective = -np.expm1(n[seen] * log_beta)  # 1 − β^n
        raw = (1.0 - beta) / effective
        weights[seen] = raw / raw.sum() * seen.sum()
    if not seen.all():
        log.warning("class-balanced weights: %d class(es) have no training instance; they get weight 1",
                    int((~seen).sum()))
    return weights
