"""What a paired comparison over seeds can and cannot say: its verdict, and what the seeds could detect.

A difference over a few seeds is an answer only when its interval says so. The rules, one per word:

- **better** / **worse**: the 95% Student-t interval of the mean paired difference excludes 0 and
  does not lie inside ±δ (and,
  in a table of several comparisons, the verdict survives Holm's correction over all of them:
  ``holm``; otherwise the row says it did not);
- **equivalent**: the 95% interval lies inside ±δ, the margin below which a difference does not
  matter (``DEFAULT_MARGIN``, ``mlc report --margin``). This is the two one-sided tests (TOST) at
  2.5% each: both "the difference is below -δ" and "above +δ" are rejected;
- **inconclusive**: anything else. It is not "no difference": the seeds could not tell.

Beside each verdict: the **minimum detectable effect** (MDE), the true difference that these n pairs
would detect with 80% power in a two-sided paired t-test at 5% given the observed spread of the
differences, and the **seeds needed** to detect δ with 80% power at that spread. An inconclusive row
with an MDE of 0.08 says that a difference of 0.03 could easily have been missed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special, stats

BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"
NO_INTERVAL = "n=1: no interval"
NO_PAIRS = "no common seed"
ALPHA = 0.05
POWER = 0.8
# δ: metrics are fractions (F1, mAP, F1-Neg); a paper would not claim a gain below one point of them.
DEFAULT_MARGIN = 0.01
MAX_SEEDS = 1000  # beyond this the seeds needed are reported as "> 1000"


def level(alpha: float = ALPHA) -> str:
    """An interval's confidence as the tables print it: 0.05 -> "95%", 0.05 / 3 -> "98.3%"."""
    return f"{100 * (1 - alpha):.3g}%"


def interval(d: np.ndarray, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """Student-t interval of the mean of ``d`` (at least two values)."""
    half = float(special.stdtrit(len(d) - 1, 0.5 + confidence / 2) * d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()) - half, float(d.mean()) + half


def p_value(d: np.ndarray) -> float:
    """Two-sided paired t-test p-value of mean(d) = 0 (1.0 when every difference is 0)."""
    sd = float(d.std(ddof=1))
    if sd == 0:
        return 1.0 if float(d.mean()) == 0 else 0.0
    t = float(d.mean()) / (sd / math.sqrt(len(d)))
    return float(2 * special.stdtr(len(d) - 1, -abs(t)))


def verdict(low: float, high: float, mean: float, margin: float, lower_better: bool = False) -> str:
    """The word for a 95% interval [low, high]. Inside ±δ is *equivalent* even when it excludes 0: a
    difference that is surely there but surely smaller than δ is one that does not matter."""
    if -margin < low and high < margin:
        return EQUIVALENT
    if low > 0 or high < 0:
        return BETTER if (mean > 0) != lower_better else WORSE
    return INCONCLUSIVE


def power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample (paired) t-test with n pairs at standardised effect ``effect``."""
    df, nc = n - 1, effect * math.sqrt(n)
    crit = float(special.stdtrit(df, 1 - alpha / 2))
    # P(T > crit) + P(T < -crit), the upper tail as the lower tail of -T: scipy.special's distribution function is
    # ~50x faster than scipy.stats' (the simulations of mlc.report.sequential call this thousands of times), but it
    # gives NaN far in the tails, where stats.nct's survival function (Boost) is used instead
    fast = float(special.nctdtr(df, -nc, -crit) + special.nctdtr(df, nc, -crit))
    return fast if math.isfinite(fast) else float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


@functools.lru_cache(maxsize=1024)  # a function of (n, alpha, target) alone: a table asks it once per pair count
def detectable_effect(n: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The standardised effect (mean / sd of the differences) that n pairs detect with ``target`` power."""
    return float(optimize.brentq(lambda e: power(e, n, alpha) - target, 1e-6, 30.0, xtol=1e-12))


def seeds_needed(effect: float, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """The fewest pairs (≥ 2) that detect standardised effect ``effect`` with ``target`` power (None: > MAX_SEEDS)."""
    if effect <= 0:
        return None
    if power(effect, MAX_SEEDS, alpha) < target:
        return None
    # power grows with n: start at the normal approximation's n and step to the first n that reaches the target
    # (the t test needs a little more than the z test, so this is one to three steps, not a bisection)
    guess = ((special.ndtri(1 - alpha / 2) + special.ndtri(target)) / effect) ** 2
    n = min(MAX_SEEDS, max(2, math.ceil(guess)))
    while power(effect, n, alpha) < target:
        n += 1
    while n > 2 and power(effect, n - 1, alpha) >= target:
        n -= 1
    return n


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which of the hypotheses are rejected with family-wise error ≤ ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected
