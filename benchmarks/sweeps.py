"""Sweep overhead per trial for each Optuna storage, and sweep throughput with 1 and 2 workers.

Every measurement is a real sweep in a subprocess, as a user runs it: ``python -m mlc.cli.train -m
hparams_search=lambda_vs_negative_ratio`` with one study of ``TRIALS`` tiny trials (1 epoch of 128
digits scenes), the default MLflow tracking (a SQLite store) and a warm digits cache, in a temporary
outputs folder. Before any timing, one untimed training run with the same data fills the digits
cache, creates the MLflow store and warms the file cache, as any earlier run on a user's machine has.

*Own time* of a trial is the wall time of its ``Trainer.fit()`` — the epoch (training and validation),
the test evaluation of the best checkpoint, threshold tuning and the checkpoint and score files: from
the trial's log line that announces the run (written just before ``fit``) to the modification time of
its ``result.json`` (written just after it). Everything else a sweep spends is *overhead*: Python and
imports, Hydra's composition and launch, Optuna's ask and tell, loading the cached data and building
the model, MLflow's run start, parameters, artifacts and run end, the curve plot, and the sweep summary.
Each trial's time between its job start (Hydra writes ``.hydra/config.yaml``) and its fit start is
*prepare*, between fit end and its last log line (``best ... | run dir``, after MLflow's run end) is
*finish*, and from there to the next trial's job start is the *sweeper*'s (tell, ask, launch).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from benchmarks.common import RESULTS_DIR, write
from mlc.provenance import git_describe, machine

ROOT = RESULTS_DIR.parents[1]
TRIALS = 10
TARGET_S = 1.0  # the scale-out issue's target: ≤ 1 s of overhead per trial
DATA = ["dataset.train_size=128", "dataset.val_size=64", "dataset.test_size=64", "trainer.batch_size=32",
        "trainer.max_epochs=1"]
SWEEP = ["hparams_search=lambda_vs_negative_ratio", f"hydra.sweeper.n_trials={TRIALS}",
         "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]", *DATA]
TIMEOUT_S = 600
_LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[[^\]]*\]\[[A-Z]+\] (.*)$")
_FIT_START = re.compile(r" process\(es\) on \S+ \| run dir ")
_FINISHED = re.compile(r"^best \S+ = \S+ at epoch \d+ \| run dir ")


@dataclass
class Trial:
    """One trial's moments (seconds since the epoch): job start, fit start, fit end, last log line."""

    job_start: float
    fit_start: float
    fit_end: float
    finished: float

    @property
    def own(self) -> float:
        return self.fit_end - self.fit_start


@dataclass
class Sweep:
    """One timed sweep command: when it was launched and exited (seconds since the epoch) and its trials."""

    label: str
    launched: float
    exited: float
    trials: list[Trial] = field(default_factory=list)
    load: float = 0.0  # the 1-minute load average when it exited


    @property
    def wall(self) -> float:
        return self.exited - self.launched

    @property
    def own(self) -> float:
        return sum(t.own for t in self.trials)

    @property
    def startup(self) -> float:
        """Launch to the first trial's fit start: Python, imports, Hydra, storage, the first trial's prepare."""
        return min(t.fit_start for t in self.trials) - self.launched

    @property
    def wind_down(self) -> float:
        """The last trial's fit end to exit: its finish, the sweep summary, the MLflow parent run's end."""
        return self.exited - max(t.fit_end for t in self.trials)

    @property
    def all_in(self) -> float:
        """Overhead per trial, everything included: (wall − Σ own) / trials."""
        return (self.wall - self.own) / len(self.trials)

    def _ordered(self) -> list[Trial]:
        return sorted(self.trials, key=lambda t: t.fit_start)

    @property
    def between(self) -> float:
        """Overhead per trial in the steady state (one process): the mean gap from one fit's end to the next's start."""
        ordered = self._ordered()
        return statistics.fmean(b.fit_start - a.fit_end for a, b in zip(ordered, ordered[1:], strict=False))

    def parts(self) -> tuple[float, float, float]:
        """Medians over the trials of (prepare, finish, sweeper), in seconds; the sweeper part of consecutive trials."""
        ordered = self._ordered()
        return (statistics.median(t.fit_start - t.job_start for t in ordered),
                statistics.median(t.finished - t.fit_end for t in ordered),
                statistics.median(b.job_start - a.finished for a, b in zip(ordered, ordered[1:], strict=False)))

    @property
    def per_minute(self) -> float:
        """Trials per minute of the whole command."""
        return 60 * len(self.trials) / self.wall

    @property
    def per_minute_running(self) -> float:
        """Trials per minute after start-up: from the first fit start to exit."""
        return 60 * len(self.trials) / (self.wall - self.startup)


