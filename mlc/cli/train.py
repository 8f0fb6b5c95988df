"""``mlc train [overrides]``: train one model; ``mlc sweep`` (= ``train -m``) runs a multirun or a sweep.

Examples::

    mlc train                                             # any_bce on the built-in digits data
    mlc train loss=cb_focal dataset.negative_ratio=0.8 trainer.max_epochs=5
    mlc sweep loss=bce,cb_bce,any_bce seed=0,1,2
    mlc sweep hparams_search=lambda_vs_negative_ratio
    torchrun --standalone --nproc_per_node=2 -m mlc.cli.train trainer.batch_size=32
    mlc train trainer.resume=outputs/runs/<date>/<time>/checkpoints/last.pt

The run itself is ``mlc.train.run_task`` (build -> fit -> record); this module checks the command line
before Hydra writes anything and turns the outcome into the process's exit code (``mlc.errors``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mlc.config import check_before_hydra
from mlc.train import run_task

CONF = Path(__file__).resolve().parents[2] / "conf"  # (a folder, not a package: named by its path)


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")
def task(cfg: DictConfig) -> float:
    return run_task(cfg)


def main(argv: list[str] | None = None) -> int:
    """Train (or sweep, with ``-m``) from Hydra overrides; the exit code. A sweep exits with its studies'
    outcome (``mlc.sweep.callbacks.ExitWithOutcome``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.raiseExceptions = False  # a full disk under the log file must not print logging's own traceback
    # Typos, the outputs folder and the run directory are checked before Hydra writes anything.
    error, code, extra = check_before_hydra(argv)
    if error:
        print(error, file=sys.stderr)
        return code
    # Under torchrun, only rank 0 owns the run directory: the other ranks log to the console only
    # and write nothing beside it (the trainer receives rank 0's directory by broadcast).
    if int(os.environ.get("RANK", "0")) > 0:
        if not any(a.startswith("hydra.run.dir") for a in argv):
            extra = ["hydra.output_subdir=null", "hydra/job_logging=stdout",
                     f"hydra.run.dir={os.environ.get('TMPDIR', '/tmp')}/mlc-rank{os.environ['RANK']}"]
        else:
            extra = []
    sys.argv = [sys.argv[0], *argv, *extra]  # (Hydra reads its overrides from sys.argv)
    task()
    return 0


if __name__ == "__main__":
    sys.exit(main())
