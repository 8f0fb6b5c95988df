"""The report's figures: plain PNGs (matplotlib's Agg canvas), readable without mlc.

Each function takes plain data (numbers, curves, ``Scores``) and a path, and draws with matplotlib's
object API (``Figure``, not ``pyplot``), so drawing never switches the process's global backend or
leaks open figures into a caller such as a test or a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlc.metrics import average_precisions
from mlc.report.stats import LambdaPoint

DPI = 110
TIERS = {"head": "tab:blue", "medium": "tab:orange", "tail": "tab:green"}
PROBABILITY_METRICS = tuple(f"train_prob/{pol}_{tier}" for tier in TIERS for pol in ("pos", "neg"))
MAX_PROBABILITY_PANELS = 6
Curve = Sequence[tuple[int, float]]


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _log_scale_fits(values: Sequence[float]) -> bool:
    """A log axis when the values are positive and span at least a decade (λ grids usually are log-spaced)."""
    values = [v for v in values if v is not None]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 10


def _series_label(series: tuple[str, ...], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, series, strict=True))


def lambda_vs_ratio(points: Sequence[LambdaPoint], best: Sequence[LambdaPoint], metric: str,
                    series_keys: Sequence[str], path: Path) -> Path:
    """Left: ``metric`` against λ, one line per negative ratio (mean over seeds, ±std band).
    Right: the best λ (best mean) against the ratio, one line per series (e.g. per loss)."""
    fig, (ax, ax_best) = _figure(11, 4.2, 1, 2)
    several = len({p.series for p in points}) > 1
    lines = sorted({(p.series, p.ratio) for p in points}, key=lambda k: (k[0], k[1]))
    for series, ratio in lines:
        pts = sorted((p for p in points if p.series == series and p.ratio == ratio), key=lambda p: p.lam)
        lam = np.array([p.lam for p in pts])
        mean = np.array([p.mean for p in pts])
        std = np.array([p.std or 0.0 for p in pts])
        label = f"ratio={ratio:g}" + (f" ({_series_label(series, series_keys)})" if several and series_keys else "")
        (line,) = ax.plot(lam, mean, marker="o", label=label)
        ax.fill_between(lam, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if _log_scale_fits([p.lam for p in points]):
        ax.set_xscale("log")
    ax.set(xlabel="λ", ylabel=metric, title=f"{metric} against λ (mean ± std over seeds)")
    ax.legend(fontsize=8)
    for series in sorted({p.series for p in best}):
        pts = sorted((p for p in best if p.series == series), key=lambda p: p.ratio)
        ax_best.plot([p.ratio for p in pts], [p.lam for p in pts], marker="o",
                     label=_series_label(series, series_keys) or "best λ")
    if _log_scale_fits([p.lam for p in best]):
        ax_best.set_yscale("log")
    ax_best.set(xlabel="negative ratio", ylabel="best λ", title=f"best λ per negative ratio (by {metric})")
    if several and series_keys:
        ax_best.legend(fontsize=8)
    return _save(fig, path)


def learning_curves(panels: dict[str, dict[str, list[Curve]]], path: Path) -> Path:
    """One panel per monitored metric; one colour per group, a thin line per run."""
    fig, axes = _figure(6.4 * len(panels), 4.2, 1, len(panels))
    for ax, (monitor, groups) in zip(axes, panels.items(), strict=True):
        for i, (label, curves) in enumerate(groups.items()):
            colour = f"C{i % 10}"
            for j, curve in enumerate(curves):
                steps, values = zip(*curve, strict=True)
                ax.plot(steps, values, color=colour, linewidth=1.0, alpha=0.7, label=label if j == 0 else None)
        ax.set(xlabel="epoch", ylabel=monitor, title=f"{monitor} per epoch (one line per run)")
        _epochs(ax)
        ax.legend(fontsize=8)
    return _save(fig, path)


def probabilities(panels: dict[str, dict[str, Curve]], path: Path) -> Path:
    """Mean predicted probability of positive (solid) and negative (dotted) labels per epoch, per class
    tier (head/medium/tail), one panel per group: how the probability-guided loss paper's Figure 1 reads."""
    n = len(panels)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = _figure(4.6 * cols, 3.6 * rows, rows, cols)
    for ax, (label, curves) in zip(axes, panels.items(), strict=False):
        for tier, colour in TIERS.items():
            for polarity, style in (("pos", "-"), ("neg", ":")):
                curve = curves.get(f"train_prob/{polarity}_{tier}")
                if curve:
                    steps, values = zip(*curve, strict=True)
                    ax.plot(steps, values, linestyle=style, color=colour, linewidth=1.6,
                            label=f"{tier} {'positive' if polarity == 'pos' else 'negative'}")
        ax.set(xlabel="epoch", ylabel="mean predicted probability", title=label, ylim=(0, 1))
        _epochs(ax)
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    return _save(fig, path)


