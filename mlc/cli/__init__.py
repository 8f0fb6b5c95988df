"""``mlc <command> [args]``: one entry point for everything mlc does; every command-line program of mlc
lives in this package, each with a ``main(argv) -> exit code`` that this dispatcher calls.

Each command is also ``python -m mlc.cli.<module>``; Hydra overrides pass through to ``train`` and
``sweep`` unchanged. The table below is static and this module imports nothing heavy, so ``mlc --help``
answers at once, and ``mlc.cli.clean`` runs with the system Python before the virtualenv exists.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, extra leading arguments, one line of help)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "train": ("mlc.cli.train", (), "train one model (Hydra overrides: loss=any_bce dataset.negative_ratio=0.8 ...)"),
    "sweep": ("mlc.cli.train", ("-m",), "a multirun or an Optuna sweep (= train -m); --workers N: N processes"),
    "infer": ("mlc.cli.infer", (), "score a run (dir, checkpoint or MLflow id) on a split or new images"),
    "evaluate": ("mlc.cli.evaluate", (), "every metric of scores files (or runs), as a table or JSON"),
    "report": ("mlc.cli.report", (), "tables (mean ± std over seeds, paired differences), figures from MLflow runs"),
    "plot": ("mlc.cli.plot", (), "figures that need no runs (likelihood: the any-class two-class simulation)"),
    "data": ("mlc.cli.data", (), "statistics of a dataset config, and checks of its files"),
    "studies": ("mlc.cli.studies", (), "state of the sweeps' Optuna studies (and --fail-stale for dead trials)"),
    "ui": ("mlc.cli.ui", (), "the MLflow dashboard (or --optuna: optuna-dashboard) on 127.0.0.1"),
    "reproduce": ("mlc.cli.reproduce", (), "a seed paper's comparison (experiment preset) run, reported, written up"),
    "clean": ("mlc.cli.clean", (), "remove what mlc wrote under an outputs folder it marked as its own"),
}
RENAMED = {"sweeps": "studies"}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mlc <command> [args]   (mlc <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += ["", "Each command is also `python -m mlc.cli.<module>` (train and sweep: mlc.cli.train)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        close = [RENAMED[name]] if name in RENAMED else [c for c in COMMANDS if c.startswith(name[:2])]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        print(f"error: mlc {name}: no such command{hint}; `mlc --help` lists them", file=sys.stderr)
        return 2
    module, lead, _ = COMMANDS[name]
    if name == "sweep" and any(a.split("=")[0] in ("--workers", "--gpus-per-worker") for a in rest):
        module, lead = "mlc.sweep.workers", ()  # N worker processes on this machine
    sys.argv = [f"mlc {name}", *lead, *rest]  # (what argparse names in its usage lines; Hydra reads it too)
    # deferred: the command's own imports (torch, MLflow, Optuna) load only for the command run
    command = importlib.import_module(module)
    return exit_code(command.main, [*lead, *rest])


def exit_code(entry, argv: list[str]) -> int:
    """Run a command's ``main(argv)``: its return value or ``SystemExit`` code becomes the exit code."""
    try:
        code = entry(argv)
    except SystemExit as exit_:
        code = exit_.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            return 1
    return int(code or 0)
