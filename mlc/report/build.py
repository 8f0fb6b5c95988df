"""A report in two steps: ``select`` (read and check everything; writes nothing) and ``write``.

The split is what makes bad input cheap: every option is checked against the store (experiment,
runs, group keys, metrics, baseline, run ids) before the output directory is even created, so a
typo leaves no half-written report behind. ``write`` then only renders what ``select`` found;
what it cannot draw (a run without a scores file, runs without a λ grid) becomes a note, not an error.
"""

from __future__ import annotations

import shlex
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlc.metrics import DEGENERATE_RULES
from mlc.report import figures, stats, tables, verdicts
from mlc.report.runs import (
    DEGENERATE_TAG,
    SWEEP_DIR_TAG,
    ReportError,
    RunRecord,
    describe_experiment,
    download_scores,
    find_experiment,
    get_run_record,
    load_history,
    open_client,
    search_runs,
    timestamp,
    to_record,
)
from mlc.scores import ScoresError, read_scores

LAMBDA_KEYS = {"lam", "loss.lam", "negative_ratio", "dataset.negative_ratio"}
MAX_SCORES_RUNS = 12  # default representative runs drawn from scores files (legends stay readable)
REPORT_FILES = ("table.md", "table.csv", "table.tex", "differences.md", "differences.csv", "differences.tex",
                "best_lambda.md", "best_lambda.csv", "lambda_vs_ratio.png", "learning_curves.png",
                "probabilities.png", "pr_curves.png", "per_class_ap.png", "report.md")


@dataclass
class Options:
    store: str
    store_option: str  # which option named the store (for error messages)
    experiment: str
    output: Path
    group_by: list[str]
    metrics: list[str]
    filter: str | None = None
    sweep: str | None = None
    baseline: str | None = None
    runs: list[str] | None = None
    all_statuses: bool = False
    margins: dict[str, float] = field(default_factory=dict)  # --margin: δ per metric (others: the default)
    alpha: float = verdicts.ALPHA  # --alpha: the level of the intervals and tests
    seeds: list[str] | None = None  # --seeds: only runs of these seeds (a look of mlc reproduce --until-decided)
    argv: list[str] = field(default_factory=list)


@dataclass
class Selection:
    client: Any
    experiment: Any
    records: list[RunRecord]
    summaries: list[stats.GroupSummary]
    scores_runs: list[RunRecord]
    notes: list[str]
    pairs: dict[str, str] = field(default_factory=dict)  # --baseline: group value -> its baseline value


def select(opts: Options, marker: str = "report.md") -> Selection:
    """Everything the report needs, checked; ``ReportError`` naming the option at the first bad input.
    ``marker`` is the file that shows a non-empty ``opts.output`` holds an earlier report of this kind."""
    _check_output(opts.output, marker)
    client = open_client(opts.store, opts.store_option)
    experiment = find_experiment(client, opts.experiment)
    records = [to_record(r) for r in search_runs(client, experiment.experiment_id, opts.filter, opts.all_statuses)]
    notes: list[str] = []
    if opts.sweep is not None:
        sweep_dir = str(Path(opts.sweep).resolve())
        dirs = Counter(r.tags.get(SWEEP_DIR_TAG) for r in records if r.tags.get(SWEEP_DIR_TAG))
        records = [r for r in records if r.tags.get(SWEEP_DIR_TAG) == sweep_dir]
        if not records and dirs:
            known = "; ".join(f"{d} ({n} runs)" for d, n in dirs.most_common(5))
            raise ReportError(f"--sweep={opts.sweep!r}: no matching run has {SWEEP_DIR_TAG}={sweep_dir}; "
                              f"sweep dirs of the matching runs: {known}")
    if opts.seeds is not None:
        records = [r for r in records if r.seed_value in opts.seeds]
    if not records:
        statuses = "any status" if opts.all_statuses else "FINISHED"
        where = "".join([f" matching --filter {opts.filter!r}" if opts.filter else "",
                         f" in --sweep {opts.sweep!r}" if opts.sweep else "",
                         f" with --seeds {','.join(opts.seeds)}" if opts.seeds is not None else ""])
        raise ReportError(f"no training run (mlc.kind=run, {statuses}) in --experiment {opts.experiment!r}{where} "
                          f"(the experiment holds {describe_experiment(client, experiment.experiment_id)})")
    _check_keys(records, opts.group_by)
    records, missing = stats.assign_groups(records, opts.group_by)
    notes += [f"{n} run(s) left out: no value for group key {k!r}" for k, n in missing.items()]
    records = _with_metrics(records, opts.metrics, notes)
    groups = stats.group_runs(records)
    pairs: dict[str, str] = {}
    if opts.baseline is not None:
        present = list(dict.fromkeys(g[0] for g in groups))
        try:
            pairs = stats.baseline_pairs(opts.baseline, present)
        except ValueError as err:
            raise ReportError(f"--baseline={opts.baseline!r}: {err}") from None
        for value in dict.fromkeys([*pairs, *pairs.values()] if ":" in opts.baseline else [opts.baseline]):
            if value not in present:
                raise ReportError(f"--baseline={opts.baseline!r}: no run has {opts.group_by[0]}={value!r}; "
                                  f"values of {opts.group_by[0]}: {', '.join(present)}")
    summaries = stats.summarize(groups, opts.metrics)
    for s in summaries:
        if len(s.runs) > s.n:
            varying = _varying(s.runs, opts.group_by)
            notes.append(f"group {_label(s.values)}: {len(s.runs)} runs for {s.n} seed(s), averaged per seed first"
                         + (f" (they differ in {', '.join(varying)}: add {'it' if len(varying) == 1 else 'them'} "
                            f"to --group-by to separate them)"
                            if varying else ""))
    notes += degenerate_notes(records)
    return Selection(client, experiment, records, summaries, _scores_runs(client, opts, summaries, records, notes),
                     notes, pairs)