def pr_curves(items: Sequence[tuple[str, object]], path: Path) -> Path:
    """Micro-averaged precision-recall curve of each run's test scores (every instance × class pooled)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, (ax,) = _figure(6.4, 4.8)
    for label, scores in items:
        y, s = scores.labels.ravel(), scores.scores.ravel()
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, linewidth=1.4, label=f"{label} (AP {average_precision_score(y, s):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="micro-averaged precision-recall (test)")
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def per_class_ap(items: Sequence[tuple[str, object]], path: Path) -> Path:
    """Per-class average precision on test, bars grouped by class, one colour per run."""
    classes = list(items[0][1].class_names)
    k = len(classes)
    width = min(40.0, max(6.4, 0.22 * k * max(1.5, len(items) / 2)))
    fig, (ax,) = _figure(width, 4.6)
    bar = 0.8 / len(items)
    x = np.arange(k)
    for i, (label, scores) in enumerate(items):
        ap = average_precisions(scores.scores, scores.labels)
        ax.bar(x - 0.4 + bar * (i + 0.5), np.nan_to_num(ap), width=bar, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=45 if k > 8 else 0, ha="right" if k > 8 else "center", fontsize=8)
    ax.set(ylabel="average precision", ylim=(0, 1.18), yticks=np.linspace(0, 1, 6),
           title="per-class AP (test; classes without a positive: 0)")
    ax.legend(fontsize=7, loc="upper center", ncol=min(3, len(items)))
    return _save(fig, path)


def best_lambda_study(rows: Sequence, series_keys: Sequence[str], monitor: str, metric: str | None,
                      path: Path) -> Path:
    """Left: every searched λ per negative ratio (grey), the near-best ones (coloured) and their span, and
    the best λ* (line). Right: ``metric`` at λ* over the re-run seeds (mean ± std), else the search's
    objective. ``rows`` are ``mlc.report.lambda_study.Row``."""
    fig, (ax, ax_metric) = _figure(11, 4.2, 1, 2)
    all_series = list(dict.fromkeys(r.search.series for r in rows))
    several = len(all_series) > 1
    for k, series in enumerate(all_series):
        mine = sorted((r for r in rows if r.search.series == series), key=lambda r: r.search.ratio)
        color = f"C{k}"
        label = _series_label(series, series_keys) if several else "best λ (search)"
        offset = (k - (len(all_series) - 1) / 2) * 0.01  # series side by side
        for r in mine:
            x = r.search.ratio + offset
            lams = [lam for lam, _ in r.search.trials]
            ax.scatter([x] * len(lams), lams, s=12, color="0.7", zorder=1)
            if r.near:
                ax.scatter([x] * len(r.near), r.near, s=16, color=color, alpha=0.5, zorder=2)
                ax.vlines(x, min(r.near), max(r.near), color=color, alpha=0.6, linewidth=3, zorder=2)
        ax.plot([r.search.ratio + offset for r in mine], [r.search.best_lam for r in mine], marker="o", color=color,
                label=label, zorder=3)
        if metric is not None and any(metric in r.metrics for r in mine):
            pts = [r for r in mine if metric in r.metrics]
            ax_metric.errorbar([r.search.ratio for r in pts], [r.metrics[metric].mean for r in pts],
                               yerr=[r.metrics[metric].std or 0.0 for r in pts], marker="o", capsize=3, color=color,
                               label=label)
            ax_metric.set(ylabel=f"{metric} at best λ", title=f"{metric} at the best λ (mean ± std over seeds)")
        else:
            ax_metric.plot([r.search.ratio for r in mine], [r.search.best_value for r in mine], marker="o",
                           color=color, label=label)
            ax_metric.set(ylabel=f"search {monitor}", title=f"best {monitor} of the search (one seed)")
    if _log_scale_fits([lam for r in rows for lam, _ in r.search.trials]):
        ax.set_yscale("log")
    ax.set(xlabel="negative ratio", ylabel="λ",
           title="best λ per ratio; coloured: within the seed spread of the best")
    ax.legend(fontsize=8)
    ax_metric.set(xlabel="negative ratio")
    if several:
        ax_metric.legend(fontsize=8)
    return _save(fig, path)
