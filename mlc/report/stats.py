"""The report's statistics, as pure functions on ``RunRecord`` lists (no MLflow, no files).

Conventions, chosen so that a table never overstates a result:

- a group's value of a metric is the **mean ± sample std (ddof=1) over seeds**; runs of one seed
  (which differ in something the grouping ignores) are averaged first, so n counts seeds, the unit
  of training noise, not runs;
- two groups are compared **paired by seed** (same seed = same initialisation and data order, so the
  seed's share of the noise cancels) over the seeds both have, with a 95% Student-t interval on the
  mean difference and a verdict of ``verdicts``: better, worse, equivalent (inside ±δ) or
  inconclusive, with what the seeds could have detected; with one pair there is no interval and no verdict;
- "better" means larger, except for metrics named ``...loss``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from mlc.report import verdicts
from mlc.report.runs import RunRecord
from mlc.report.verdicts import BETTER, INCONCLUSIVE, NO_INTERVAL, NO_PAIRS, WORSE

DECIMALS = 4  # metrics are fractions: 4 decimals resolve 0.01% and no more than seeds can


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


def natural_key(value: object) -> tuple:
    """Sort numbers as numbers ("0.02" < "0.1" < "1e3"), then text; None last."""
    if value is None:
        return (2, "")
    try:
        return (0, float(str(value)), "")
    except ValueError:
        return (1, str(value))


def assign_groups(records: Iterable[RunRecord], keys: Sequence[str]) -> tuple[list[RunRecord], dict[str, int]]:
    """Set each record's ``group`` (its values of ``keys``) and ``seed``; records lacking a key are
    returned as counts per missing key instead."""
    kept, missing = [], {}
    for r in records:
        values = tuple(r.value(k) for k in keys)
        absent = [k for k, v in zip(keys, values, strict=True) if v is None]
        if absent:
            missing[absent[0]] = missing.get(absent[0], 0) + 1
            continue
        r.group, r.seed = values, r.seed_value
        kept.append(r)
    return kept, missing


def group_runs(records: Iterable[RunRecord]) -> dict[tuple[str, ...], list[RunRecord]]:
    """Records by ``group``, groups in natural order of their values, runs by seed then start time."""
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    return {g: sorted(groups[g], key=lambda r: (natural_key(r.seed), r.start_time))
            for g in sorted(groups, key=lambda g: tuple(natural_key(v) for v in g))}


def seed_values(runs: Iterable[RunRecord], metric: str) -> dict[str, float]:
    """The metric per seed (mean of that seed's runs); a run without a seed counts as its own seed."""
    by_seed: dict[str, list[float]] = {}
    for r in runs:
        if metric in r.metrics:
            by_seed.setdefault(r.seed if r.seed is not None else f"run {r.run_id}", []).append(r.metrics[metric])
    return {s: float(np.mean(v)) for s, v in sorted(by_seed.items(), key=lambda kv: natural_key(kv[0]))}


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float | None  # None when n < 2 (a sample std needs two values)
    n: int


def cell(values: Sequence[float]) -> Cell:
    values = np.asarray(values, dtype=np.float64)
    std = float(np.std(values, ddof=1)) if len(values) >= 2 else None
    return Cell(float(np.mean(values)) if len(values) else math.nan, std, len(values))


@dataclass
class GroupSummary:
    values: tuple[str, ...]
    runs: list[RunRecord]
    seeds: list[str]
    cells: dict[str, Cell]

    @property
    def n(self) -> int:
        return len(self.seeds)


def summarize(groups: dict[tuple[str, ...], list[RunRecord]], metrics: Sequence[str]) -> list[GroupSummary]:
    out = []
    for values, runs in groups.items():
        per_metric = {m: seed_values(runs, m) for m in metrics}
        seeds = list(per_metric[metrics[0]]) if metrics else []
        out.append(GroupSummary(values, runs, seeds, {m: cell(list(v.values())) for m, v in per_metric.items()}))
    return out


def best_rows(summaries: Sequence[GroupSummary], metric: str) -> set[int]:
    """Indices of the rows whose mean is best at the printed precision (ties all count)."""
    means = [round(s.cells[metric].mean, DECIMALS) for s in summaries if math.isfinite(s.cells[metric].mean)]
    if not means:
        return set()
    best = min(means) if lower_is_better(metric) else max(means)
    return {i for i, s in enumerate(summaries) if round(s.cells[metric].mean, DECIMALS) == best}


@dataclass(frozen=True)
class Difference:
    mean: float
    low: float | None
    high: float | None
    n: int
    verdict: str
    margin: float = verdicts.DEFAULT_MARGIN  # δ of "equivalent"
    p: float | None = None  # paired t-test p-value of no difference
    mde: float | None = None  # the difference n pairs detect with 80% power at the observed spread
    seeds_needed: int | None = None  # pairs that detect δ with 80% power at that spread (None: more than 1000)
    holm_demoted: str | None = None  # the verdict ("better"/"worse") Holm's correction over the table undid
    alpha: float = verdicts.ALPHA  # the level: a (1 - alpha) interval, tests and power at alpha

    @property
    def label(self) -> str:
        return f"{self.verdict} ({self.holm_demoted} before Holm)" if self.holm_demoted else self.verdict


def paired_difference(values: dict[str, float], baseline: dict[str, float], lower_better: bool = False,
                      margin: float = verdicts.DEFAULT_MARGIN, alpha: float = verdicts.ALPHA) -> Difference:
    """Mean of ``values[s] - baseline[s]`` over the seeds s both have, its (1 - alpha) Student-t interval
    (95% by default), the verdict and what the pairs could detect at that level (``mlc.report.verdicts``)."""
    seeds = [s for s in values if s in baseline]
    d = np.array([values[s] - baseline[s] for s in seeds], dtype=np.float64)
    if len(d) == 0:
        return Difference(math.nan, None, None, 0, NO_PAIRS, margin, alpha=alpha)
    mean = float(d.mean())
    if len(d) == 1:
        return Difference(mean, None, None, 1, NO_INTERVAL, margin, alpha=alpha)
    low, high = verdicts.interval(d, 1 - alpha)
    sd = float(d.std(ddof=1))
    mde = verdicts.detectable_effect(len(d), alpha) * sd
    needed = verdicts.seeds_needed(margin / sd, alpha) if sd > 0 else len(d)
    return Difference(mean, low, high, len(d), verdicts.verdict(low, high, mean, margin, lower_better), margin,
                      verdicts.p_value(d), mde, needed, alpha=alpha)


def holm_over(rows: Sequence[DifferenceRow], alpha: float = verdicts.ALPHA) -> list[DifferenceRow]:
    """The rows with Holm's correction at ``alpha`` over every comparison in them (rows × metrics): a
    better/worse verdict that does not survive it becomes inconclusive, saying what it was."""
    cells = [(r, m) for r in rows for m, d in r.diffs.items() if d.p is not None]
    keep = verdicts.holm([r.diffs[m].p for r, m in cells], alpha)
    for (r, m), kept in zip(cells, keep, strict=True):
        d = r.diffs[m]
        if d.verdict in (BETTER, WORSE) and not kept:
            r.diffs[m] = replace(d, verdict=INCONCLUSIVE, holm_demoted=d.verdict)
    return list(rows)


@dataclass
class DifferenceRow:
    values: tuple[str, ...]
    baseline: tuple[str, ...]
    n: int  # seed pairs (the same for every metric: runs lacking a metric are not in the report)
    diffs: dict[str, Difference]


def baseline_pairs(baseline: str, present: Sequence[str]) -> dict[str, str]:
    """``--baseline`` as {group value: its baseline value} over the first key's ``present`` values.

    ``cb_bce`` compares every other value with cb_bce; ``any_bce:cb_bce,any_focal:cb_focal`` compares only
    the named pairs (a paper's matched comparisons, e.g. each loss against its own base)."""
    if ":" not in baseline:
        return {v: baseline for v in present if v != baseline}
    pairs = {}
    for item in baseline.split(","):
        mine, sep, theirs = (part.strip() for part in item.partition(":"))
        if not sep or not mine or not theirs or mine == theirs or mine in pairs:
            raise ValueError(f"{item!r} is not a pair 'value:baseline' of two different values named once")
        pairs[mine] = theirs
    return pairs


def differences(summaries: Sequence[GroupSummary], pairs: dict[str, str], metrics: Sequence[str],
                margins: dict[str, float] | None = None, alpha: float = verdicts.ALPHA) -> list[DifferenceRow]:
    """Each group whose first key is in ``pairs`` against the group with its baseline value there and the same
    values of the other keys (rows without such a group get n=0); Holm's correction over the whole table; every
    interval and test at level ``alpha`` (``mlc.report.sequential`` lowers it to spread α over several looks)."""
    by_values = {s.values: s for s in summaries}
    rows = []
    for s in summaries:
        if s.values[0] not in pairs:
            continue
        partner_values = (pairs[s.values[0]], *s.values[1:])
        partner = by_values.get(partner_values)
        diffs = {}
        for m in metrics:
            mine = seed_values(s.runs, m)
            theirs = seed_values(partner.runs, m) if partner else {}
            diffs[m] = paired_difference(mine, theirs, lower_is_better(m),
                                         (margins or {}).get(m, verdicts.DEFAULT_MARGIN), alpha)
        n = next(iter(diffs.values())).n if diffs else 0
        rows.append(DifferenceRow(s.values, partner_values, n, diffs))
    return holm_over(rows, alpha)


@dataclass(frozen=True)
class LambdaPoint:
    series: tuple[str, ...]  # the run's group values other than λ and the ratio ("" parts dropped)
    ratio: float
    lam: float
    mean: float
    std: float | None
    n: int


def lambda_grid(records: Iterable[RunRecord], metric: str, series_of) -> list[LambdaPoint]:
    """Mean ± std over seeds of ``metric`` at every (series, ratio, λ) the runs cover."""
    cells: dict[tuple, list[RunRecord]] = {}
    for r in records:
        if r.lam is not None and r.negative_ratio is not None and metric in r.metrics:
            cells.setdefault((series_of(r), r.negative_ratio, r.lam), []).append(r)
    out = []
    for (series, ratio, lam), runs in sorted(cells.items(), key=lambda kv: (tuple(map(natural_key, kv[0][0])),
                                                                            kv[0][1], kv[0][2])):
        c = cell(list(seed_values(runs, metric).values()))
        out.append(LambdaPoint(series, ratio, lam, c.mean, c.std, c.n))
    return out


def varies_lambda(points: Sequence[LambdaPoint]) -> bool:
    """Whether some series and ratio were run at two or more values of λ (else there is no curve to read)."""
    seen: dict[tuple, set[float]] = {}
    for p in points:
        seen.setdefault((p.series, p.ratio), set()).add(p.lam)
    return any(len(lams) >= 2 for lams in seen.values())


def best_lambdas(points: Sequence[LambdaPoint], lower_better: bool = False) -> list[LambdaPoint]:
    """Per series and ratio, the point with the best mean (argmax; argmin for a loss)."""
    best: dict[tuple, LambdaPoint] = {}
    for p in points:
        if not math.isfinite(p.mean):
            continue
        key = (p.series, p.ratio)
        if key not in best or (p.mean < best[key].mean if lower_better else p.mean > best[key].mean):
            best[key] = p
    return [best[k] for k in sorted(best, key=lambda k: (tuple(map(natural_key, k[0])), k[1]))]


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Mean over runs at each step any run logged (a step counts the runs that reached it)."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    return [(step, float(np.mean(v))) for step, v in sorted(by_step.items())]
