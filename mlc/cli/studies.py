"""``mlc studies STORAGE``: the state of the Optuna studies in a storage; ``--fail-stale`` closes dead trials.

The Optuna storage is the source of truth (not the console log), so this answers at any time::

    mlc studies sqlite:///outputs/optuna.db                  # every study in the storage
    mlc studies sqlite:///outputs/optuna.db --prefix demo    # studies whose name starts so
    mlc studies sqlite:///outputs/optuna.db --fail-stale     # dead RUNNING trials -> FAIL (each queued to
                                                             # continue), their MLflow runs -> KILLED
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mlc.errors import MlcError
from mlc.sweep.summary import StudyRef, _fmt, format_table, load_results


def main(argv: list[str] | None = None) -> None:
    import optuna

    # deferred: loads Optuna, as `import optuna` above does: main needs it, importing this module does not
    from mlc.sweep.study import GRACE_PERIOD_S, open_storage, reclaim

    parser = argparse.ArgumentParser(description="Summarise the Optuna studies in a storage; close dead trials.")
    parser.add_argument("storage", help="Optuna storage URL, e.g. sqlite:///outputs/optuna.db")
    parser.add_argument("--prefix", default="", help="only studies whose name starts with this")
    parser.add_argument("--fail-stale", action="store_true",
                        help="mark RUNNING trials whose process died (gone from this machine, or no heartbeat for "
                             "--grace-period s) as FAIL, queued to continue at the next run of their sweep, and "
                             "end their MLflow runs KILLED")
    parser.add_argument("--trials", action="store_true", help="also list every trial (state, parameters, value) "
                                                               "as a Markdown table per study")
    parser.add_argument("--grace-period", type=int, default=None,
                        help=f"seconds without a heartbeat after which a trial is dead (default: the one its sweep "
                             f"used, else {GRACE_PERIOD_S})")
    args = parser.parse_args(argv)
    try:
        base = open_storage(args.storage, key="storage", must_exist=True, heartbeat_interval=1)
        names = [s.study_name for s in optuna.get_all_study_summaries(base) if s.study_name.startswith(args.prefix)]
        if not names:
            raise MlcError(f"no study in {args.storage} starts with {args.prefix!r}")
        storages: dict[int, Any] = {}  # Optuna's grace period is a setting of the storage
        results, closed = [], 0
        for name in names:
            grace = int(args.grace_period or optuna.load_study(study_name=name, storage=base).user_attrs.get(
                "mlc.grace_period", GRACE_PERIOD_S))
            if grace not in storages:
                storages[grace] = open_storage(args.storage, key="storage", must_exist=True, heartbeat_interval=1,
                                               grace_period=grace)
            if args.fail_stale:
                closed += len(reclaim(optuna.load_study(study_name=name, storage=storages[grace])))
            results += load_results([StudyRef(name)], storages[grace])
        if args.fail_stale:
            print(f"{closed} stale trial(s) marked FAIL (their MLflow runs KILLED, each queued to continue)")
    except MlcError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    searched = sorted({k for r in results for k in r.best_params})
    for r in results:
        best = (f"a Pareto front of {sum(r.pareto)} trial(s) over {', '.join(r.objectives)}" if r.objectives
                else f"best {_fmt(r.best_value)} with {r.best_params}")
        print(f"{r.name}: {r.status}, {best} ({r.complete} complete, "
              f"{r.pruned} pruned, {r.failed} failed, {r.interrupted} interrupted, {r.running} running of which "
              f"{r.stale} stale, "
              f"{r.waiting} queued)")
    print()
    print(format_table(results, "value", searched))
    if args.trials:
        for name in names:
            print(f"\n{name}\n\n{trials_table(optuna.load_study(study_name=name, storage=base))}")


def trials_table(study: Any) -> str:
    """Every trial of ``study`` as a Markdown table: number, state, parameters, value."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    lines = ["| trial | state | " + " | ".join(keys) + " | value |", "|---" * (len(keys) + 3) + "|"]
    for t in trials:
        value = ", ".join(map(_fmt, t.values)) if t.values and len(t.values) > 1 else _fmt(t.value)  # (objectives)
        cells = [str(t.number), t.state.name, *(_fmt(t.params.get(k)) for k in keys), value]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
