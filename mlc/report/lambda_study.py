"""``python -m mlc.report.lambda_study``: the best λ against the negative ratio, with its uncertainty.

The any-class paper's open question 2 asks whether the best λ depends on the data's negative ratio.
One Optuna study per ratio gives a best λ, but that λ won a search on *one* seed: any λ whose score
is within the seed noise of the winner is just as good a best λ. So this reads

- the **search**: one study per negative ratio that searched ``loss.lam`` (the sweep folder's
  ``sweep_summary.json``: every finished trial's λ and objective, as Optuna recorded them), and
- the **seeds**: re-runs of each study's best λ over fresh seeds (the MLflow runs of a second sweep
  folder), which measure how much the objective moves with the seed alone (its std ``s`` at λ*),

and writes, per ratio: the best λ*, the **near-best span** (the searched λ values whose objective is
within ``s`` of the best: the data cannot tell them from λ*; for a search that scored each trial over K > 1
seeds, the λ its own seeds do not show worse than λ*, ``not_worse``, a paired test that needs no re-runs
and is preferred to the spread rule), the objective and test metrics over the
seeds (mean ± std), and, across ratios, Spearman's rank correlation of λ* with the ratio and whether one
λ is near-best at every ratio. The verdict follows fixed rules (``verdict``), so it is computed, not
written by hand. Files: ``lambda_study.{md,csv}`` and ``best_lambda_vs_ratio.png`` in ``--output``.

Example (what ``mlc reproduce lambda_vs_negative_ratio_study`` runs)::

    python -m mlc.report.lambda_study --search outputs/reproduce/<name>@<hash> \\
        --seeds outputs/reproduce/<name>@<hash>/seeds --experiment lambda_vs_negative_ratio_study --output DIR
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlc.report import build, figures, tables
from mlc.report.cli import OneLineParser, add_store_options, comma_list, store_of
from mlc.report.runs import ReportError
from mlc.report.stats import Cell, natural_key

LAMBDA, RATIO = "loss.lam", "dataset.negative_ratio"
SUMMARY = "sweep_summary.json"
FILES = ("lambda_study.md", "lambda_study.csv", "best_lambda_vs_ratio.png")
SIGNIFICANCE = 0.05  # a rank correlation counts as a trend below this p-value
MIN_RATIOS = 3  # fewer ratios cannot show a rank correlation
LAMBDA_DIGITS = 1e-5  # MLflow params hold λ to 6 significant digits: a re-run's λ matches λ* to this relative tolerance


@dataclass(frozen=True)
class Search:
    """One study of the search: its grid point and every finished trial."""

    series: tuple[str, ...]  # the study's other grid values (e.g. the loss), "" parts dropped
    ratio: float
    trials: tuple[tuple[float, float], ...]  # (λ, objective) per finished trial
    best_lam: float
    best_value: float
    seeds: tuple[dict[str, float], ...] = ()  # per trial (as ``trials``): {seed: objective} of a K > 1 search


@dataclass
class Row:
    search: Search
    objective: Cell | None = None  # the objective at λ* over the re-run seeds
    metrics: dict[str, Cell] = field(default_factory=dict)
    near: tuple[float, ...] | None = None  # searched λ within the seed spread of the best (None: no spread)

    @property
    def span(self) -> tuple[float, float] | None:
        return (min(self.near), max(self.near)) if self.near else None


@dataclass(frozen=True)
class Relation:
    series: tuple[str, ...]
    ratios: int
    rho: float | None
    p: float | None
    common: tuple[float, float] | None  # a λ interval inside every ratio's near-best span
    spans_known: bool
    rho_interval: tuple[float, float] | None = None  # 95% interval of ρ (``rho_interval``; None below 4 ratios)

    @property
    def verdict(self) -> str:
        return verdict(self)


def read_search(sweep_dir: Path) -> tuple[str, bool, list[Search], list[str], list[str]]:
    """(monitor, lower is better, one ``Search`` per study, series keys, notes) from the search's summary."""
    path = Path(sweep_dir) / SUMMARY
    if not path.is_file():
        raise ReportError(f"--search={str(sweep_dir)!r}: no {SUMMARY} (is it the folder of a finished λ search?)")
    try:
        data = json.loads(path.read_text())
        monitor, direction, studies = str(data["monitor"]), str(data["direction"]), list(data["studies"])
        searched = list(data.get("searched") or [])
    except (ValueError, KeyError, TypeError) as err:
        raise ReportError(f"--search: {path} is not a sweep summary ({type(err).__name__}: {err})") from None
    if LAMBDA not in searched:
        raise ReportError(f"--search: {path} searched {', '.join(searched) or 'nothing'}, not {LAMBDA}")
    notes, out, series_keys = [], [], []
    for study in studies:
        fixed = dict(study.get("fixed") or {})
        if RATIO not in fixed:
            raise ReportError(f"--search: study {study.get('name')!r} does not hold {RATIO} fixed; the search "
                              f"needs one study per negative ratio (hydra.sweeper.study_grid.{RATIO}=[...])")
        kept = [t for t in study.get("trials") or [] if LAMBDA in (t.get("params") or {})
                and t.get("value") is not None and math.isfinite(float(t["value"]))]
        trials = tuple((float(t["params"][LAMBDA]), float(t["value"])) for t in kept)
        seeds = tuple({str(k): float(v) for k, v in (t.get("seeds") or {}).items()} for t in kept)
        if not trials:
            notes.append(f"study {study.get('name')!r}: no finished trial ({study.get('status')}); left out")
            continue
        if study.get("status") != "ok":
            notes.append(f"study {study.get('name')!r} is {study.get('status')}: its best λ is from "
                         f"{len(trials)} finished trial(s)")
        keys = [k for k in fixed if k != RATIO]
        series_keys = series_keys or keys
        best = (min if direction == "minimize" else max)(trials, key=lambda t: t[1])
        out.append(Search(tuple(str(fixed[k]) for k in keys), float(fixed[RATIO]), trials, *best,
                          seeds if any(seeds) else ()))
    if not out:
        raise ReportError(f"--search: no study in {path} has a finished trial")
    out.sort(key=lambda s: (tuple(map(natural_key, s.series)), s.ratio))
    return monitor, direction == "minimize", out, series_keys, notes


