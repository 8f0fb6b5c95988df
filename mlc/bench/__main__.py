"""``python -m mlc.bench [NAME ...]`` (``make bench``): run every benchmark, or the named ones; save the tables."""

import sys

from mlc.bench import data, losses, metrics, sweeps, training

BENCHES = {"losses": losses, "training": training, "data": data, "metrics": metrics, "sweeps": sweeps}

if __name__ == "__main__":
    names = sys.argv[1:] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        sys.exit(f"error: unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    for name in names:
        print(BENCHES[name].run())
    print("tables written to experiments/benchmarks/")
