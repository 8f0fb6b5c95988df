"""``mlc sweep --workers N [--gpus-per-worker G] [overrides]``: N sweep processes filling the same studies.

Each worker is an ordinary ``mlc sweep`` (``python -m mlc.cli.train -m``) on the same sweep directory and
Optuna storage: it asks for its next trial when it is free, so there is no batch barrier, and the
storage hands out trial numbers atomically, so the studies end with exactly ``n_trials`` finished
trials (``mlc.sweep.study.within_budget``) and no parameters are proposed twice (each trial's sampler is
seeded by its number). This process owns the sweep's one MLflow parent run: it opens it before the
workers start (they attach to it through the sweep directory), and ends it when the last one exits,
with the sweep summary the last worker wrote. With GPUs, worker i sees only its own devices
(``CUDA_VISIBLE_DEVICES``, ``--gpus-per-worker`` of them).

The same workers can be started by hand, on one machine or several, against one storage URL
(README, "Scaling out"); this command is the one-machine shortcut.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from omegaconf import OmegaConf

from mlc.errors import MlcError
from mlc.stores import sqlite_file
from mlc.sweep.parent import LAUNCHER_PID_ENV, SHARED_PARENT_ENV, attach_sweep_summary, start_sweep_parent
from mlc.sweep.summary import refresh_summary
from mlc.tracking import tracking_settings


def parse(argv: list[str]) -> tuple[int, int | None, list[str]]:
    """(workers, GPUs per worker or None, the remaining sweep arguments) from ``mlc sweep``'s arguments."""
    workers, gpus, rest, i = 1, None, [], 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in ("--workers", "--gpus-per-worker"):
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"{name} needs a number")
                value, i = argv[i + 1], i + 1
            if not value.isdigit():
                raise ValueError(f"{name}={value!r}: must be a whole number")
            if name == "--workers":
                workers = int(value)
            else:
                gpus = int(value)
        else:
            rest.append(arg)
        i += 1
    if workers < 1:
        raise ValueError(f"--workers={workers}: must be at least 1")
    return workers, gpus, rest