MAX_NAMED_DEGENERATE = 10  # degenerate runs named in the notes (the rest are counted)


def degenerate_notes(records: list[RunRecord]) -> list[str]:
    """A note per rule that runs of the tables broke (tag ``mlc.degenerate``): their best checkpoint's validation
    predictions were degenerate, so their numbers measure a model that barely tells images apart."""
    by_rule: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.tags.get(DEGENERATE_TAG):
            by_rule.setdefault(r.tags[DEGENERATE_TAG], []).append(r)
    notes = []
    for rule, runs in by_rule.items():
        named = ", ".join(f"{r.run_id} ({_run_label(r)})" for r in runs[:MAX_NAMED_DEGENERATE])
        more = f" and {len(runs) - MAX_NAMED_DEGENERATE} more" if len(runs) > MAX_NAMED_DEGENERATE else ""
        notes.append(f"{len(runs)} run(s) in the tables are degenerate ({DEGENERATE_TAG}={rule}: "
                     f"{DEGENERATE_RULES.get(rule, 'see the run log')} at their best checkpoint): {named}{more}")
    return notes


def write(sel: Selection, opts: Options, say=print) -> list[Path]:
    """Every table, figure and ``report.md`` into ``opts.output``; returns the files written."""
    out = opts.output
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:  # a re-used report directory must not keep files this report did not make
        (out / name).unlink(missing_ok=True)
    written: list[Path] = []
    notes = list(sel.notes)

    def put(name: str, text: str) -> str:
        path = out / name
        path.write_text(text)
        written.append(path)
        say(f"wrote {path}")
        return text

    keys, metrics = opts.group_by, opts.metrics
    table = tables.summary_table(sel.summaries, keys, metrics)
    table_md = put("table.md", tables.to_markdown(table))
    put("table.csv", tables.summary_csv(sel.summaries, keys, metrics))
    put("table.tex", tables.to_latex(table, "mean ± sample std over seeds (n seeds); best mean in bold"))
    diff_md = None
    if opts.baseline is not None:
        rows = stats.differences(sel.summaries, sel.pairs, metrics, opts.margins, opts.alpha)
        if not rows:
            notes.append(f"differences: every group has {keys[0]}={opts.baseline}; nothing to compare")
        for r in rows:
            if r.n == 0:
                notes.append(f"group {_label(r.values)}: no seed in common with baseline group {_label(r.baseline)}")
        diff = tables.differences_table(rows, keys, metrics, opts.alpha)
        diff_md = put("differences.md", tables.to_markdown(diff))
        put("differences.csv", tables.differences_csv(rows, keys, metrics))
        put("differences.tex", tables.to_latex(diff, f"paired per-seed differences to {baseline_text(keys[0], opts)}; "
                                                     f"{verdicts.level(opts.alpha)} Student-t interval; "
                                                     f"{verdict_rule(opts, metrics)}"))
    figure_links: list[tuple[str, str]] = []

    def figure(name: str, caption: str, draw) -> None:
        path = draw(out / name)
        written.append(path)
        figure_links.append((caption, name))
        say(f"wrote {path}")

    best_md = _lambda_figure(sel, opts, put, figure, notes)
    _learning_curves(sel, figure, notes)
    _probabilities(sel, figure, notes)
    _scores_figures(sel, opts, figure, notes)
    put("report.md", _index(sel, opts, table_md, diff_md, best_md, figure_links, notes))
    return written