def near_best(trials, best_value: float, spread: float, lower_better: bool) -> tuple[float, ...]:
    """The λ of every trial whose objective is within ``spread`` of the best (the best itself included)."""
    if lower_better:
        return tuple(sorted(lam for lam, v in trials if v <= best_value + spread))
    return tuple(sorted(lam for lam, v in trials if v >= best_value - spread))


def not_worse(search: Search, lower_better: bool, alpha: float = SIGNIFICANCE) -> tuple[float, ...] | None:
    """With K > 1 seeds per trial: the λ of every trial that its seeds cannot call worse than λ* (one-sided
    paired t-test over the seeds both ran, Holm's correction over the trials at ``alpha``; a trial with fewer
    than two common seeds cannot be called worse). None without per-seed values (a one-seed search)."""
    from scipy import stats  # deferred: loads SciPy; `python -m mlc.report.lambda_study --help` does not

    from mlc.report.verdicts import holm  # deferred: with SciPy, as above

    if not search.seeds:
        return None
    best = search.trials.index((search.best_lam, search.best_value))
    mine, tested, kept = search.seeds[best], [], [search.best_lam]
    for i, (lam, _) in enumerate(search.trials):
        if i == best:
            continue
        common = [s for s in search.seeds[i] if s in mine]
        if len(common) < 2:
            kept.append(lam)
            continue
        sign = -1.0 if lower_better else 1.0  # d > 0: the trial is worse than λ*
        d = [sign * (mine[s] - search.seeds[i][s]) for s in common]
        sd = float(stats.tstd(d))
        p = (0.0 if sum(d) > 0 else 1.0) if sd == 0 else \
            float(stats.t.sf(sum(d) / len(d) / (sd / math.sqrt(len(d))), len(d) - 1))
        tested.append((lam, p))
    worse = holm([p for _, p in tested], alpha)
    kept += [lam for (lam, _), rejected in zip(tested, worse, strict=True) if not rejected]
    return tuple(sorted(kept))


def relations(rows: list[Row]) -> list[Relation]:
    """Per series: Spearman's ρ of λ* against the ratio, and the λ interval common to every near-best span."""
    from scipy import stats

    out = []
    for series in dict.fromkeys(r.search.series for r in rows):
        mine = [r for r in rows if r.search.series == series]
        ratios = [r.search.ratio for r in mine]
        lams = [r.search.best_lam for r in mine]
        rho = p = None
        if len(mine) >= MIN_RATIOS and len(set(lams)) > 1:
            result = stats.spearmanr(ratios, lams)
            rho, p = float(result.statistic), float(result.pvalue)
        elif len(mine) >= MIN_RATIOS:
            rho, p = 0.0, 1.0  # the same λ* at every ratio: no trend
        spans = [r.span for r in mine]
        known = all(s is not None for s in spans)
        common = None
        if known:
            low, high = max(s[0] for s in spans), min(s[1] for s in spans)
            common = (low, high) if low <= high else None
        out.append(Relation(series, len(mine), rho, p, common, known,
                            rho_interval(rho, len(mine)) if rho is not None else None))
    return out