def device_sets(workers: int, gpus_per_worker: int | None) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each worker (None: leave the environment as it is, e.g. no GPU)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    if gpus_per_worker is None:
        if not devices:
            return [None] * workers
        gpus_per_worker = max(1, len(devices) // workers)
    if gpus_per_worker == 0:
        return [""] * workers  # CPU workers even on a GPU machine
    if gpus_per_worker * workers > len(devices):
        raise ValueError(f"--workers={workers} × --gpus-per-worker={gpus_per_worker} needs "
                         f"{gpus_per_worker * workers} GPUs; {len(devices)} visible"
                         + ("" if devices else " (none here: --gpus-per-worker 0 runs them on the CPU)"))
    return [",".join(devices[i * gpus_per_worker:(i + 1) * gpus_per_worker]) for i in range(workers)]


def run(workers: int, gpus_per_worker: int | None, args: list[str]) -> int:
    # deferred: mlc.config loads torch (~2 s); a bad --workers/--gpus-per-worker is refused without it
    from mlc.config import check_before_hydra, compose_config, quote_override

    sweep_args = ["-m", *args]
    error, code, _ = check_before_hydra(sweep_args)  # typos and the outputs folder, before anything starts
    if error:
        return _fail(error.removeprefix("error: "), code)
    cfg = compose_config([a for a in args if not _is_sweep_value(a)], hydra=True)
    target = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
    if not target.endswith("StudyGridSweeper"):
        return _fail(f"--workers={workers}: needs an Optuna sweep (hparams_search=<preset>, mlc's study_grid "
                     f"sweeper); this command's sweeper is {target or 'none'}")
    storage = OmegaConf.select(cfg, "hydra.sweeper.storage")
    if not storage or (str(storage).startswith("sqlite") and sqlite_file(str(storage)) is None):
        return _fail(f"--workers={workers}: the workers need a storage they share (hydra.sweeper.storage is "
                     f"{storage!r}): a SQLite file, a journal file or a PostgreSQL URL")
    try:
        devices = device_sets(workers, gpus_per_worker)
    except ValueError as err:
        return _fail(str(err))
    sweep_dir = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")))
    settings = tracking_settings(cfg)
    tracker = None
    env = dict(os.environ)
    if settings.enabled:
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        try:
            tracker = start_sweep_parent(settings, sweep_dir, f"{choices.get('hparams_search') or 'sweep'}-"
                                         f"{sweep_dir.name}", args, **{"mlc.sweep.workers": str(workers)})
        except MlcError as err:
            return _fail(str(err))
        env[SHARED_PARENT_ENV] = tracker.run_id
    print(f"{workers} workers on {storage}; sweep dir {sweep_dir} (their logs: worker-<i>.log there)"
          + (f"; MLflow parent run {tracker.run_id}" if tracker else ""), flush=True)
    # The CPU's cores shared out: N workers each running torch with every core's thread would oversubscribe
    # the machine (measured: a trial's own time ×2.7 with 2 workers on 2 cores). A user's setting wins.
    threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    procs, starts, logs = [], [], [sweep_dir / f"worker-{i}.log" for i in range(workers)]
    for visible, log_path in zip(devices, logs, strict=True):
        worker_env = env | {k: os.environ.get(k, threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} \
            | ({"CUDA_VISIBLE_DEVICES": visible} if visible is not None else {})
        cmd = [sys.executable, "-m", "mlc.cli.train", *sweep_args, f"hydra.sweep.dir={quote_override(str(sweep_dir))}"]
        # Each worker writes its own log file (no pipe that breaks when this process dies), in its own session
        # (a Ctrl-C reaches it once, from here), and gets SIGTERM if this process dies, even by SIGKILL.
        with open(log_path, "a") as out:
            starts.append(out.tell())  # a re-run appends to the same log: show only this run's lines
            procs.append(subprocess.Popen(cmd, env=worker_env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True, preexec_fn=_terminate_with_parent))
    pumps = [threading.Thread(target=_pump, args=(p, path, start, f"[worker {i}] "), daemon=True)
             for i, (p, path, start) in enumerate(zip(procs, logs, starts, strict=True))]
    for pump in pumps:
        pump.start()
    codes, stopped_by = _wait(procs)
    for pump in pumps:
        pump.join(timeout=5)
    # The sweep's outcome is its studies' state now, whatever each worker saw when it ended.
    interrupted = stopped_by or (130 in codes and "interrupted")
    refreshed = refresh_summary(sweep_dir, settings.enabled, interrupted and f"{interrupted} ({workers} workers)")
    code, message = refreshed[2] if refreshed else (max(abs(c) for c in codes), "no worker wrote a sweep summary")
    if tracker is not None:
        try:
            attach_sweep_summary(tracker, sweep_dir)
        except MlcError as err:
            print(f"warning: could not attach the sweep summary to the parent run: {err}", file=sys.stderr)
        tracker.end({0: "FINISHED", 130: "KILLED"}.get(code, "FAILED"), message or None)
    if refreshed:
        print(refreshed[0], flush=True)
    for i, (proc, c) in enumerate(zip(procs, codes, strict=True)):
        if c < 0:  # killed by a signal that was not ours to send
            then = "the other workers finished its trial" if code == 0 else "the same command continues its trial"
            print(f"{'warning' if code == 0 else 'error'}: worker {i} (pid {proc.pid}) was killed by "
                  f"{signal.Signals(-c).name}; {then} (its log: {logs[i]})", file=sys.stderr)
    if code:
        print(f"error: {message}", file=sys.stderr)
    return code


def _terminate_with_parent() -> None:
    """In the worker, before it runs: ask Linux for SIGTERM when the ``--workers`` process dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait(procs: list[subprocess.Popen]) -> tuple[list[int], str | None]:
    """Wait for every worker; a Ctrl-C, SIGTERM or SIGHUP here is passed on to each (they stop after their
    step, record their trial as interrupted and exit 130). Returns their exit codes and the signal's name."""
    stopped_by: list[str] = []

    def forward(signum, _frame):
        stopped_by.append(f"interrupted ({signal.Signals(signum).name})")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return [p.wait() for p in procs], (stopped_by or [None])[0]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _pump(proc: subprocess.Popen, path: Path, start: int, prefix: str) -> None:
    """Copy a worker's log to this console as it grows, each line prefixed, until the worker has ended."""
    with open(path, errors="replace") as log_file:
        log_file.seek(start)
        while True:
            line = log_file.readline()
            if line:
                sys.stdout.write(prefix + line)
                sys.stdout.flush()
            elif proc.poll() is not None:  # ended: copy what it wrote after the last read, then stop
                sys.stdout.writelines(prefix + rest for rest in log_file)
                sys.stdout.flush()
                return
            else:
                time.sleep(0.2)


def _is_sweep_value(arg: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if arg.startswith("-"):
        return True
    try:
        return OverridesParser.create().parse_overrides([arg])[0].is_sweep_override()
    except Exception:  # Hydra's own parser will name it when the workers start
        return True


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        workers, gpus, rest = parse(list(sys.argv[1:] if argv is None else argv))
    except ValueError as err:
        return _fail(str(err))
    return run(workers, gpus, rest)


if __name__ == "__main__":
    sys.exit(main())
