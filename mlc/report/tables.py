"""The report's tables as text: Markdown (to read), CSV (to compute with), LaTeX (to paste into a paper).

Markdown and LaTeX come from one ``Table`` of display strings, so the two can never disagree; the
CSV files are built from the numbers instead (full precision, mean / std / n in separate columns),
because a CSV of "0.8123 ± 0.0100" strings would have to be parsed back.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlc.report import verdicts
from mlc.report.stats import DECIMALS, Difference, DifferenceRow, GroupSummary, LambdaPoint, best_rows

DASH = "—"
PM = "±"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]  # right-aligned columns
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to emphasise


def fmt(x: float | None, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return DASH
    return f"{x:+.{DECIMALS}f}" if signed else f"{x:.{DECIMALS}f}"


def summary_table(summaries: Sequence[GroupSummary], keys: Sequence[str], metrics: Sequence[str]) -> Table:
    """One row per group: its key values, n (seeds), and mean ± std of each metric; best mean in bold."""
    rows = [[*s.values, str(s.n), *(f"{fmt(s.cells[m].mean)} {PM} {fmt(s.cells[m].std)}" for m in metrics)]
            for s in summaries]
    bold = {(i, len(keys) + 1 + j) for j, m in enumerate(metrics) for i in best_rows(summaries, m)}
    return Table([*keys, "n", *metrics], rows, [False] * len(keys) + [True] * (1 + len(metrics)), bold)


def summary_csv(summaries: Sequence[GroupSummary], keys: Sequence[str], metrics: Sequence[str]) -> str:
    header = [*keys, "n", "seeds", *(f"{m}_{part}" for m in metrics for part in ("mean", "std"))]
    rows = [[*s.values, s.n, ";".join(s.seeds),
             *(x for m in metrics for x in (_num(s.cells[m].mean), _num(s.cells[m].std)))] for s in summaries]
    return _csv(header, rows)


def differences_table(rows: Sequence[DifferenceRow], keys: Sequence[str], metrics: Sequence[str],
                      alpha: float = verdicts.ALPHA) -> Table:
    """Per group and metric: Δ to the baseline with its (1 - alpha) interval, the verdict, the minimum detectable
    effect of these pairs and the seeds that would detect the margin δ (``mlc.report.verdicts``)."""
    body = [[*r.values, str(r.n), *(x for m in metrics for x in (_delta(r.diffs[m]), r.diffs[m].label,
                                                                  _detects(r.diffs[m])))] for r in rows]
    header = [*keys, "n pairs", *(x for m in metrics for x in (f"Δ {m} [{verdicts.level(alpha)} CI]", f"{m} verdict",
                                                                 f"{m} MDE (seeds for ±δ)"))]
    return Table(header, body, [False] * len(keys) + [True] + [True, False, True] * len(metrics))


def differences_csv(rows: Sequence[DifferenceRow], keys: Sequence[str], metrics: Sequence[str]) -> str:
    parts = ("diff_mean", "ci_low", "ci_high", "verdict", "margin", "p", "mde", "seeds_needed")
    header = [*keys, *(f"baseline_{k}" for k in keys), "n_pairs", *(f"{m}_{part}" for m in metrics for part in parts)]
    body = [[*r.values, *r.baseline, r.n,
             *(x for m in metrics for x in (_num(r.diffs[m].mean), _num(r.diffs[m].low), _num(r.diffs[m].high),
                                             r.diffs[m].label, _num(r.diffs[m].margin), _num(r.diffs[m].p),
                                             _num(r.diffs[m].mde), _seeds(r.diffs[m])))] for r in rows]
    return _csv(header, body)


def best_lambda_table(points: Sequence[LambdaPoint], series_keys: Sequence[str], metric: str) -> Table:
    rows = [[*p.series, _plain(p.ratio), _plain(p.lam), f"{fmt(p.mean)} {PM} {fmt(p.std)}", str(p.n)]
            for p in points]
    header = [*series_keys, "negative_ratio", "best λ", metric, "n"]
    return Table(header, rows, [False] * len(series_keys) + [True] * 4)


def best_lambda_csv(points: Sequence[LambdaPoint], series_keys: Sequence[str], metric: str) -> str:
    header = [*series_keys, "negative_ratio", "best_lambda", f"{metric}_mean", f"{metric}_std", "n"]
    return _csv(header, [[*p.series, _num(p.ratio), _num(p.lam), _num(p.mean), _num(p.std), p.n] for p in points])


def to_markdown(table: Table) -> str:
    def cell(i: int, j: int, text: str) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if (i, j) in table.bold else text

    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in table.header) + " |",
             "|" + "|".join("---:" if num else "---" for num in table.numeric) + "|"]
    lines += ["| " + " | ".join(cell(i, j, t) for j, t in enumerate(row)) + " |" for i, row in enumerate(table.rows)]
    return "\n".join(lines) + "\n"


def to_latex(table: Table, comment: str = "") -> str:
    """A ``tabular`` (no packages needed) to ``\\input`` inside a table environment."""
    def cell(i: int, j: int, text: str) -> str:
        text = latex_escape(text)
        return f"\\textbf{{{text}}}" if (i, j) in table.bold else text

    spec = "".join("r" if num else "l" for num in table.numeric)
    lines = [f"% {line}" for line in comment.splitlines()]
    lines += [f"\\begin{{tabular}}{{{spec}}}", "\\hline",
              " & ".join(latex_escape(h) for h in table.header) + " \\\\", "\\hline"]
    lines += [" & ".join(cell(i, j, t) for j, t in enumerate(row)) + " \\\\" for i, row in enumerate(table.rows)]
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  PM: r"$\pm$", DASH: "---", "Δ": r"$\Delta$", "λ": r"$\lambda$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _delta(d: Difference) -> str:
    if d.n == 0:
        return DASH
    if d.low is None:
        return fmt(d.mean, signed=True)
    return f"{fmt(d.mean, signed=True)} [{fmt(d.low, signed=True)}, {fmt(d.high, signed=True)}]"


def _detects(d: Difference) -> str:
    """'0.081 (12)': the minimum detectable effect of these pairs, and the seeds that would detect ±δ."""
    return DASH if d.mde is None else f"{fmt(d.mde)} ({_seeds(d) or 'n/a'})"


def _seeds(d: Difference) -> str:
    if d.mde is None:
        return ""
    return str(d.seeds_needed) if d.seeds_needed is not None else f">{verdicts.MAX_SEEDS}"


def _num(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def _plain(x: float) -> str:
    return f"{x:g}"


def _csv(header: list, rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