def rho_interval(rho: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The interval of Spearman's ρ over n ratios: Fisher's z = atanh(ρ) with Bonett and Wright's (2000) standard
    error sqrt((1 + ρ²/2) / (n - 3)), back through tanh. With 5 ratios it is wide: the honest width of a
    rank correlation from five points (None below 4 ratios, where it is undefined)."""
    from scipy import special  # deferred: loads SciPy; `python -m mlc.report.lambda_study --help` does not

    if n < 4:
        return None
    if abs(rho) >= 1:
        rho = math.copysign(1 - 1e-12, rho)  # the bound is reached only in the limit
    z, se = math.atanh(rho), math.sqrt((1 + rho * rho / 2) / (n - 3))
    half = float(special.ndtri(0.5 + confidence / 2)) * se
    return math.tanh(z - half), math.tanh(z + half)


def verdict(rel: Relation) -> str:
    """The fixed rules, in the verdict words of ``mlc.report.verdicts``: without a seed spread nothing is
    decided; a rank correlation with p < 0.05 is a trend; anything else is *inconclusive*, saying why (a λ
    range near-best at every ratio, or best λ that move without a trend), never "no relation"."""
    interval = f" [{rel.rho_interval[0]:+.2f}, {rel.rho_interval[1]:+.2f}]" if rel.rho_interval else ""
    trend = f"Spearman ρ = {rel.rho:+.2f}{interval}, p = {rel.p:.2g}, {rel.ratios} ratios" if rel.rho is not None \
        else f"{rel.ratios} ratio(s): too few for a rank correlation"
    if not rel.spans_known:  # a trend in one seed's winners alone could be noise
        return f"not decided: no seed spread to judge the best λ by (re-run it over seeds); {trend}"
    if rel.common is not None:
        return (f"inconclusive: λ from {_lam(rel.common[0])} to {_lam(rel.common[1])} is within the seed spread "
                f"of the best at every ratio, so these seeds cannot tell the ratios' best λ apart ({trend})")
    if rel.rho is not None and rel.p is not None and rel.p < SIGNIFICANCE:
        return f"the best λ {'rises' if rel.rho > 0 else 'falls'} with the negative ratio ({trend})"
    return f"inconclusive: the best λ moves between ratios without a monotone trend at 5% ({trend})"


def build_rows(searches: list[Search], summaries, series_keys: list[str], objective: str, metrics: list[str],
               lower_better: bool, notes: list[str]) -> list[Row]:
    """Each study's row, with the re-run seeds of its best λ (matched on series, ratio and λ)."""
    rows, used = [], set()
    for s in searches:
        row = Row(s)
        for i, summary in enumerate(summaries or []):
            *series, ratio, lam = summary.values
            if tuple(series) == s.series and math.isclose(float(ratio), s.ratio) and \
                    math.isclose(float(lam), s.best_lam, rel_tol=LAMBDA_DIGITS):
                row.objective, row.metrics = summary.cells.get(objective), dict(summary.cells)
                used.add(i)
        if s.seeds:  # a search over K seeds per trial: a paired test over its own seeds, not a spread rule
            row.near = not_worse(s, lower_better)
        elif row.objective is not None and row.objective.std is not None:
            row.near = near_best(s.trials, s.best_value, row.objective.std, lower_better)
        elif summaries is not None:
            notes.append(f"negative ratio {s.ratio:g}{_series_note(s.series, series_keys)}: fewer than two seeds "
                         f"re-ran its best λ {_lam(s.best_lam)}: no near-best span")
        rows.append(row)
    for i, summary in enumerate(summaries or []):
        if i not in used:
            notes.append(f"seed runs at {', '.join(summary.values)} are not a study's best λ: left out")
    return rows


def table(rows: list[Row], series_keys: list[str], monitor: str, metrics: list[str]) -> tables.Table:
    header = [*series_keys, "negative_ratio", "trials", "best λ", f"search {monitor}", "near-best λ (trials)",
              f"{monitor} over seeds", "n", *metrics]
    body = []
    for r in rows:
        s, span = r.search, r.span
        near = f"{_lam(span[0])} – {_lam(span[1])} ({len(r.near)}/{len(s.trials)})" if span else tables.DASH
        body.append([*s.series, f"{s.ratio:g}", str(len(s.trials)), _lam(s.best_lam), tables.fmt(s.best_value),
                     near, _cell(r.objective), str(r.objective.n if r.objective else 0),
                     *(_cell(r.metrics.get(m)) for m in metrics)])
    numeric = [False] * len(series_keys) + [True] * (len(header) - len(series_keys))
    return tables.Table(header, body, numeric)


def to_csv(rows: list[Row], series_keys: list[str], monitor: str, metrics: list[str]) -> str:
    header = [*series_keys, "negative_ratio", "trials", "best_lambda", f"search_{monitor}", "near_best_low",
              "near_best_high", "near_best_trials", f"{monitor}_mean", f"{monitor}_std", "n",
              *(f"{m}_{part}" for m in metrics for part in ("mean", "std"))]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        s, span = r.search, r.span
        cells = [r.objective, *(r.metrics.get(m) for m in metrics)]
        writer.writerow([*s.series, repr(s.ratio), len(s.trials), repr(s.best_lam), repr(s.best_value),
                         *((repr(span[0]), repr(span[1])) if span else ("", "")), len(r.near) if r.near else "",
                         *_mean_std(cells[0]), r.objective.n if r.objective else 0,
                         *(x for c in cells[1:] for x in _mean_std(c))])
    return buf.getvalue()


def markdown(rows: list[Row], rels: list[Relation], series_keys: list[str], monitor: str, metrics: list[str],
             notes: list[str]) -> str:
    lines = [tables.to_markdown(table(rows, series_keys, monitor, metrics)).rstrip(), ""]
    for rel in rels:
        prefix = f"{_series_note(rel.series, series_keys).strip(' ()')}: " if rel.series else ""
        lines.append(f"- **Relation**: {prefix}{rel.verdict}.")
    lines += ["", f"λ* is the search's best trial on {monitor}; *near-best* are the searched λ whose "
              f"{monitor} is within one seed std (from the re-runs of λ*) of the best, or, for a search of K > 1 "
              "seeds per trial, the λ whose seeds do not show them worse than λ* (one-sided paired t-test over "
              "the trials' common seeds, Holm over the trials, 5%; the re-runs then only measure λ* afresh)."]
    lines += [f"- note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Front:
    """A multi-objective study's trials (``hydra.sweeper.objectives``): its grid point and, per trial, λ, the
    objectives' values and whether the trial is on the study's Pareto front."""

    series: tuple[str, ...]
    ratio: float
    trials: tuple[tuple[float, tuple[float, ...], bool], ...]


def read_fronts(sweep_dir: Path) -> tuple[list[str], list[str], list[Front]] | None:
    """(objectives, series keys, one ``Front`` per study) of a multi-objective λ search; None for a search of one
    objective (``read_search`` reads those)."""
    try:
        data = json.loads((Path(sweep_dir) / SUMMARY).read_text())
        names = [str(name) for name, _ in data.get("objectives") or []]
    except (OSError, ValueError, TypeError):
        return None  # read_search says what is wrong with it
    if not names:
        return None
    fronts, series_keys = [], []
    for study in data.get("studies") or []:
        fixed = dict(study.get("fixed") or {})
        if RATIO not in fixed:
            raise ReportError(f"--search: study {study.get('name')!r} does not hold {RATIO} fixed")
        series_keys = series_keys or [k for k in fixed if k != RATIO]
        trials = tuple(sorted((float(t["params"][LAMBDA]), tuple(map(float, t["values"])), bool(t.get("pareto")))
                              for t in study.get("trials") or [] if LAMBDA in (t.get("params") or {})
                              and t.get("values")))
        fronts.append(Front(tuple(str(fixed[k]) for k in series_keys), float(fixed[RATIO]), trials))
    fronts.sort(key=lambda f: (tuple(map(natural_key, f.series)), f.ratio))
    return names, series_keys, fronts


def pareto_markdown(names: list[str], series_keys: list[str], fronts: list[Front]) -> str:
    """Per ratio, the λ on its Pareto front with their objectives: the trade-off the search found."""
    header = [*series_keys, "negative_ratio", "trials", "λ on the Pareto front", *names]
    body = []
    for f in fronts:
        front = [(lam, values) for lam, values, on in f.trials if on]
        if not front:
            body.append([*f.series, f"{f.ratio:g}", str(len(f.trials)), tables.DASH, *(tables.DASH for _ in names)])
        for i, (lam, values) in enumerate(front):
            body.append([*(f.series if i == 0 else ["" for _ in f.series]), f"{f.ratio:g}" if i == 0 else "",
                         str(len(f.trials)) if i == 0 else "", _lam(lam), *map(tables.fmt, values)])
    table = tables.Table(header, body, [False] * len(series_keys) + [True] * (len(header) - len(series_keys)))
    return "\n".join([tables.to_markdown(table).rstrip(), "",
                      f"A multi-objective search ({', '.join(names)}, each trial at its best epoch): per ratio, the "
                      "searched λ that no other searched λ beats in every objective. Choosing among them is a "
                      "trade-off, not a best λ; the values are the search's own (its seeds), not fresh "
                      "re-runs."]) + "\n"


def _run_pareto(search: Path, output: Path, say) -> list[Path] | None:
    read = read_fronts(search)
    if read is None:
        return None
    names, series_keys, fronts = read
    build._check_output(output, FILES[0])
    output.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*series_keys, "negative_ratio", "lambda", *names, "pareto"])
    for f in fronts:
        for lam, values, on in f.trials:
            writer.writerow([*f.series, repr(f.ratio), repr(lam), *map(repr, values), int(on)])
    written = []
    for name, text in (("lambda_study.md", pareto_markdown(names, series_keys, fronts)),
                       ("lambda_study.csv", buf.getvalue())):
        (output / name).write_text(text)
        written.append(output / name)
        say(f"wrote {output / name}")
    return written


