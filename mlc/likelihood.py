"""The two-class simulation of the any-class presence likelihood (LOSSES.md §1), in numpy float64.

For class probabilities p = (p1, p2), labels y = (y1, y2) and the absent-class weight λ it gives:

- the two ways of aggregating class probabilities into "some class is present": the product Π p_c and
  the normalised weighted geometric mean p_a = Π p^w / (Π p^w + Π (1−p)^w), w = v / Σv, with v_c = 1
  for present classes and λ for absent ones in a positive instance, v_c = 1 for every class of a
  negative one;
- the likelihoods: BCE Π p^y (1−p)^(1−y), any-class p_a^y_a (1−p_a)^(1−y_a) (y_a = 1 iff any y_c = 1),
  and their product BCE · any^α;
- the losses, their negative logs, computed from logits z = logit(p) with softplus, so they stay finite
  where the probabilities round to 0 or 1: p_a = σ(z_a) with z_a = Σ v z / Σ v.

Probabilities and logits carry the classes on the last axis; everything broadcasts over the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LABEL_PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (0, 1), (1, 1))

# Surfaces returned by `surfaces`, in display order: name -> title.
SURFACES: dict[str, str] = {
    "product": "product p1·p2",
    "geometric_mean": "weighted geometric mean p_a",
    "bce_likelihood": "BCE likelihood Π p^y (1−p)^(1−y)",
    "any_likelihood": "any-class likelihood p_a^y_a (1−p_a)^(1−y_a)",
    "combined_likelihood": "BCE × any-class^α",
    "bce_loss": "BCE loss −log",
    "any_loss": "any-class loss −log",
    "combined_loss": "BCE + α·any-class loss",
}


def check_labels(labels: Sequence[int]) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 1 or y.size == 0 or not np.all((y == 0) | (y == 1)):
        raise ValueError(f"labels must be a non-empty sequence of 0/1, got {labels!r}")
    return y


def check_lam(lam: float) -> float:
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:  # also rejects NaN
        raise ValueError(f"λ must be in [0, 1], got {lam!r}")
    return lam


def any_class_target(labels: Sequence[int]) -> float:
    """y_a: 1 if any class is present, else 0."""
    return float(check_labels(labels).any())


def class_weights(labels: Sequence[int], lam: float) -> np.ndarray:
    """v: 1 for present classes and λ for absent ones (positive instance); all 1 for a negative one."""
    y = check_labels(labels)
    lam = check_lam(lam)
    if not y.any():
        return np.ones_like(y)
    return np.where(y == 1, 1.0, lam)


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z), exact for any float64 z."""
    return np.logaddexp(0.0, z)


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    """log σ(z) = −softplus(−z)."""
    return -softplus(-z)


def logit(p: np.ndarray) -> np.ndarray:
    """log p − log(1 − p)."""
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


# Probability forms (what the app shows as surfaces; they round to 0/1 at the edges).

def product(p: np.ndarray) -> np.ndarray:
    return np.prod(np.asarray(p, dtype=np.float64), axis=-1)


def weighted_geometric_mean(p: np.ndarray, labels: Sequence[int], lam: float) -> np.ndarray:
    """p_a = Π p^w / (Π p^w + Π (1−p)^w), w = v / Σv, from the probabilities."""
    p = np.asarray(p, dtype=np.float64)
    v = class_weights(labels, lam)
    w = v / v.sum()
    up = np.prod(p ** w, axis=-1)
    down = np.prod((1.0 - p) ** w, axis=-1)
    return up / (up + down)


def bce_likelihood(p: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    y = check_labels(labels)
    return np.prod(p ** y * (1.0 - p) ** (1.0 - y), axis=-1)


def any_likelihood(p: np.ndarray, labels: Sequence[int], lam: float) -> np.ndarray:
    p_a = weighted_geometric_mean(p, labels, lam)
    return p_a if any_class_target(labels) else 1.0 - p_a


def combined_likelihood(p: np.ndarray, labels: Sequence[int], lam: float, alpha: float = 1.0) -> np.ndarray:
    return bce_likelihood(p, labels) * any_likelihood(p, labels, lam) ** alpha


# Logit forms (the losses: negative log-likelihoods, stable for any logit).

def any_class_logit(z: np.ndarray, labels: Sequence[int], lam: float) -> np.ndarray:
    """z_a = Σ v z / Σ v, so that σ(z_a) = p_a."""
    v = class_weights(labels, lam)
    return np.asarray(z, dtype=np.float64) @ v / v.sum()


def bce_loss(z: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Σ_c softplus(z_c) − y_c z_c = −log of the BCE likelihood."""
    z = np.asarray(z, dtype=np.float64)
    return np.sum(softplus(z) - check_labels(labels) * z, axis=-1)


def any_loss(z: np.ndarray, labels: Sequence[int], lam: float) -> np.ndarray:
    """softplus(z_a) − y_a z_a = −log of the any-class likelihood."""
    z_a = any_class_logit(z, labels, lam)
    return softplus(z_a) - any_class_target(labels) * z_a


def combined_loss(z: np.ndarray, labels: Sequence[int], lam: float, alpha: float = 1.0) -> np.ndarray:
    return bce_loss(z, labels) + alpha * any_loss(z, labels, lam)


def grid(points: int = 201, eps: float = 1e-6) -> np.ndarray:
    """Probabilities from ``eps`` to ``1 − eps``: the open interval (0, 1), edges included as closely as asked."""
    if points < 2:
        raise ValueError(f"a grid needs at least 2 points, got {points}")
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    return np.linspace(eps, 1.0 - eps, points)


def surfaces(p1: np.ndarray, p2: np.ndarray, labels: Sequence[int], lam: float,
             alpha: float = 1.0) -> dict[str, np.ndarray]:
    """Every surface of `SURFACES` over the mesh of ``p1`` (x, columns) and ``p2`` (y, rows)."""
    if len(check_labels(labels)) != 2:
        raise ValueError(f"the simulation has two classes, got labels {labels!r}")
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha >= 0.0):
        raise ValueError(f"α must be finite and >= 0, got {alpha!r}")
    x, y = np.meshgrid(np.asarray(p1, dtype=np.float64), np.asarray(p2, dtype=np.float64))
    p = np.stack([x, y], axis=-1)
    z = logit(p)
    return {
        "product": product(p),
        "geometric_mean": weighted_geometric_mean(p, labels, lam),
        "bce_likelihood": bce_likelihood(p, labels),
        "any_likelihood": any_likelihood(p, labels, lam),
        "combined_likelihood": combined_likelihood(p, labels, lam, alpha),
        "bce_loss": bce_loss(z, labels),
        "any_loss": any_loss(z, labels, lam),
        "combined_loss": combined_loss(z, labels, lam, alpha),
    }
