"""``mlc <command> [args]``: one entry point for everything mlc does.

Each command is also ``python -m mlc.<module>``; ``mlc`` runs that module exactly as ``python -m``
would (so ``mlc train`` keeps every check ``python -m mlc.train`` makes before Hydra writes anything),
and Hydra overrides pass through to ``train`` and ``sweep`` unchanged. The list below is static, so
``mlc --help`` answers at once, without importing torch.
"""

from __future__ import annotations

import runpy
import sys

# command -> (module, extra leading arguments, one line of help)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "train": ("mlc.train", (), "train one model (Hydra overrides: loss=any_bce dataset.negative_ratio=0.8 ...)"),
    "sweep": ("mlc.train", ("-m",), "a multirun or an Optuna sweep (= train -m); --workers N: N processes"),
    "infer": ("mlc.infer", (), "score a run (dir, checkpoint or MLflow id) on a split or new images -> scores file"),
    "evaluate": ("mlc.evaluate", (), "every metric of scores files (or runs), as a table or JSON"),
    "report": ("mlc.report", (), "tables (mean ± std over seeds, paired differences) and figures from MLflow runs"),
    "plot": ("mlc.plot", (), "figures that need no runs (likelihood: the any-class two-class simulation)"),
    "data": ("mlc.data", (), "statistics of a dataset config, and checks of its files"),
    "sweeps": ("mlc.sweeps", (), "status of the sweeps' Optuna studies (and --fail-stale for dead trials)"),
    "ui": ("mlc.ui", (), "the MLflow dashboard (or --optuna: optuna-dashboard) on 127.0.0.1"),
    "reproduce": ("mlc.reproduce", (), "a seed paper's comparison (experiment preset) run, reported, written up"),
    "gpu-check": ("mlc.gpu_check", (), "on a GPU: AMP, compile, NCCL DDP, fused losses, trainer vs bare loop"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mlc <command> [args]   (mlc <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += ["", "Each command is also `python -m <module>` (train/sweep: mlc.train; ui: mlc.ui; ...)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        close = [c for c in COMMANDS if c.startswith(name[:2])]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        print(f"error: mlc {name}: no such command{hint}; `mlc --help` lists them", file=sys.stderr)
        return 2
    module, lead, _ = COMMANDS[name]
    if name == "sweep" and any(a.split("=")[0] in ("--workers", "--gpus-per-worker") for a in rest):
        from mlc.workers import main as workers

        return workers(rest)  # N worker processes on this machine (mlc/workers.py)
    sys.argv = [f"mlc {name}", *lead, *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        print(code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