def run(search: Path, seeds: Path | None, store: str, store_option: str, experiment: str, metrics: list[str],
        output: Path, say=print) -> list[Path]:
    pareto = _run_pareto(search, output, say)  # a multi-objective search: its Pareto front per ratio
    if pareto is not None:
        return pareto
    monitor, lower_better, searches, series_keys, notes = read_search(search)
    objective = f"best/{monitor}"
    summaries = None
    if seeds is not None:
        opts = build.Options(store=store, store_option=store_option, experiment=experiment, output=output,
                             group_by=[*series_keys, "negative_ratio", "lam"], metrics=[objective, *metrics],
                             sweep=str(seeds))
        selection = build.select(opts, marker=FILES[0])
        summaries, notes = selection.summaries, notes + selection.notes
    else:
        build._check_output(output, FILES[0])
    rows = build_rows(searches, summaries, series_keys, objective, metrics, lower_better, notes)
    rels = relations(rows)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("lambda_study.md", markdown(rows, rels, series_keys, monitor, metrics, notes)),
                       ("lambda_study.csv", to_csv(rows, series_keys, monitor, metrics))):
        (output / name).write_text(text)
        written.append(output / name)
    written.append(figures.best_lambda_study(rows, series_keys, monitor, metrics[0] if metrics else None,
                                             output / FILES[2]))
    for path in written:
        say(f"wrote {path}")
    return written


