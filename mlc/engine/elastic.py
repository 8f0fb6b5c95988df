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

With ``trainer.nnodes > 1`` every node runs the same command and this launcher meets the others at the
c10d rendezvous ``trainer.rdzv_endpoint``, ``trainer.nproc`` ranks here; each node gets the value of
its lowest global rank (rank 0's on the node holding it). A lost peer is one line, not torch's blocks:
a rank whose connection to another rank breaks (that process or its node is gone) exits with
``EXIT_PEER_LOST`` instead of a traceback, the rendezvous store's failure (its node is gone) is caught
here, and both become ``node lost: ...; resume with trainer.resume=...``. A peer killed outright is
noticed in seconds (its sockets close); a node cut off the network without closing them only when a
collective times out (the process group's timeout).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlc.errors import EXIT_INTERRUPTED, MlcError, TrainingInterrupted

SHUTDOWN_TIMEOUT_S = 120  # a signalled rank's time to finish its step and write last.pt
EXIT_PEER_LOST = 75  # a rank's exit code when its connection to another rank broke (mlc's own, not torch's)
# What gloo, NCCL and the c10d store say when the other end of a connection is gone (or silent for too long).
LOST_CONTACT = re.compile(r"Connection (reset|closed) by peer|Broken pipe|Timed out waiting|Socket Timeout|"
                          r"communicator was aborted|ncclRemoteError|remote process exited")


@dataclass(frozen=True)
class Nodes:
    """Where the nodes of one ``trainer.nnodes > 1`` run meet; every node passes the same values."""

    count: int
    endpoint: str  # host:port of the c10d rendezvous (the node that binds it hosts the store)
    run_id: str  # the job's name there: nodes with another id do not join this run


def default_rdzv_id(run_dir: str) -> str:
    """A rendezvous id every node of a run derives alike from the ``hydra.run.dir`` it was given (a folder
    they share): two runs into different folders never join each other at the same endpoint."""
    return "mlc-" + hashlib.sha256(run_dir.encode()).hexdigest()[:16]


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
    except Exception as err:
        if not _lost_contact(err):
            raise
        # Another rank (or its whole node) is gone: the reason goes to the launcher's error file, and the
        # exit code says what happened; a traceback would only repeat torch's socket error in 20 lines.
        with contextlib.suppress(OSError, KeyError):
            with open(os.environ["TORCHELASTIC_ERROR_FILE"], "w") as fh:
                json.dump({"message": _short(err), "timestamp": int(time.time())}, fh)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(EXIT_PEER_LOST)


def _lost_contact(err: BaseException) -> bool:
    """Whether ``err`` says that a connection to another rank (or to the rendezvous store) broke."""
    import torch.distributed as dist

    return isinstance(err, (dist.DistNetworkError, dist.DistStoreError)) or (
        isinstance(err, RuntimeError) and LOST_CONTACT.search(str(err)) is not None)


def _short(err: BaseException) -> str:
    """torch's socket error in a few words: 'Read error [10.0.0.2]:41234: Connection reset by peer'."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", text)  # the C++ source location
    return text.split(". ")[0].rstrip(".")


def run_on_local_ranks(fn, nproc: int, args: tuple, log_dir: str, nodes: Nodes | None = None) -> Any:
    """``fn(*args)`` on ``nproc`` ranks of this machine (with ``nodes``: of each of its nodes); the value of
    this node's lowest global rank (rank 0's here), or its (or the first) error."""
    import shutil
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    count = nodes.count if nodes is not None else 1
    world = count * int(nproc)
    resume = f"resume with trainer.resume={Path(log_dir) / 'checkpoints' / 'last.pt'}"
    logs = tempfile.mkdtemp(prefix="mlc-elastic-")  # the launcher's per-rank error files; removed if empty
    where = dict(rdzv_endpoint=nodes.endpoint, run_id=nodes.run_id) if nodes is not None else \
        dict(rdzv_endpoint="127.0.0.1:0", run_id=f"mlc-{uuid.uuid4().hex[:8]}")
    config = LaunchConfig(min_nodes=count, max_nodes=count, nproc_per_node=int(nproc), rdzv_backend="c10d",
                          max_restarts=0, monitor_interval=0.2, start_method="spawn",
                          shutdown_timeout=SHUTDOWN_TIMEOUT_S, logs_specs=DefaultLogsSpecs(log_dir=logs), **where)
    _quiet_launcher(critical_only=nodes is not None)
    try:
        with _without_store_noise() if nodes is not None else contextlib.nullcontext(), _threads_per_rank(int(nproc)):
            results = elastic_launch(config, _guarded)(fn, *args)
    except ChildFailedError as err:
        failures = sorted(err.failures.items())
        causes = [(r, f) for r, f in failures if f.exitcode != EXIT_PEER_LOST] or failures  # the root cause first
        rank, failure = causes[0]
        if failure.exitcode == EXIT_INTERRUPTED:  # a rank was signalled directly (not through this process)
            raise TrainingInterrupted(f"interrupted (rank {rank} of {world} stopped by a signal); {resume}") from None
        text = failure.message if isinstance(failure.message, str) else str(failure.message)
        if isinstance(failure.message, dict):  # the rank's error record: {"message": ..., "extraInfo": ...}
            text = str(failure.message.get("message", failure.message))
        text = text.strip().splitlines()[-1] if text.strip() else "see its log"
        if failure.exitcode == EXIT_PEER_LOST:
            lost = "node lost" if count > 1 else "rank lost"
            raise MlcError(f"{lost}: rank {rank} of {world} lost its connection to another rank ({text}); "
                           f"{_resume_hint(log_dir)}") from None
        raise MlcError(f"rank {rank} of {world} failed (exit code {failure.exitcode}): {text}") from None
    except RendezvousError as err:  # (only with nodes: one machine's rendezvous cannot lose its store)
        raise MlcError(_rendezvous_failed(err, config.rdzv_endpoint, count, _resume_hint(log_dir))) from None
    except Exception as err:  # the launcher's SignalException: Ctrl-C or SIGTERM during the run
        if type(err).__name__ == "SignalException":  # (torch's private class; its name is its public contract)
            raise TrainingInterrupted(f"interrupted ({err}) with {world} ranks; {resume}") from None
        raise
    finally:
        if not any(p.is_file() for p in Path(logs).rglob("*")):
            shutil.rmtree(logs, ignore_errors=True)
    failures = sorted((rank, r) for rank, r in results.items() if isinstance(r, RankFailure))
    if failures:
        raise failures[0][1].error
    return results[min(results)]


@contextlib.contextmanager
def _threads_per_rank(nproc: int):
    """The ranks share this machine's cores: each gets ``cores // nproc`` torch threads (``OMP_NUM_THREADS``,
    which the spawned ranks inherit) unless the user chose a number. Without it every rank would use every
    core, and on CPU the ranks' threads would fight over them (torchrun sets 1 for the same reason)."""
    if "OMP_NUM_THREADS" in os.environ or nproc <= 1:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // nproc))
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def _resume_hint(log_dir: str) -> str:
    """How to go on after a lost node: from ``last.pt`` if an epoch (or a step checkpoint) wrote one."""
    last = Path(log_dir) / "checkpoints" / "last.pt"
    return f"resume with trainer.resume={last}" if last.is_file() else "no checkpoint yet: start the run again"


