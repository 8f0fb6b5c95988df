"""Options of ``python -m mlc.report`` and its contract: one ``error:`` line and exit code 2 for bad input.

Examples::

    python -m mlc.report --output reports/losses                       # every finished run in outputs/mlflow.db
    python -m mlc.report --baseline cb_bce --output reports/vs-cb       # + paired differences to cb_bce
    python -m mlc.report --sweep outputs/multirun/2026-12-01/09-37-06 --group-by loss --output reports/sweep
    python -m mlc.report --filter "params.`dataset.negative_ratio` = '0.9'" --no-log --output /tmp/r
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path

from mlc.report.runs import ReportError, log_report_run, store_uri

DEFAULT_GROUP_BY = "loss,backbone"
DEFAULT_METRICS = "test/f1_macro,test/f2_macro,test/map,test/f1_neg"
DEFAULT_EXPERIMENT = "mlc"  # conf/tracking/mlflow.yaml


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is the same one line as every other bad input."""

    def error(self, message: str):
        raise ReportError(message)


def add_store_options(p: argparse.ArgumentParser) -> None:
    """``--tracking-uri`` and ``--outputs``: which MLflow store the runs are read from (``store_of``)."""
    p.add_argument("--tracking-uri", help="MLflow tracking URI (wins over --outputs)")
    p.add_argument("--outputs", help="mlc's outputs directory: its store is sqlite:///<outputs>/mlflow.db "
                                     "(default: $MLC_OUTPUTS or outputs)")


def store_of(args: argparse.Namespace) -> tuple[str, str]:
    """(store URI, the option that named it, for error messages) from ``add_store_options``' options."""
    option = "--tracking-uri" if args.tracking_uri else "--outputs"
    if not args.tracking_uri and not args.outputs and os.environ.get("MLC_OUTPUTS"):
        option = "--outputs (from $MLC_OUTPUTS)"
    return store_uri(args.tracking_uri, args.outputs), option


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="mlc report", description="Tables (mean ± std over seeds, paired differences with "
                "95% intervals) and figures from the training runs tracked in MLflow.",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("Examples::", 1)[1])
    add_store_options(p)
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default: %(default)s)")
    p.add_argument("--filter", help="an MLflow search string, e.g. \"params.`dataset.negative_ratio` = '0.9'\"")
    p.add_argument("--sweep", help="only the trials of this multirun directory (their mlc.sweep_dir tag)")
    p.add_argument("--group-by", default=DEFAULT_GROUP_BY,
                   help="comma-separated keys: tag mlc.<key>, else param <key> (default: %(default)s)")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help="comma-separated metrics (default: %(default)s); "
                   "the first one is the λ figure's")
    p.add_argument("--baseline", help="a value of the first --group-by key: paired differences to that group; or "
                   "pairs 'value:baseline,...' (e.g. any_bce:cb_bce,any_focal:cb_focal): each value against its own")
    p.add_argument("--margin", default=None, help="δ of an 'equivalent' verdict: a difference inside ±δ does not "
                   "matter; one number for every metric, or 'metric=δ,...' (default: 0.01, one point of a fraction)")
    p.add_argument("--alpha", type=float, default=0.05, help="the level of every interval and test: (1 - alpha) "
                   "intervals, Holm's correction at alpha (default: %(default)s)")
    p.add_argument("--seeds", help="comma-separated seeds: only the runs of these seeds (default: every seed)")
    p.add_argument("--runs", help="comma-separated run ids for the PR/AP figures (default: the lowest seed of "
                                  "each group)")
    p.add_argument("--all-statuses", action="store_true", help="also runs that did not end FINISHED")
    p.add_argument("--no-log", action="store_true", help="do not log the report as an MLflow run")
    p.add_argument("--output", required=True, help="directory to write the report into (created)")
    return p


def comma_list(text: str, option: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ReportError(f"{option}={text!r}: expected a comma-separated list")
    if len(set(items)) != len(items):
        raise ReportError(f"{option}={text!r}: a value is repeated")
    return items


def parse_margins(text: str | None, metrics: list[str]) -> dict[str, float]:
    """``--margin``: '0.02' for every metric, or 'test/f1_macro=0.02,test/map=0.01' (others: the default)."""
    if text is None:
        return {}
    items = comma_list(text, "--margin")
    if len(items) == 1 and "=" not in items[0]:
        return dict.fromkeys(metrics, _margin(items[0], text))
    margins = {}
    for item in items:
        metric, sep, value = (part.strip() for part in item.partition("="))
        if not sep or metric not in metrics:
            raise ReportError(f"--margin={text!r}: {item!r} is not 'metric=δ' for one of --metrics "
                              f"({', '.join(metrics)})")
        margins[metric] = _margin(value, text)
    return margins


def _margin(value: str, text: str) -> float:
    try:
        margin = float(value)
    except ValueError:
        margin = math.nan
    if not 0 < margin < math.inf:
        raise ReportError(f"--margin={text!r}: {value!r} is not a positive number")
    return margin


def _alpha(alpha: float) -> float:
    if not 0 < alpha < 0.5:
        raise ReportError(f"--alpha={alpha!r}: must lie in (0, 0.5), e.g. 0.05 for 95% intervals")
    return alpha


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = parser().parse_args(argv)
        except SystemExit as done:  # --help
            return int(done.code or 0)
        return _run(args, argv)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from mlc.report import build  # deferred: loads numpy; `mlc report --help` loads the standard library alone

    store, store_option = store_of(args)
    opts = build.Options(
        store=store, store_option=store_option, experiment=args.experiment, output=Path(args.output),
        group_by=comma_list(args.group_by, "--group-by"),
        metrics=comma_list(args.metrics, "--metrics"), filter=args.filter, sweep=args.sweep, baseline=args.baseline,
        runs=comma_list(args.runs, "--runs") if args.runs is not None else None, all_statuses=args.all_statuses,
        margins=parse_margins(args.margin, comma_list(args.metrics, "--metrics")), alpha=_alpha(args.alpha),
        seeds=comma_list(args.seeds, "--seeds") if args.seeds is not None else None, argv=argv)
    selection = build.select(opts)
    written = build.write(selection, opts)
    if args.no_log:
        return 0
    try:
        tags = {"mlc.report.command": ("mlc report " + shlex.join(argv))[:5000],
                "mlc.report.group_by": ",".join(opts.group_by), "mlc.report.runs": str(len(selection.records))}
        run_id = log_report_run(selection.client, selection.experiment.experiment_id,
                                build.report_name(selection, opts), opts.output, tags)
    except Exception as err:  # the files are written; only the copy in MLflow failed
        print(f"error: could not log the report run to {opts.store} ({type(err).__name__}: "
              f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); the report is in {opts.output}",
              file=sys.stderr)
        return 1
    print(f"report run {run_id} in experiment {opts.experiment!r} ({len(written)} files logged as artifacts)")
    return 0