def _lam(x: float) -> str:
    return f"{x:.3g}"


def _cell(c: Cell | None) -> str:
    if c is None:
        return tables.DASH
    return f"{tables.fmt(c.mean)} {tables.PM} {tables.fmt(c.std)}" if c.std is not None else tables.fmt(c.mean)


def _mean_std(c: Cell | None) -> tuple[str, str]:
    if c is None:
        return "", ""
    return repr(c.mean), "" if c.std is None else repr(c.std)


def _series_note(series: tuple[str, ...], keys: list[str]) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in zip(keys, series, strict=False))})" if series else ""


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m mlc.report.lambda_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--search", required=True, type=Path, help="the λ search's sweep folder (its sweep_summary.json)")
    p.add_argument("--seeds", type=Path, help="the sweep folder of the best λ's re-runs over seeds (without it: no "
                   "near-best span)")
    add_store_options(p)
    p.add_argument("--experiment", default="mlc", help="MLflow experiment of the re-runs (default: %(default)s)")
    p.add_argument("--metrics", default="test/f1_macro,test/map", help="test metrics per ratio (default: %(default)s)")
    p.add_argument("--output", required=True, type=Path, help="directory for lambda_study.{md,csv} and the figure")
    try:
        try:
            args = p.parse_args(argv)
        except SystemExit as done:  # --help
            return int(done.code or 0)
        metrics = comma_list(args.metrics, "--metrics")
        run(args.search, args.seeds, *store_of(args), args.experiment, metrics, args.output)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