def verdict_rule(opts: Options, metrics: list[str]) -> str:
    """The verdict words as the report states them, with the margins used."""
    margins = {m: opts.margins.get(m, verdicts.DEFAULT_MARGIN) for m in metrics}
    delta = (f"δ = {next(iter(margins.values())):g}" if len(set(margins.values())) == 1
             else "δ: " + ", ".join(f"{m} {v:g}" for m, v in margins.items()))
    return (f"*better*/*worse*: the interval excludes 0 and the verdict survives Holm's correction over the "
            f"table's comparisons; *equivalent*: the interval lies inside ±δ ({delta}); otherwise *inconclusive* "
            f"(the seeds could not tell, which is not *no difference*)")


def baseline_text(key: str, opts: Options) -> str:
    """``loss=cb_bce``, or for pairs ``loss: any_bce → cb_bce, any_focal → cb_focal``."""
    if ":" not in (opts.baseline or ""):
        return f"{key}={opts.baseline}"
    return f"{key}: " + ", ".join(" → ".join(p.strip() for p in item.split(":")) for item in opts.baseline.split(","))


def report_name(sel: Selection, opts: Options) -> str:
    first = list(dict.fromkeys(s.values[0] for s in sel.summaries))
    return f"report {opts.group_by[0]}={','.join(first)} {timestamp()}"


def _check_output(path: Path, marker: str = "report.md") -> None:
    if path.exists() and not path.is_dir():
        raise ReportError(f"--output={str(path)!r}: is a file, not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise ReportError(f"--output={str(path)!r}: a non-empty directory without a {marker}; "
                          f"name a new or empty directory (or an earlier report's)")


def _check_keys(records: list[RunRecord], keys: list[str]) -> None:
    import difflib

    for key in keys:
        if any(r.value(key) is not None for r in records):
            continue
        tags = sorted({t[len("mlc."):] for r in records for t in r.tags if t.startswith("mlc.")})
        params = sorted({p for r in records for p in r.params})
        hint = difflib.get_close_matches(key, tags + params, n=1)
        raise ReportError(f"--group-by: no run has {key!r} (neither tag mlc.{key} nor param {key})"
                          f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; keys from the runs' tags: "
                          f"{', '.join(tags)}; or any of their {len(params)} params, e.g. {', '.join(params[:8])}")


def _with_metrics(records: list[RunRecord], metrics: list[str], notes: list[str]) -> list[RunRecord]:
    import difflib

    names = sorted({m for r in records for m in r.metrics})
    for m in metrics:
        if m not in names:
            hint = difflib.get_close_matches(m, names, n=1)
            shown = [n for n in names if n.startswith(("test/", "val/"))] or names
            raise ReportError(f"--metrics: no run has the metric {m!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}"
                              f"; metrics of the runs: {', '.join(shown[:30])}{' ...' if len(shown) > 30 else ''}")
    kept = []
    lacking = Counter()
    for r in records:
        absent = [m for m in metrics if m not in r.metrics]
        if absent:
            lacking[absent[0]] += 1
        else:
            kept.append(r)
    notes += [f"{n} run(s) left out: no metric {m!r}" for m, n in lacking.items()]
    if not kept:
        raise ReportError(f"--metrics: no run has all of {', '.join(metrics)}")
    return kept


def _varying(runs: list[RunRecord], keys: list[str]) -> list[str]:
    """Which design keys (other than the grouping) differ between runs of one group."""
    candidates = [k for k in ("lam", "negative_ratio", "dataset", "backbone", "loss", "monitor") if k not in keys]
    return [k for k in candidates if len({r.value(k) for r in runs}) > 1]


