"""Summaries of Optuna studies: what a sweep found, as a table, JSON and a plot; and stale-trial cleanup.

The Optuna storage is the source of truth (not the console log), so a summary can be rebuilt at
any time, and trials whose process died can be closed, from the command line::

    python -m mlc.sweep.summary sqlite:///outputs/optuna.db                  # every study in the storage
    python -m mlc.sweep.summary sqlite:///outputs/optuna.db --prefix demo    # studies whose name starts so
    python -m mlc.sweep.summary sqlite:///outputs/optuna.db --fail-stale     # dead RUNNING trials -> FAIL,
                                                                      # their MLflow runs -> KILLED

A study's status: ``ok`` (it reached ``n_trials`` finished trials, or has a result and no target
is known), ``all pruned`` (every trial was stopped by the pruner), ``incomplete`` (it has a result
but fewer finished trials than asked), ``failed`` (no trial completed, or more failed than
``max_failure_rate`` allows), ``not run``.

A trial whose run recorded a degenerate best checkpoint (``"degenerate"`` in its run folder's ``result.json``,
the folder the sweeper put in the trial's ``mlc.run_dir`` attribute; ``mlc.metrics.DEGENERATE_RULES``) is
marked in the JSON, and a study whose best trial is one gets a ``degenerate`` column in the table and a
one-line warning under it: its objective rewarded a model that does not tell images apart.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlc.metrics import DEGENERATE_RULES

SUMMARY_STEM = "sweep_summary"


@dataclass
class StudyRef:
    name: str
    fixed: dict[str, Any] = field(default_factory=dict)  # the grid values this study held fixed
    n_trials: int | None = None  # finished trials the sweep asks for (None: unknown, e.g. from the CLI)


@dataclass
class StudyResult:
    name: str
    fixed: dict[str, Any]
    best_params: dict[str, Any]
    best_value: float | None
    complete: int
    pruned: int
    failed: int  # not counting the interrupted ones
    interrupted: int  # stopped by Ctrl-C/SIGTERM (each continues at the next run)
    running: int
    stale: int  # of the running: no heartbeat within the grace period (their process died)
    waiting: int  # queued (e.g. an interrupted trial to continue)
    n_trials: int | None
    trials: list[tuple[dict[str, Any], float]]  # (params, value) of every complete trial
    max_failure_rate: float = 1.0
    trial_degenerate: list[str | None] = field(default_factory=list)  # per complete trial (as ``trials``)
    trial_seeds: list[dict[str, float]] = field(default_factory=list)  # per complete trial: {seed: value} (K > 1)
    best_number: int | None = None
    best_run_dir: str | None = None
    best_degenerate: str | None = None  # the rule the best trial's run broke, None: not degenerate (or unknown)
    objectives: list[str] = field(default_factory=list)  # a multi-objective study's (its trials' value is None)
    trial_values: list[list[float]] = field(default_factory=list)  # per complete trial: each objective's value
    pareto: list[bool] = field(default_factory=list)  # per complete trial: on the study's Pareto front

    @property
    def status(self) -> str:
        ran = self.complete + self.pruned + self.failed
        if self.interrupted and self.complete + self.pruned < (self.n_trials or 0):
            return "interrupted" if self.complete == 0 else "incomplete"
        if self.complete == 0:
            if self.pruned and not self.failed:
                return "all pruned"  # every trial stopped early: no result, but nothing went wrong
            return "failed" if self.failed else "interrupted" if self.interrupted else "not run"
        if self.failed / ran > self.max_failure_rate:
            return "failed"
        if self.n_trials is not None and self.complete + self.pruned < self.n_trials:
            return "incomplete"
        return "ok"


def outcome(results: list[StudyResult], interrupted: str | None = None) -> tuple[int, str]:
    """(exit code, message) of a sweep, from its studies alone: 0 only when every study reached ``n_trials``
    finished trials with nothing left running; 130 if it was interrupted; else 1, saying what is missing."""
    if interrupted:
        return 130, f"sweep {interrupted}; run the same command to continue it"
    failed = [r.name for r in results if r.status == "failed"]
    if failed:
        rate = "" if all(r.max_failure_rate >= 1 for r in results) else " or too many failed"
        return 1, f"{len(failed)} of {len(results)} studies failed (no trial completed{rate}): {', '.join(failed)}"
    short = [r for r in results if r.status not in ("ok", "all pruned") or r.running]
    if short:
        said = "; ".join(f"{r.name}: {r.complete + r.pruned}/{r.n_trials} finished, {r.failed} failed, "
                         f"{r.interrupted} interrupted, {r.running} running" for r in short[:3])
        return 1, (f"{len(short)} of {len(results)} studies did not reach n_trials ({said}); run the same command "
                   f"to run the missing trials")
    return 0, ""


def read_outcome(sweep_dir: Path) -> tuple[int, str] | None:
    """The outcome ``write_summary`` recorded in ``sweep_dir``, None if no mlc sweep wrote one there."""
    try:
        recorded = json.loads((sweep_dir / f"{SUMMARY_STEM}.json").read_text())["outcome"]
        return int(recorded["code"]), str(recorded["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_results(studies: list[StudyRef], storage: Any, max_failure_rate: float = 1.0) -> list[StudyResult]:
    import optuna
    from optuna.trial import TrialState

    # deferred: mlc.sweep.study loads Optuna; every Hydra run imports this module (sweeper plugin, callbacks)
    from mlc.sweep.study import (
        ATTR_INTERRUPTED,
        ATTR_OBJECTIVES,
        ATTR_RUN_DIR,
        ATTR_SEED_VALUES,
        ATTR_SURPLUS,
        stale_trial_numbers,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for ref in studies:
        study = optuna.load_study(study_name=ref.name, storage=storage)
        trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(ATTR_SURPLUS)]  # never ran
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        count = {s: sum(t.state == s for t in trials) for s in TrialState}
        interrupted = sum(t.state == TrialState.FAIL and bool(t.user_attrs.get(ATTR_INTERRUPTED)) for t in trials)
        multi = len(study.directions) > 1  # a Pareto front, no one best trial
        best = study.best_trial if done and not multi else None
        front = {t.number for t in study.best_trials} if done and multi else set()
        flags = {t.number: trial_degenerate(t.user_attrs) for t in done}
        names = list(study.user_attrs.get(ATTR_OBJECTIVES) or [f"objective {i + 1}"
                                                                for i in range(len(study.directions))])
        out.append(StudyResult(
            name=ref.name, fixed=ref.fixed, best_params=dict(best.params) if best else {},
            best_value=best.value if best else None, complete=len(done), pruned=count[TrialState.PRUNED],
            failed=count[TrialState.FAIL] - interrupted, interrupted=interrupted, running=count[TrialState.RUNNING],
            stale=len(stale_trial_numbers(study)),
            waiting=count[TrialState.WAITING], n_trials=ref.n_trials,
            trials=[(dict(t.params), None if multi else float(t.value)) for t in done],
            max_failure_rate=max_failure_rate, objectives=names if multi else [],
            trial_values=[list(map(float, t.values)) for t in done] if multi else [],
            pareto=[t.number in front for t in done] if multi else [],
            trial_degenerate=[flags[t.number] for t in done], best_number=best.number if best else None,
            trial_seeds=[dict(t.user_attrs.get(ATTR_SEED_VALUES) or {}) for t in done],
            best_run_dir=best.user_attrs.get(ATTR_RUN_DIR) if best else None,
            best_degenerate=flags[best.number] if best else None))
    return out


def trial_degenerate(attrs: dict[str, Any]) -> str | None:
    """The rule a trial's run broke (``run_degenerate``); with K > 1 seeds, the first that any seed's run broke."""
    # deferred: mlc.sweep.study loads Optuna; every Hydra run imports this module (sweeper plugin, callbacks)
    from mlc.sweep.study import ATTR_RUN_DIR, ATTR_RUN_DIRS

    dirs = list((attrs.get(ATTR_RUN_DIRS) or {}).values()) or [attrs.get(ATTR_RUN_DIR)]
    return next((flag for flag in map(run_degenerate, dirs) if flag), None)


def run_degenerate(run_dir: str | None) -> str | None:
    """The rule a trial's run recorded as broken by its best checkpoint (``"degenerate"`` in its ``result.json``);
    None when it is not degenerate or cannot be told (no folder, no result.json yet, another machine's folder)."""
    if not run_dir:
        return None
    try:
        flag = json.loads((Path(run_dir) / "result.json").read_text()).get("degenerate")
    except (OSError, ValueError, AttributeError):
        return None
    return str(flag) if flag else None


def degenerate_warnings(results: list[StudyResult], monitor: str) -> list[str]:
    """One line per study whose best trial is degenerate."""
    return [f"warning: {r.name}: the best trial #{r.best_number} ({monitor} = {_fmt(r.best_value)}) is degenerate "
            f"({r.best_degenerate}: {DEGENERATE_RULES.get(r.best_degenerate, 'see its run log')}); the objective "
            f"ranked first a model that barely tells images apart (run dir {r.best_run_dir})"
            for r in results if r.best_degenerate]


def format_table(results: list[StudyResult], monitor: str, searched: list[str]) -> str:
    fixed_keys = list(results[0].fixed) if results else []
    flagged = any(r.best_degenerate for r in results)
    multi = any(r.objectives for r in results)
    header = [*fixed_keys, *(f"best {k}" for k in searched), f"best {monitor}", *(["degenerate"] if flagged else []),
              *(["pareto front"] if multi else []), "finished", "failed", "running", "status"]
    rows = []
    for r in results:
        finished = f"{r.complete + r.pruned}/{r.n_trials}" if r.n_trials is not None else str(r.complete + r.pruned)
        running = f"{r.running} ({r.stale} stale)" if r.stale else str(r.running)
        if r.waiting:
            running += f" +{r.waiting} queued"
        rows.append([*(_fmt(r.fixed[k]) for k in fixed_keys), *(_fmt(r.best_params.get(k)) for k in searched),
                     _fmt(r.best_value), *([_fmt(r.best_degenerate)] if flagged else []),
                     *([f"{sum(r.pareto)} trial(s)" if r.objectives else "-"] if multi else []), finished,
                     f"{r.failed} (+{r.interrupted} interrupted)" if r.interrupted else str(r.failed), running,
                     r.status])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([*lines, *pareto_lines(results, searched), *degenerate_warnings(results, monitor)])


def pareto_lines(results: list[StudyResult], searched: list[str]) -> list[str]:
    """Each multi-objective study's Pareto front, one trial per line: no trial on it is worse than another
    in every objective, so the choice between them is the user's trade-off (e.g. F1 against F1-Neg)."""
    lines = []
    for r in results:
        if not r.objectives or not any(r.pareto):
            continue
        lines.append(f"{r.name}: Pareto front ({', '.join(r.objectives)}):")
        front = sorted((v, p) for (p, _), v, on in zip(r.trials, r.trial_values, r.pareto, strict=True) if on)
        for values, params in front:
            lines.append("  " + "  ".join([*(f"{k}={_fmt(params.get(k))}" for k in searched),
                                            *(f"{n}={_fmt(v)}" for n, v in zip(r.objectives, values, strict=True))]))
    return lines


def write_summary(studies: list[StudyRef], storage: Any, storage_url: str, sweep_dir: Path, monitor: str,
                  direction: str, searched: list[str], tracking: bool, max_failure_rate: float = 1.0,
                  interrupted: str | None = None, objectives: Any = ()
                  ) -> tuple[str, list[StudyResult], tuple[int, str]]:
    """Write ``sweep_summary.{json,md,png}`` into ``sweep_dir``, with the sweep's outcome read from its
    studies; return the text to print, the results and the outcome."""
    results = load_results(studies, storage, max_failure_rate)
    table = format_table(results, monitor, searched)
    code, message = outcome(results, interrupted)
    _write_atomic(sweep_dir / f"{SUMMARY_STEM}.json", json.dumps({
        "outcome": {"code": code, "message": message}, "max_failure_rate": max_failure_rate,
        "monitor": monitor, "direction": direction, "storage": storage_url, "searched": searched,
        "objectives": [list(o) for o in objectives],  # [[val metric, direction], ...]; [] = one objective, the monitor
        "studies": [{"name": r.name, "fixed": r.fixed, "status": r.status, "best_params": r.best_params,
                     "best_value": r.best_value, "best_number": r.best_number, "best_degenerate": r.best_degenerate,
                     "n_trials": r.n_trials, "complete": r.complete, "pruned": r.pruned,
                     "failed": r.failed, "interrupted": r.interrupted, "running": r.running, "stale": r.stale,
                     "trials": [{"params": p, "value": v, "degenerate": d, **({"seeds": k} if k else {}), **m}
                                for (p, v), d, k, m in zip(r.trials, _flags(r), _seeds(r), _multi(r), strict=True)]}
                    for r in results]},
        indent=2))
    plot = _plot(results, sweep_dir / f"{SUMMARY_STEM}.png", monitor, searched)
    parent = sweep_dir / "mlflow_parent_run_id"
    if parent.exists():
        mlflow_line = f"MLflow:    `make ui` -> http://127.0.0.1:5000, parent run {parent.read_text().strip()}"
    elif tracking:
        mlflow_line = "MLflow:    no parent run was recorded for this sweep (see the log above)"
    else:
        mlflow_line = "MLflow:    tracking disabled (tracking=none)"
    prefix = results[0].name.split("[")[0] if results else ""
    text = "\n".join([
        (f"Sweep result (Pareto front of {', '.join(f'{n} ({d})' for n, d in objectives)} per study; each trial's "
         f"best epoch by {monitor}):" if objectives else f"Sweep result ({direction} {monitor}; best per study):"),
        "", table, "",
        f"Optuna:    {storage_url}  ({len(results)} {'study' if len(results) == 1 else 'studies'} "
        f"named '{prefix}[...]')",
        mlflow_line,
        f"Sweep dir: {sweep_dir}  (trial runs 0..N, {SUMMARY_STEM}.md/.json{'/.png' if plot else ''})",
    ])
    _write_atomic(sweep_dir / f"{SUMMARY_STEM}.md", f"```\n{text}\n```\n")
    return text, results, (code, message)


def refresh_summary(sweep_dir: Path, tracking: bool, interrupted: str | None = None
                    ) -> tuple[str, list[StudyResult], tuple[int, str]] | None:
    """Re-write a sweep's summary from its studies' state now (``mlc sweep --workers``: the last worker to
    write it may have read the studies before another finished its trial); None if there is none."""
    # deferred: mlc.sweep.study loads Optuna; every Hydra run imports this module (sweeper plugin, callbacks)
    from mlc.sweep.study import open_storage

    try:
        recorded = json.loads((sweep_dir / f"{SUMMARY_STEM}.json").read_text())
        storage = open_storage(recorded["storage"], key="storage", must_exist=True, heartbeat_interval=None,
                               grace_period=None)
    except (OSError, ValueError, KeyError):
        return None
    studies = [StudyRef(s["name"], s["fixed"], s["n_trials"]) for s in recorded["studies"]]
    return write_summary(studies, storage, recorded["storage"], sweep_dir, recorded["monitor"],
                         recorded["direction"], recorded["searched"], tracking,
                         recorded.get("max_failure_rate", 1.0), interrupted,
                         [tuple(o) for o in recorded.get("objectives") or []])


def _plot(results: list[StudyResult], path: Path, monitor: str, searched: list[str]) -> Path | None:
    if any(r.objectives for r in results):
        return _plot_pareto(results, path)
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
    if all(isinstance(x, (int, float)) and x > 0 for r in results for p, _ in r.trials for x in [p.get(key, 1)]):
        ax.set_xscale("log")
    ax.set(xlabel=key, ylabel=monitor, title=f"{monitor} per trial (star: best of each study)")
    return _save(fig, ax, path)


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Finish a summary plot and write it whole (workers sharing a sweep directory each write it)."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _plot_pareto(results: list[StudyResult], path: Path) -> Path | None:
    """The first two objectives of every trial, per study, its Pareto front joined by a line."""
    shown = [r for r in results if r.objectives and r.trial_values]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in shown:
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r.fixed.items()) or r.name
        points = ax.scatter([v[0] for v in r.trial_values], [v[1] for v in r.trial_values], alpha=0.5, label=label)
        front = sorted(v[:2] for v, on in zip(r.trial_values, r.pareto, strict=True) if on)
        ax.plot([v[0] for v in front], [v[1] for v in front], marker="*", markersize=12,
                color=points.get_facecolor()[0], markeredgecolor="black")
    ax.set(xlabel=shown[0].objectives[0], ylabel=shown[0].objectives[1],
           title="every trial; stars joined: each study's Pareto front")
    return _save(fig, ax, path)


def _multi(r: StudyResult) -> list[dict[str, Any]]:
    """Each complete trial's objective values and whether it is on the Pareto front (a multi-objective study)."""
    if not r.objectives:
        return [{}] * len(r.trials)
    return [{"values": v, "pareto": on} for v, on in zip(r.trial_values, r.pareto, strict=True)]


def _flags(r: StudyResult) -> list[str | None]:
    return r.trial_degenerate if len(r.trial_degenerate) == len(r.trials) else [None] * len(r.trials)


def _seeds(r: StudyResult) -> list[dict[str, float]]:
    """Each complete trial's per-seed values (``seeds_per_trial`` K > 1; empty dicts otherwise)."""
    return r.trial_seeds if len(r.trial_seeds) == len(r.trials) else [{}] * len(r.trials)


def _write_atomic(path: Path, text: str) -> None:
    """Workers sharing a sweep directory each write the summary: a reader sees one whole version."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)
