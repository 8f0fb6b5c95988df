"""Run a function on N local ranks through torch's elastic launcher (what ``torchrun --standalone`` does).

``trainer.nproc=N`` uses it so that one run, or one sweep trial, is an N-process DDP job without a
``torchrun`` in front: the ranks get ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` from the launcher's
c10d rendezvous on 127.0.0.1, ``DistContext.from_env`` picks gloo on CPU and NCCL on CUDA.

Three things the bare launcher does not give a sweep, and how they are handled:

- **Errors come back as errors.** A rank's ``MlcError`` (an interruption, a pruned trial, a NaN) is
  returned to this process as a value (the error object itself, pickled) and raised here, so the sweeper
  records the trial as interrupted, pruned or failed; any other exception fails every rank (the
  launcher stops the others) and is raised with the first failing rank's message.
- **One Ctrl-C, saved.** Ctrl-C in a terminal reaches the whole process group; a rank that also got
  the launcher's forwarded signal would take it as a second Ctrl-C and abort without saving. Each rank
  therefore leaves the terminal's process group first: only the launcher's one signal reaches it, the
  trainer finishes its step, every rank agrees to stop, ``last.pt`` is written, and the launcher
  waits for them (``shutdown_timeout``) before raising here.
- **Nothing is left behind**: the launcher ends every rank when one fails or when it is signalled.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlc.errors import EXIT_INTERRUPTED, MlcError, TrainingInterrupted

SHUTDOWN_TIMEOUT_S = 120  # a signalled rank's time to finish its step and write last.pt


@dataclass
class RankFailure:
    """A rank's ``MlcError``, sent back as a value (the launcher passes return values, not exceptions)."""

    error: MlcError  # with ``before_training`` set when refused before any step (nothing worth keeping)


def _guarded(fn, *args: Any) -> Any:
    try:
        os.setpgid(0, 0)  # out of the terminal's process group: only the launcher signals this rank
    except OSError:
        pass
    try:
        return fn(*args)
    except (TrainingInterrupted, KeyboardInterrupt):
        # Stopped by a signal, ``last.pt`` written. Exit now: a returning rank would wait for the launcher
        # to collect its value, which a signalled launcher never does (it only waits for the rank to end).
        logging.shutdown()
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)
    except MlcError as err:
        return RankFailure(err)


def run_on_local_ranks(fn, nproc: int, args: tuple, log_dir: str) -> Any:
    """``fn(*args)`` on ``nproc`` ranks of this machine; rank 0's return value, or its (or the first) error."""
    import shutil
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logs = tempfile.mkdtemp(prefix="mlc-elastic-")  # the launcher's per-rank error files; removed if empty
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=int(nproc), run_id=f"mlc-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
                          start_method="spawn", shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                          logs_specs=DefaultLogsSpecs(log_dir=logs))
    _quiet_launcher()
    try:
        results = elastic_launch(config, _guarded)(fn, *args)
    except ChildFailedError as err:
        rank, failure = min(err.failures.items())
        if failure.exitcode == EXIT_INTERRUPTED:  # a rank was signalled directly (not through this process)
            raise TrainingInterrupted(f"interrupted (rank {rank} of {nproc} stopped by a signal); resume with "
                                      f"trainer.resume={Path(log_dir) / 'checkpoints' / 'last.pt'}") from None
        text = failure.message if isinstance(failure.message, str) else str(failure.message)
        if isinstance(failure.message, dict):  # the rank's error record: {"message": ..., "extraInfo": ...}
            text = str(failure.message.get("message", failure.message))
        raise MlcError(f"rank {rank} of {nproc} failed (exit code {failure.exitcode}): "
                       f"{text.strip().splitlines()[-1] if text.strip() else 'see its log'}") from None
    except Exception as err:  # the launcher's SignalException: Ctrl-C or SIGTERM during the run
        if type(err).__name__ == "SignalException":  # (torch's private class; its name is its public contract)
            raise TrainingInterrupted(f"interrupted ({err}) with {nproc} ranks; resume with trainer.resume="
                                      f"{Path(log_dir) / 'checkpoints' / 'last.pt'}") from None
        raise
    finally:
        if not any(p.is_file() for p in Path(logs).rglob("*")):
            shutil.rmtree(logs, ignore_errors=True)
    failures = sorted((rank, r) for rank, r in results.items() if isinstance(r, RankFailure))
    if failures:
        raise failures[0][1].error
    return results[0]


def rank_logging(log_file: Path, rank: int) -> None:
    """A spawned rank has no Hydra logging: rank 0 prints progress and appends to the run's log, like a
    plain run; the other ranks report warnings only."""
    root = logging.getLogger()
    root.handlers.clear()
    formatter = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    root.addHandler(console)
    if rank == 0:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _quiet_launcher() -> None:
    """The launcher logs its rendezvous and worker bookkeeping at INFO; mlc's own lines say what matters."""
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.WARNING)
