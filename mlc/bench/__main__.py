"""``python -m mlc.bench`` (``make bench``): run every benchmark, print and save the tables."""

from mlc.bench import data, losses, metrics, training

if __name__ == "__main__":
    for bench in (losses, training, data, metrics):
        print(bench.run())
    print("tables written to experiments/benchmarks/")