def _scores_runs(client: Any, opts: Options, summaries, records: list[RunRecord], notes: list[str]) -> list[RunRecord]:
    if opts.runs:
        by_id = {r.run_id: r for r in records}
        chosen = []
        for run_id in opts.runs:
            record = by_id.get(run_id) or get_run_record(client, run_id)
            if record is None:
                raise ReportError(f"--runs: no run {run_id!r} in the store {opts.store}")
            if not record.group:
                record.group = tuple(record.value(k) or "?" for k in opts.group_by)
                record.seed = record.seed_value
            chosen.append(record)
        return chosen
    chosen = [s.runs[0] for s in summaries]  # runs are sorted by seed: the lowest seed
    if len(chosen) > MAX_SCORES_RUNS:
        notes.append(f"scores figures: the first {MAX_SCORES_RUNS} of {len(chosen)} groups (choose with --runs)")
    return chosen[:MAX_SCORES_RUNS]


def _label(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def _run_label(r: RunRecord) -> str:
    return f"{_label(r.group)} (seed {r.seed})" if r.seed is not None else f"{_label(r.group)} ({r.name})"


def _lambda_figure(sel: Selection, opts: Options, put, figure, notes: list[str]) -> str | None:
    metric = opts.metrics[0]
    series_idx = [i for i, k in enumerate(opts.group_by) if k not in LAMBDA_KEYS]
    series_keys = [opts.group_by[i] for i in series_idx]
    points = stats.lambda_grid(sel.records, metric, lambda r: tuple(r.group[i] for i in series_idx))
    if not stats.varies_lambda(points):
        notes.append("lambda_vs_ratio.png not drawn: no runs at two or more λ (mlc.lam / loss.lam) for one negative "
                     "ratio (mlc.negative_ratio / dataset.negative_ratio)")
        return None
    best = stats.best_lambdas(points, stats.lower_is_better(metric))
    figure("lambda_vs_ratio.png", f"{metric} against λ per negative ratio; best λ per ratio",
           lambda path: figures.lambda_vs_ratio(points, best, metric, series_keys, path))
    best_table = tables.best_lambda_table(best, series_keys, metric)
    md = put("best_lambda.md", tables.to_markdown(best_table))
    put("best_lambda.csv", tables.best_lambda_csv(best, series_keys, metric))
    return md


def _learning_curves(sel: Selection, figure, notes: list[str]) -> None:
    panels: dict[str, dict[str, list]] = {}
    no_monitor = no_history = 0
    for s in sel.summaries:
        for r in s.runs:
            monitor = r.monitor
            if monitor is None:
                no_monitor += 1
                continue
            curve = load_history(sel.client, r, monitor)
            if not curve:
                no_history += 1
                continue
            panels.setdefault(monitor, {}).setdefault(_label(s.values), []).append(curve)
    if no_monitor:
        notes.append(f"learning curves: {no_monitor} run(s) left out: no mlc.monitor tag or trainer.monitor param")
    if no_history:
        notes.append(f"learning curves: {no_history} run(s) left out: no history of their monitored metric")
    if panels:
        names = ", ".join(panels)
        figure("learning_curves.png", f"{names} per epoch, one line per run",
               lambda path: figures.learning_curves(panels, path))


def _probabilities(sel: Selection, figure, notes: list[str]) -> None:
    panels: dict[str, dict[str, list]] = {}
    with_probs = [(s, [r for r in s.runs if any(m in r.metrics for m in figures.PROBABILITY_METRICS)])
                  for s in sel.summaries]
    with_probs = [(s, runs) for s, runs in with_probs if runs]
    if not with_probs:
        return
    if len(with_probs) > figures.MAX_PROBABILITY_PANELS:
        notes.append(f"probabilities.png: the first {figures.MAX_PROBABILITY_PANELS} of {len(with_probs)} groups "
                     f"with train_prob/* metrics")
    for s, runs in with_probs[:figures.MAX_PROBABILITY_PANELS]:
        curves = {}
        for m in figures.PROBABILITY_METRICS:
            histories = [load_history(sel.client, r, m) for r in runs if m in r.metrics]
            if histories:
                curves[m] = stats.mean_curve(histories)
        panels[f"{_label(s.values)} ({len(runs)} run{'s' if len(runs) > 1 else ''})"] = curves
    figure("probabilities.png", "mean predicted probability of positive (solid) and negative (dotted) labels "
                                "during training, per class tier", lambda path: figures.probabilities(panels, path))


def _scores_figures(sel: Selection, opts: Options, figure, notes: list[str]) -> None:
    items = []
    with tempfile.TemporaryDirectory(prefix="mlc-report-") as tmp:
        for i, r in enumerate(sel.scores_runs):
            path = download_scores(sel.client, r.run_id, Path(tmp) / str(i))
            if path is None:
                notes.append(f"run {r.run_id} ({_run_label(r)}): no scores/test.csv artifact; not in the PR/AP figures")
                continue
            try:
                scores = read_scores(path)
            except ScoresError as err:
                notes.append(f"run {r.run_id} ({_run_label(r)}): unreadable scores file ({err})")
                continue
            if scores.labels is None:
                notes.append(f"run {r.run_id} ({_run_label(r)}): its test scores have no labels")
                continue
            if items and scores.class_names != items[0][1].class_names:
                notes.append(f"run {r.run_id} ({_run_label(r)}): other classes than {items[0][0]}; not in the figures")
                continue
            items.append((_run_label(r), scores))
    if items:
        figure("pr_curves.png", "micro-averaged precision-recall curves (test)",
               lambda path: figures.pr_curves(items, path))
        figure("per_class_ap.png", "per-class average precision (test)",
               lambda path: figures.per_class_ap(items, path))


def _code(text: str) -> str:
    """``text`` as a Markdown code span, even when it holds backticks (MLflow filters quote keys with them)."""
    import re

    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def _index(sel: Selection, opts: Options, table_md: str, diff_md: str | None, best_md: str | None,
           figure_links: list[tuple[str, str]], notes: list[str]) -> str:
    keys = opts.group_by
    considered = "any status" if opts.all_statuses else "FINISHED"
    selection = [f"mlc.kind=run, {considered}"]
    if opts.filter:
        selection.append(f"filter {_code(opts.filter)}")
    if opts.sweep:
        selection.append(f"sweep {_code(str(Path(opts.sweep).resolve()))}")
    if opts.seeds is not None:
        selection.append(f"seeds {', '.join(opts.seeds)}")
    groups = len(sel.summaries)
    lines = [
        f"# Report: {', '.join(keys)} on experiment '{opts.experiment}'", "",
        "```", f"mlc report {shlex.join(opts.argv)}", "```", "",
        f"- store: {_code(opts.store)}, experiment {_code(opts.experiment)} (id {sel.experiment.experiment_id})",
        f"- runs: {len(sel.records)} ({'; '.join(selection)}) in {groups} group{'s' if groups != 1 else ''}",
        f"- made: {timestamp()}", "",
        "## Runs per group", "",
        "| " + " | ".join(keys) + " | runs | seeds |", "|" + "---|" * (len(keys) + 2),
    ]
    lines += [f"| {' | '.join(s.values)} | {len(s.runs)} | {', '.join(s.seeds)} |" for s in sel.summaries]
    lines += ["", "## Results", "", "Mean ± sample std over seeds (n = seeds); best mean per column in bold "
              "(files: [table.md](table.md), [table.csv](table.csv), [table.tex](table.tex)).", "", table_md]
    if diff_md is not None:
        lines += [f"## Differences to {baseline_text(keys[0], opts)}", "",
                  "Per seed, each group minus the baseline group with the same other keys, over the seeds both have; "
                  f"mean and {verdicts.level(opts.alpha)} Student-t interval. {verdict_rule(opts, opts.metrics)}. "
                  f"MDE: the difference these pairs would detect with 80% power (paired t-test, {opts.alpha:.3g}) at "
                  "the observed spread; in brackets the "
                  "seeds that would detect ±δ "
                  "(files: [differences.md](differences.md), [differences.csv](differences.csv), "
                  "[differences.tex](differences.tex)).", "", diff_md]
    if best_md is not None:
        lines += [f"## Best λ per negative ratio (by {opts.metrics[0]})", "", best_md]
    if figure_links:
        lines += ["## Figures", ""]
        for caption, name in figure_links:
            lines += [f"![{caption}]({name})", "", f"*{caption}* ([{name}]({name}))", ""]
    lines += ["## Notes", ""]
    lines += [f"- {n}" for n in notes] or ["- none: every matching run is in the tables"]
    return "\n".join(lines) + "\n"
