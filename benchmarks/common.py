"""Shared pieces of the benchmarks: timing and writing the tables (the machine line: ``mlc.provenance``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from mlc.engine.callbacks import Callback

RESULTS_DIR = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def median_seconds(fn: Callable[[], object], min_time: float = 0.3, repeats: int = 7, warmup: int = 3) -> float:
    """Median over ``repeats`` rounds of the mean time per call; each round runs at least ``min_time``."""
    for _ in range(warmup):
        fn()
    number = 1
    while True:  # calibrate: calls per round so that a round lasts >= min_time
        start = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - start >= min_time / 4 or number >= 1 << 16:
            break
        number *= 2
    number = max(1, int(number * min_time / max(time.perf_counter() - start, 1e-9) / 4) * 4 // 4)
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number)
    return statistics.median(rounds)


def calls_per_round(fn: Callable[[], object], min_time: float) -> int:
    """How many calls of ``fn`` take about ``min_time`` seconds (after one warm-up call)."""
    fn()
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / 4 or number >= 1 << 16:
            return max(1, round(number * min_time / max(elapsed, 1e-9)))
        number *= 2


def median_ratio(candidate: Callable[[], object], baseline: Callable[[], object], rounds: int = 15,
                 min_time: float = 0.04, warmup: int = 3) -> tuple[float, float]:
    """Median over ``rounds`` of time(candidate) / time(baseline), the two timed back to back each round.

    Why interleaved: on a shared 2-core machine the speed drifts by tens of percent within seconds
    (other processes, allocator state); both sides of one round see the same drift, so their ratio is
    far steadier than a ratio of two separately taken medians. Returns (ratio, median baseline seconds).
    """
    for _ in range(warmup):
        candidate(), baseline()
    n_candidate, n_baseline = calls_per_round(candidate, min_time), calls_per_round(baseline, min_time)
    ratios, base_times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n_baseline):
            baseline()
        mid = time.perf_counter()
        for _ in range(n_candidate):
            candidate()
        end = time.perf_counter()
        base_times.append((mid - start) / n_baseline)
        ratios.append(((end - mid) / n_candidate) / base_times[-1])
    return statistics.median(ratios), statistics.median(base_times)


class AlternatingRates(Callback):
    """A trainer callback that runs ``bare_epoch(epoch)`` (a hand-written loop, returning images/s) after
    each trainer epoch, so both loops see the same machine drift; the first round warms up. ``summary()``:
    medians of both rates and of their per-round ratio (trainer / bare)."""

    def __init__(self, bare_epoch: Callable[[int], float]):
        self.bare_epoch, self.rates = bare_epoch, []

    def on_epoch_end(self, trainer, record: dict, improved: bool) -> None:
        bare = self.bare_epoch(int(record["epoch"]))
        if record["epoch"] > 1:
            self.rates.append((record["train/samples_per_s"], bare))

    def summary(self) -> dict[str, float]:
        return {"trainer": statistics.median(t for t, _ in self.rates),
                "bare": statistics.median(b for _, b in self.rates),
                "ratio": statistics.median(t / b for t, b in self.rates), "rounds": len(self.rates)}


def write(name: str, text: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(text)
    return path
