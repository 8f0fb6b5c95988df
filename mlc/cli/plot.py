"""``python -m mlc.cli.plot <figure> ...``: figures that explain mlc's losses, written as PNG files.

``likelihood [--lam 0.02] [--alpha 1] [--labels 1,0] [--points 201] --output DIR`` draws the two-class
simulation of the any-class presence likelihood (LOSSES.md §1; the math is in ``mlc.likelihood``): over a
grid of (p1, p2) in (0, 1), for each label pair (y1, y2) (or the one given with ``--labels``), one figure
with the two probability aggregations (product p1·p2 and the normalised weighted geometric mean p_a, and
their difference), the BCE, any-class and BCE × any-class^α likelihoods, and their negative logs (the loss
surfaces, computed from logits). Each file written is printed on its own line.

A bad option prints one ``error: ...`` line naming it and exits with code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlc import likelihood

MAX_POINTS = 2001


class UsageError(Exception):
    """A bad option value: reported as one ``error: ...`` line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a parse error is one ``error: ...`` line on stderr (exit 2) instead of usage + error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse_labels(text: str) -> tuple[int, int]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or any(part not in ("0", "1") for part in parts):
        raise UsageError(f"--labels {text!r}: expected two comma-separated 0/1 labels y1,y2, e.g. 1,0")
    return int(parts[0]), int(parts[1])


def output_folder(path: Path) -> Path:
    """``path`` as a folder that exists (created if needed), or UsageError naming --output."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output {str(path)!r}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output {str(path)!r}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def likelihood_filename(labels: Sequence[int], lam: float, alpha: float) -> str:
    suffix = "" if alpha == 1.0 else f"_alpha{alpha:g}"
    return f"likelihood_y{labels[0]}{labels[1]}_lam{lam:g}{suffix}.png"


def likelihood_figure(labels: tuple[int, int], lam: float, alpha: float = 1.0, points: int = 201):
    """The 3×3 figure of one label pair: aggregations, likelihoods, losses (a matplotlib Figure, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p = likelihood.grid(points)
    surf = likelihood.surfaces(p, p, labels, lam, alpha)
    diff = surf["geometric_mean"] - surf["product"]
    y_a = int(likelihood.any_class_target(labels))
    panels = [
        ("product", surf["product"], "viridis", (0.0, 1.0)),
        ("geometric_mean", surf["geometric_mean"], "viridis", (0.0, 1.0)),
        ("difference", diff, "RdBu_r", None),
        ("bce_likelihood", surf["bce_likelihood"], "viridis", (0.0, 1.0)),
        ("any_likelihood", surf["any_likelihood"], "viridis", (0.0, 1.0)),
        ("combined_likelihood", surf["combined_likelihood"], "viridis", (0.0, 1.0)),
        ("bce_loss", surf["bce_loss"], "magma", None),
        ("any_loss", surf["any_loss"], "magma", None),
        ("combined_loss", surf["combined_loss"], "magma", None),
    ]
    titles = likelihood.SURFACES | {"difference": "p_a − p1·p2",
                                    "combined_likelihood": f"BCE × any-class^α (α = {alpha:g})",
                                    "combined_loss": f"BCE + α·any-class loss (α = {alpha:g})"}
    fig = Figure(figsize=(15, 13), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (name, values, cmap, bounds) in zip(fig.subplots(3, 3).flat, panels, strict=True):
        extend = "neither"
        if bounds is not None:
            levels = np.linspace(*bounds, 21)
        elif name == "difference":
            top = max(float(np.abs(values).max()), 1e-12)
            levels = np.linspace(-top, top, 21)
        else:  # a loss: it grows like −log p at the edges, so the colours stop at its 95th percentile
            low, high = float(values.min()), float(np.quantile(values, 0.95))
            levels = np.linspace(low, max(high, low + 1e-12), 21)
            extend = "max"
        filled = ax.contourf(p, p, values, levels=levels, cmap=cmap, extend=extend)
        fig.colorbar(filled, ax=ax)
        ax.plot([labels[0]], [labels[1]], marker="*", markersize=14, color="white", markeredgecolor="black",
                clip_on=False, zorder=5)
        ax.set(xlabel="p1", ylabel="p2", xlim=(0, 1), ylim=(0, 1), aspect="equal",
               title=f"{titles[name]}\ny = ({labels[0]}, {labels[1]}), λ = {lam:g}")
    fig.suptitle(f"Any-class presence likelihood, two classes: y = ({labels[0]}, {labels[1]}), y_a = {y_a}, "
                 f"λ = {lam:g}, α = {alpha:g}   (★ marks the labels)")
    return fig


def run_likelihood(args: argparse.Namespace) -> int:
    lam, alpha = args.lam, args.alpha
    if not 0.0 <= lam <= 1.0:  # also rejects NaN
        raise UsageError(f"--lam {lam!r}: λ must be in [0, 1]")
    if not (math.isfinite(alpha) and alpha >= 0.0):
        raise UsageError(f"--alpha {alpha!r}: α must be finite and >= 0")
    if not 2 <= args.points <= MAX_POINTS:
        raise UsageError(f"--points {args.points}: must be in 2..{MAX_POINTS}")
    pairs = [parse_labels(args.labels)] if args.labels is not None else list(likelihood.LABEL_PAIRS)
    folder = output_folder(args.output)
    for labels in pairs:
        path = folder / likelihood_filename(labels, lam, alpha)
        fig = likelihood_figure(labels, lam, alpha, args.points)
        try:
            fig.savefig(path, dpi=100)
        except OSError as exc:
            raise UsageError(f"--output {str(folder)!r}: cannot write {path.name} ({exc.strerror or exc})") from None
        print(path, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m mlc.cli.plot", description=__doc__.splitlines()[0])
    figures = parser.add_subparsers(dest="figure", metavar="figure", required=True)
    lik = figures.add_parser("likelihood", help="the two-class any-class likelihood simulation",
                             description="Probability aggregations, likelihoods and loss surfaces of the any-class "
                                         "presence likelihood over (p1, p2), one PNG per label pair.")
    lik.add_argument("--lam", type=float, default=0.02, help="λ in [0, 1], the absent-class weight (default: 0.02)")
    lik.add_argument("--alpha", type=float, default=1.0, help="α >= 0, weight of the any-class term (default: 1)")
    lik.add_argument("--labels", default=None,
                     help="one label pair y1,y2 (e.g. 1,0); default: all four of 0,0 1,0 0,1 1,1")
    lik.add_argument("--points", type=int, default=201, help="grid points per axis (default: 201)")
    lik.add_argument("--output", type=Path, required=True, help="folder for the PNG files (created if needed)")
    lik.set_defaults(run=run_likelihood)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
