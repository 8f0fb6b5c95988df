"""``python -m benchmarks [NAME ...]`` (``make bench``): run every benchmark, or the named ones; save the tables."""

import sys

from benchmarks import data, losses, metrics, sweeps, training

BENCHES = {"losses": losses, "training": training, "data": data, "metrics": metrics, "sweeps": sweeps}

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(f"usage: python -m benchmarks [NAME ...]\n\n{__doc__.split(': ', 1)[1]}\n\nnames: {', '.join(BENCHES)}")
        sys.exit(0)
    names = sys.argv[1:] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        sys.exit(f"error: unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    for name in names:
        print(BENCHES[name].run())
    print("tables written to experiments/benchmarks/")
