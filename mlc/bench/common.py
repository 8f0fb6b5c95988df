"""Shared pieces of the benchmarks: timing and the machine description written with every table."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parents[2] / "experiments" / "benchmarks"


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


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{date.today().isoformat()} · {cpu} · {os.cpu_count()} cores · torch {torch.__version__} "
            f"({torch.get_num_threads()} threads) · Python {platform.python_version()}")


def write(name: str, text: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(text)
    return path
