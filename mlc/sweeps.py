"""Summaries of Optuna studies: what a sweep found, as a table, JSON and a plot.

The Optuna storage is the source of truth (not the console log), so a summary can be rebuilt at
any time from ``outputs/optuna.db``::

    python -m mlc.sweeps sqlite:///outputs/optuna.db                 # every study in the storage
    python -m mlc.sweeps sqlite:///outputs/optuna.db --prefix lambda_vs_negative_ratio
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_STEM = "sweep_summary"


@dataclass
class StudyRef:
    name: str
    fixed: dict[str, Any] = field(default_factory=dict)  # the grid values this study held fixed


@dataclass
class StudyResult:
    name: str
    fixed: dict[str, Any]
    best_params: dict[str, Any]
    best_value: float | None
    complete: int
    failed: int
    trials: list[tuple[dict[str, Any], float]]  # (params, value) of every complete trial


def load_results(studies: list[StudyRef], storage: str) -> list[StudyResult]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for ref in studies:
        study = optuna.load_study(study_name=ref.name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
        best = study.best_trial if done else None
        out.append(StudyResult(name=ref.name, fixed=ref.fixed, best_params=dict(best.params) if best else {},
                               best_value=best.value if best else None, complete=len(done), failed=failed,
                               trials=[(dict(t.params), float(t.value)) for t in done]))
    return out


def format_table(results: list[StudyResult], monitor: str, searched: list[str]) -> str:
    fixed_keys = list(results[0].fixed) if results else []
    header = [*fixed_keys, *(f"best {k}" for k in searched), f"best {monitor}", "trials ok/failed"]
    rows = []
    for r in results:
        rows.append([*(_fmt(r.fixed[k]) for k in fixed_keys), *(_fmt(r.best_params.get(k)) for k in searched),
                     _fmt(r.best_value), f"{r.complete}/{r.failed}"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def write_summary(studies: list[StudyRef], storage: str, sweep_dir: Path, monitor: str, direction: str,
                  searched: list[str]) -> str:
    """Write ``sweep_summary.{json,md,png}`` into ``sweep_dir``; return the text to print."""
    results = load_results(studies, storage)
    table = format_table(results, monitor, searched)
    (sweep_dir / f"{SUMMARY_STEM}.json").write_text(json.dumps({
        "monitor": monitor, "direction": direction, "storage": storage, "searched": searched,
        "studies": [{"name": r.name, "fixed": r.fixed, "best_params": r.best_params, "best_value": r.best_value,
                     "complete": r.complete, "failed": r.failed,
                     "trials": [{"params": p, "value": v} for p, v in r.trials]} for r in results]}, indent=2))
    plot = _plot(results, sweep_dir / f"{SUMMARY_STEM}.png", monitor, searched)
    parent = (sweep_dir / "mlflow_parent_run_id")
    mlflow_line = (f"MLflow:    `make ui` -> http://127.0.0.1:5000, parent run {parent.read_text().strip()}"
                   if parent.exists() else "MLflow:    tracking disabled")
    text = "\n".join([
        f"Sweep result ({direction} {monitor}; best per study):", "", table, "",
        f"Optuna:    {storage}  ({len(results)} studies named '{results[0].name.split('[')[0]}[...]')"
        if results else "",
        mlflow_line,
        f"Sweep dir: {sweep_dir}  (trial runs 0..N, {SUMMARY_STEM}.md/.json{'/.png' if plot else ''})",
    ])
    (sweep_dir / f"{SUMMARY_STEM}.md").write_text(f"```\n{text}\n```\n")
    return text


def _plot(results: list[StudyResult], path: Path, monitor: str, searched: list[str]) -> Path | None:
    if not searched or not any(r.trials for r in results):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = searched[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in results:
        xs = [p[key] for p, _ in r.trials if key in p]
        ys = [v for p, v in r.trials if key in p]
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r.fixed.items()) or r.name
        points = ax.scatter(xs, ys, alpha=0.6, label=label)
        if r.best_value is not None and key in r.best_params:
            ax.scatter([r.best_params[key]], [r.best_value], marker="*", s=220, color=points.get_facecolor()[0],
                       edgecolors="black")
    if all(x > 0 for r in results for p, _ in r.trials for x in [p.get(key, 1)]):
        ax.set_xscale("log")
    ax.set(xlabel=key, ylabel=monitor, title=f"{monitor} per trial (star: best of each study)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)


def main(argv: list[str] | None = None) -> None:
    import optuna

    parser = argparse.ArgumentParser(description="Summarise the Optuna studies in a storage.")
    parser.add_argument("storage", help="Optuna storage URL, e.g. sqlite:///outputs/optuna.db")
    parser.add_argument("--prefix", default="", help="only studies whose name starts with this")
    args = parser.parse_args(argv)
    names = [s.study_name for s in optuna.get_all_study_summaries(args.storage) if s.study_name.startswith(args.prefix)]
    if not names:
        raise SystemExit(f"error: no study in {args.storage} starts with {args.prefix!r}")
    results = load_results([StudyRef(n) for n in names], args.storage)
    searched = sorted({k for r in results for k in r.best_params})
    for r in results:
        print(f"{r.name}: best {_fmt(r.best_value)} with {r.best_params} ({r.complete} complete, {r.failed} failed)")
    print()
    print(format_table(results, "value", searched))


if __name__ == "__main__":
    main()