def _rendezvous_failed(err: Exception, endpoint: str, count: int, resume: str) -> str:
    """The launcher's rendezvous error as what it means for this run, in one line."""
    from torch.distributed.elastic.rendezvous.api import RendezvousClosedError, RendezvousTimeoutError

    reason = (str(err).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
    what = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
    if isinstance(err, RendezvousTimeoutError):
        return f"rendezvous at {endpoint} timed out: not all {count} nodes joined ({what})"
    if isinstance(err, RendezvousClosedError):
        return f"the rendezvous at {endpoint} was closed: another node ended this run ({what}); {resume}"
    return f"node lost: the rendezvous store at {endpoint} is gone or out of reach ({what}); {resume}"


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


def _quiet_launcher(critical_only: bool = False) -> None:
    """The launcher logs its rendezvous and worker bookkeeping at INFO; mlc's own lines say what matters.
    Across nodes also its warnings and errors: a lost node makes it log the failed keep-alive, the failed
    exit barrier and the failed worker, each a block of lines, before the error this module turns into one."""
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL if critical_only else logging.WARNING)


C10D_STORE_LOG = re.compile(r"^\[[WE]\d{4} [\d:.]+ (TCPStore|socket)\.cpp:\d+\] ")  # torch's C++ store client
C10D_STORE_LOG_TAIL = re.compile(r"^(Exception raised from |frame #\d+: |<omitting python frames>|\s*$)")


@contextlib.contextmanager
def _without_store_noise():
    """This process's stderr (and its ranks', who inherit it) through a filter that drops the c10d store
    client's C++ warnings: when the node hosting the store is gone, each failed call of the launcher prints
    one with a dump of C++ frames, and torch reads ``TORCH_CPP_LOG_LEVEL`` only when it is imported, long
    before this. Every other line passes, as it comes."""
    sys.stderr.flush()
    saved = os.dup(2)  # the real stderr (not inherited by the ranks)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    copier = threading.Thread(target=_copy_without_store_noise, args=(read_end, saved), daemon=True)
    copier.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer here; it ends when the ranks (who hold it too) are gone
        copier.join(timeout=5)
        if not copier.is_alive():
            os.close(saved)


def _copy_without_store_noise(read_end: int, out: int) -> None:
    dropping = False
    with open(read_end, "rb") as pipe:
        for raw in iter(pipe.readline, b""):
            line = raw.decode(errors="replace")
            dropping = bool(C10D_STORE_LOG.match(line) or (dropping and C10D_STORE_LOG_TAIL.match(line)))
            if not dropping:
                with contextlib.suppress(OSError):
                    os.write(out, raw)
