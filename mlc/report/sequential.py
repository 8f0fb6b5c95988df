"""Seeds added in planned rounds until every comparison is decided, with an error rate of α over all the looks.

Why a rule at all: reading the intervals after 3 seeds, again after 6, again after 9, and stopping at the first
verdict finds a *better* or *worse* more often than α when there is no difference, because every look is one
more chance for noise to cross the line (``tests/test_sequential.py`` measures it: about twice α for three looks).

The rule here is **Bonferroni over the planned looks**:

- the looks are fixed before the first run (``plan_looks``): the preset's seeds, then rounds of R more
  seeds, up to ``--max-seeds``;
- each of the L looks tests at α/L (``look_alpha``), with Holm's correction over the table's comparisons at that
  level (``mlc.report.stats.differences``). The chance of a false better/worse (or a false equivalent) at *some*
  look is then at most L · α/L = α, whatever the dependence between the looks (the union bound).

It is more conservative than Pocock's or O'Brien-Fleming's group-sequential boundaries. Those assume normal
statistics with a known variance; with 3 to 10 seeds the t statistic's own variance estimate changes from look to
look, so their levels would only be approximate, while the union bound holds exactly. The price is a wider
interval at each look (α/3 instead of α for three looks), which the planned extra seeds pay for.

A comparison is decided at the first look where its verdict is better, worse or equivalent, and that verdict
stands: the bound covers it whatever later looks say. Later looks run only while some comparison is undecided;
at the last one the undecided comparisons stay *inconclusive*, with what their seeds could have detected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlc.report.stats import Difference, DifferenceRow
from mlc.report.tables import fmt
from mlc.report.verdicts import ALPHA, BETTER, EQUIVALENT, WORSE, level

DECIDED = (BETTER, WORSE, EQUIVALENT)


class DesignError(ValueError):
    """A sequential design that cannot be planned (one line for the user)."""


def plan_looks(first: Sequence[int], max_seeds: int, per_round: int) -> list[tuple[int, ...]]:
    """The seeds of every look: ``first`` (the preset's seeds), then ``per_round`` more at each look (the smallest
    seeds not used yet), up to ``max_seeds`` in all. Fixed before any run, as the α split requires."""
    first = list(dict.fromkeys(int(s) for s in first))
    if len(first) < 2:
        raise DesignError(f"the first look has {len(first)} seed(s); a paired interval needs at least 2")
    if max_seeds < len(first):
        raise DesignError(f"--max-seeds={max_seeds} is below the preset's {len(first)} seeds ({first})")
    if per_round < 1:
        raise DesignError(f"--seeds-per-round={per_round}: must be at least 1")
    seeds, looks, candidate = list(first), [tuple(first)], 0
    while len(seeds) < max_seeds:
        for _ in range(min(per_round, max_seeds - len(seeds))):
            while candidate in seeds:
                candidate += 1
            seeds.append(candidate)
        looks.append(tuple(seeds))
    return looks


def look_alpha(alpha: float, looks: int) -> float:
    """The level of each of ``looks`` planned looks: α split evenly (Bonferroni over the looks)."""
    return alpha / looks


@dataclass(frozen=True)
class Decision:
    """Where a comparison was decided: its verdict, the look (1-based), the seeds used, and the difference there."""

    verdict: str
    look: int
    seeds: int
    difference: Difference


Key = tuple[tuple[str, ...], str]  # (the row's group values, the metric)


def record(decisions: dict[Key, Decision], rows: Sequence[DifferenceRow], look: int, seeds: int) -> list[Key]:
    """Add the comparisons that ``rows`` (one look's differences) decide for the first time to ``decisions``;
    return the keys still undecided. Earlier decisions stand (``Decision``)."""
    undecided = []
    for row in rows:
        for metric, difference in row.diffs.items():
            key = (row.values, metric)
            if key in decisions:
                continue
            if difference.verdict in DECIDED:
                decisions[key] = Decision(difference.verdict, look, seeds, difference)
            else:
                undecided.append(key)
    return undecided


@dataclass(frozen=True)
class Look:
    """One look as the write-up shows it."""

    number: int
    seeds: tuple[int, ...]
    runs: int
    decided: int  # comparisons decided so far (this look included)
    total: int


def markdown(looks: Sequence[Look], planned: Sequence[tuple[int, ...]], decisions: dict[Key, Decision],
             last_rows: Sequence[DifferenceRow], alpha: float = ALPHA, fixed_runs: int | None = None) -> str:
    """The design, each look, and each comparison's verdict with where it was decided."""
    per_look = look_alpha(alpha, len(planned))
    lines = [f"Planned looks at {', '.join(str(len(s)) for s in planned)} seeds, each at α/{len(planned)} = "
             f"{per_look:.4g} ({level(per_look)} intervals, Holm over the table's comparisons), so that a false "
             f"better/worse over all looks has probability ≤ α = {alpha:g} (Bonferroni over the looks, "
             "`mlc.report.sequential`).", "",
             "| look | seeds | runs | decided |", "|---|---|---|---|"]
    lines += [f"| {k.number} | {len(k.seeds)} ({_seed_list(k.seeds)}) | {k.runs} | {k.decided} of {k.total} |"
              for k in looks]
    if fixed_runs is not None and looks:
        lines += ["", f"Runs used: {looks[-1].runs}; the fixed design of {len(planned[-1])} seeds runs {fixed_runs}."]
    lines += ["", "| comparison | metric | verdict | decided at | Δ [interval] there |", "|---|---|---|---|---|"]
    for row in last_rows:
        for metric, last in row.diffs.items():
            name = f"{', '.join(row.values)} vs {', '.join(row.baseline)}"
            decision = decisions.get((row.values, metric))
            if decision is None:
                lines.append(f"| {name} | {metric} | {last.label} | not decided ({last.n} seeds) | {_delta(last)} |")
            else:
                d = decision.difference
                lines.append(f"| {name} | {metric} | **{decision.verdict}** | look {decision.look} "
                             f"({decision.seeds} seeds) | {_delta(d)} |")
    return "\n".join(lines)


def _delta(d: Difference) -> str:
    if d.low is None:
        return "—"
    return f"{fmt(d.mean, signed=True)} [{fmt(d.low, signed=True)}, {fmt(d.high, signed=True)}]"


def _seed_list(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds)) if len(seeds) <= 6 else f"{seeds[0]}, …, {seeds[-1]}"
