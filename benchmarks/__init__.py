"""Benchmarks (``make bench``). Each reports ratios against a baseline measured in the same process,
and writes its table to ``experiments/benchmarks/``. They are measurements, not tests: nothing here
asserts a time."""