def _log_time(stamp: str) -> float:
    """A log line's ``asctime`` (local time, milliseconds) as seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def read_trial(run_dir: Path) -> Trial:
    """The moments of one finished trial, from its run folder (see the module docstring)."""
    fit_start = finished = None
    for line in (run_dir / "train.log").read_text().splitlines():
        match = _LOG_LINE.match(line)
        if not match:
            continue
        if fit_start is None and _FIT_START.search(match[2]):
            fit_start = _log_time(match[1])
        elif _FINISHED.match(match[2]):
            finished = _log_time(match[1])
    if fit_start is None or finished is None:
        raise ValueError(f"{run_dir / 'train.log'}: no fit start or no final line")
    return Trial(job_start=(run_dir / ".hydra" / "config.yaml").stat().st_mtime, fit_start=fit_start,
                 fit_end=(run_dir / "result.json").stat().st_mtime, finished=finished)


def read_trials(sweep_dir: Path) -> list[Trial]:
    """Every finished trial of a sweep directory (numbered folders with a ``result.json``)."""
    return [read_trial(d) for d in sorted(sweep_dir.iterdir(), key=lambda p: (len(p.name), p.name))
            if d.is_dir() and d.name.isdigit() and (d / "result.json").is_file()]


def _env(outputs: Path) -> dict[str, str]:
    return os.environ | {"MLC_OUTPUTS": str(outputs), "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str], outputs: Path, log: Path) -> tuple[float, float]:
    """Run ``cmd`` in the repository root; (launched, exited) in seconds since the epoch. Its output goes to ``log``."""
    with log.open("w") as out:
        launched = time.time()
        done = subprocess.run(cmd, cwd=ROOT, env=_env(outputs), stdout=out, stderr=subprocess.STDOUT,
                              timeout=TIMEOUT_S)
        exited = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{log.read_text()[-3000:]}")
    return launched, exited


def sweep(label: str, tmp: Path, outputs: Path, cache: Path, args: list[str], workers: int | None = None) -> Sweep:
    """Run one sweep (``mlc sweep --workers N`` if ``workers``) in its own sweep directory; its timings."""
    sweep_dir = tmp / "sweeps" / re.sub(r"\W+", "-", label).strip("-")
    overrides = [*SWEEP, *args, f"paths.cache={cache}", f"hydra.sweep.dir={sweep_dir}"]
    if workers is None:
        cmd = [sys.executable, "-m", "mlc.cli.train", "-m", *overrides]
    else:
        cmd = [sys.executable, "-m", "mlc.cli", "sweep", "--workers", str(workers), *overrides]
    print(f"  {label}: running {TRIALS} trials ...", flush=True)
    launched, exited = _run(cmd, outputs, tmp / f"{sweep_dir.name}.log")
    result = Sweep(label, launched, exited, read_trials(sweep_dir), load=os.getloadavg()[0])
    if len(result.trials) != TRIALS:
        raise RuntimeError(f"{label}: {len(result.trials)} finished trials in {sweep_dir}, expected {TRIALS}")
    print(f"  {label}: {result.wall:.1f} s, {result.own:.1f} s of training, {result.all_in:.2f} s overhead per trial"
          f" (load {result.load:.1f})", flush=True)
    return result


def start_postgres() -> tuple[object | None, str | None, str]:
    """(server, URL, note): a throwaway PostgreSQL server from ``tests/postgres.py``, or (None, None, why not)."""
    try:
        from tests.postgres import PostgresServer, postgres_bin
    except ImportError as err:  # an installation without the tests (or without pytest)
        return None, None, f"PostgreSQL skipped: tests/postgres.py cannot be imported ({err})"
    bin_dir = postgres_bin()
    if bin_dir is None:
        return None, None, ("PostgreSQL skipped: no server binaries (initdb, pg_ctl) on PATH or in "
                            "/usr/lib/postgresql/*/bin (Debian's `postgresql` package provides them)")
    server = PostgresServer(bin_dir)
    try:
        url = server.start()
    except BaseException:
        server.stop()
        raise
    return server, url, f"PostgreSQL {bin_dir.parent.name}: a throwaway local server on 127.0.0.1 (fsync off)"


def render(overhead: list[tuple[str, Sweep]], throughput: list[tuple[int, Sweep]], help_s: float,
           notes: list[str], start_load: float, header: str) -> str:
    """The text of ``sweeps.md``: overhead rows (storage label, sweep), throughput rows (workers, sweep)."""
    rows = []
    for storage, s in overhead:
        prepare, finish, sweeper = s.parts()
        verdict = "✓" if s.between <= TARGET_S else "✗"
        rows.append(f"| {storage} | {s.wall:.1f} | {s.own / len(s.trials):.2f} | {s.startup:.1f} | "
                    f"{s.between:.2f} {verdict} | {prepare:.2f} / {finish:.2f} / {sweeper:.2f} | {s.wind_down:.1f} | "
                    f"{s.all_in:.2f} | {s.load:.1f} |")
    trows = []
    if throughput:
        base = throughput[0][1]
        trows = [f"| {n} | {s.wall:.1f} | {s.startup:.1f} | {s.own / len(s.trials):.2f} | {s.per_minute:.1f} | "
                 f"{s.per_minute / base.per_minute:.2f}× | {s.per_minute_running:.1f} | "
                 f"{s.per_minute_running / base.per_minute_running:.2f}× | {s.load:.1f} |" for n, s in throughput]
    loads = [start_load, *(s.load for _, s in overhead), *(s.load for _, s in throughput)]
    busy = max(loads) > 2.5
    return "\n".join([
        "# Sweep overhead and throughput (`make bench`, benchmarks/sweeps.py)", "",
        header, "",
        f"Each row is one real sweep of {TRIALS} tiny trials in a subprocess, "
        f"`python -m mlc.cli.train -m {' '.join(SWEEP)}` (one study; 1 epoch of 128 digits scenes, val and test 64, "
        "batch 32), with the default MLflow tracking (a SQLite store) unless the row says otherwise, a warm digits "
        "cache and an existing MLflow store (one untimed run beforehand), in a temporary outputs folder; "
        "`hydra.sweeper.storage` as in the first column.", "",
        "*Own time* of a trial = the wall time of its `Trainer.fit()` (the epoch with validation, the test "
        "evaluation, threshold tuning, checkpoint and score files): from the trial's log line announcing the run "
        "(just before `fit`) to the modification time of its `result.json` (just after). Everything else is "
        "overhead. *Between trials* = the mean gap from one trial's fit end to the next one's fit start (the "
        f"steady-state seconds per trial beyond training; target ≤ {TARGET_S:g} s): the medians of its parts are "
        "*prepare* (job start, when Hydra writes `.hydra/config.yaml`, to fit start: config check, cached data, "
        "model, MLflow run start and parameters), *finish* (fit end to the trial's last log line: curve plot, "
        "MLflow artifacts and run end) and *sweeper* (to the next job start: Optuna's tell and ask, Hydra's launch). "
        "*Start-up* = launch to the first fit start; *wind-down* = the last fit end to exit (summary, parent run). "
        f"*All-in* = (wall − Σ own) / {TRIALS} = (start-up + gaps + wind-down) / {TRIALS}. *Load* = the 1-minute "
        "load average as the sweep ended (other work on the machine).", "",
        "| storage | wall s | own s / trial | start-up s | between trials s / trial | prepare / finish / sweeper s "
        "| wind-down s | all-in s / trial | load |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        f"For scale: `python -m mlc.cli.train --help` (Python, imports, Hydra's composition; no trial) takes "
        f"{help_s:.1f} s here.", "",
        "## Throughput: `mlc sweep --workers N`", "",
        f"The same {TRIALS}-trial sweep on SQLite storage through `python -m mlc.cli sweep --workers N` "
        f"(mlc/workers.py) on {os.cpu_count()} cores; the launcher shares the cores out, each of N workers running "
        f"torch with cores ÷ N threads (OMP_NUM_THREADS; one process alone gets {_torch_threads()}). Trials per minute "
        "of the whole command (wall), and after start-up (from the first fit start to exit: what a longer sweep "
        "approaches).", "",
        "| workers | wall s | start-up s | own s / trial | trials / minute | vs 1 worker | trials / minute after "
        "start-up | vs 1 worker | load |", "|---|---|---|---|---|---|---|---|---|", *trows, "",
        "Notes:", "",
        *[f"- {n}" for n in notes],
        f"- Load average (1 min) at the start: {start_load:.1f}; the highest at the end of a sweep: "
        f"{max(loads):.1f}, on {os.cpu_count()} cores" + (
            ": the machine was busy with other work, which slows and disturbs the numbers (training and overhead "
            "alike)." if busy else "."), ""])


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def run() -> str:
    started = time.perf_counter()
    start_load = os.getloadavg()[0]
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="benchmarks-sweeps-"))
    server = None
    try:
        outputs, cache = tmp / "outputs", tmp / "cache"
        outputs.mkdir()
        print("sweeps: warm-up run (digits cache, MLflow store) ...", flush=True)
        _run([sys.executable, "-m", "mlc.cli.train", *DATA, f"paths.cache={cache}",
              "tracking.experiment=lambda_vs_negative_ratio", f"hydra.run.dir={tmp / 'warmup'}"],
             outputs, tmp / "warmup.log")
        launched, exited = _run([sys.executable, "-m", "mlc.cli.train", "--help"], outputs, tmp / "help.log")
        help_s = exited - launched
        server, postgres, note = start_postgres()
        notes.append(note)
        storages = [("in memory (`null`)", "null"), ("journal file", f"journal:///{tmp}/optuna.log"),
                    ("SQLite", f"sqlite:///{tmp}/optuna.db")]
        if postgres:
            storages.append(("PostgreSQL", postgres))
        overhead = [(label, sweep(label, tmp, outputs, cache, [f"hydra.sweeper.storage={url}"]))
                    for label, url in storages]
        overhead.append(("SQLite, `tracking=none`", sweep("SQLite, tracking=none", tmp, outputs, cache,
                                                          [f"hydra.sweeper.storage=sqlite:///{tmp}/optuna-none.db",
                                                           "tracking=none"])))
        throughput = [(n, sweep(f"{n} worker(s)", tmp, outputs, cache,
                                [f"hydra.sweeper.storage=sqlite:///{tmp}/optuna-workers{n}.db"], workers=n))
                      for n in (1, 2)]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    notes.append("Each row is a single sweep, not repeated: between runs of this benchmark on this shared machine, "
                 "the per-trial overheads of a row move by about a tenth of a second, so smaller differences between "
                 "rows are noise.")
    notes.append(f"The benchmark took {time.perf_counter() - started:.0f} s in all (warm-up and servers included).")
    header = f"{machine()} · git {git_describe(ROOT)}; command: `python -m benchmarks sweeps`"
    text = render(overhead, throughput, help_s, notes, start_load, header)
    path = write("sweeps.md", text)
    return f"{text}\n(written to {path})"


if __name__ == "__main__":
    print(run())
