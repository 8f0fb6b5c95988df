"""CLI processes for the tests, forked from an interpreter that has already imported torch, MLflow & co.

Why: a fresh ``python -m mlc.cli.train`` spends ~6 s of CPU importing torch (and dynamo, which any optimizer
loads), MLflow, timm, Optuna, Hydra and matplotlib before mlc's first line runs; the suite starts ~100 such
processes on 2 cores. Here each test process keeps one *zygote*: a plain interpreter that imported those
third-party packages once (none of mlc: its modules and their side effects load in every child, as in a fresh
process) and forks one child per command. The child is a real process of its own: its own pid, environment,
working directory, stdout/stderr and exit status, and it runs the module exactly as ``python -m`` does
(``runpy``), then exits as the interpreter does (non-daemon threads joined, ``atexit`` handlers, streams
flushed). Commands the CLI itself starts (sweep workers, DDP ranks, SLURM jobs) are fresh interpreters.

Tests that signal, kill or race processes start them with ``subprocess`` directly; ``MLC_TEST_FRESH=1``
runs every ``run_cli`` command as a fresh interpreter too (the same tests pass either way).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Third-party only, and nothing that selects state a command could choose differently (no backend, no store).
PRELOAD = ("numpy", "torch", "torch._dynamo", "torch.distributed", "torch.utils.data", "mlflow",
           "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "sqlalchemy", "timm", "optuna", "hydra",
           "hydra.core.global_hydra", "omegaconf", "matplotlib", "matplotlib.figure", "scipy.stats", "pandas", "yaml")
ROOT = Path(__file__).resolve().parents[1]


class Zygote:
    """The test process's side: one zygote process, one command at a time (a lock serialises threads)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", "tests.forked_cli"], cwd=ROOT, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, env=os.environ.copy(), bufsize=0)
        return self._proc

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()  # the zygote's loop ends at end of input
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def run(self, module: str, args: list[str], env: dict[str, str], cwd: Path,
            timeout: float) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", module, *args]
        with self._lock, tempfile.TemporaryDirectory(prefix="mlc-cli-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            proc = self._start()
            request = {"module": module, "args": args, "env": env, "cwd": str(cwd), "out": str(out), "err": str(err)}
            proc.stdin.write((json.dumps(request) + "\n").encode())
            pid = json.loads(self._line(proc, 120))["pid"]
            try:
                status = json.loads(self._line(proc, timeout))["status"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._line(proc, 60)
                raise subprocess.TimeoutExpired(cmd, timeout, _read(out), _read(err)) from None
            return subprocess.CompletedProcess(cmd, status, _read(out), _read(err))

    @staticmethod
    def _line(proc: subprocess.Popen, timeout: float) -> str:
        deadline, line = time.monotonic() + timeout, b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                raise RuntimeError(f"the CLI zygote (pid {proc.pid}) died (exit {proc.wait()})")
            line += chunk
        return line.decode()


def _read(path: Path) -> str:
    """As ``subprocess.run(..., text=True)`` decodes: universal newlines (a progress bar's ``\\r`` too)."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline=None) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _serve() -> None:
    """The zygote: import, then fork one child per request line on stdin; answer its pid, then its status."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)  # never returns
        answers.write(json.dumps({"pid": pid}).encode() + b"\n")
        answers.flush()
        _, wait_status = os.waitpid(pid, 0)
        answers.write(json.dumps({"status": _returncode(wait_status)}).encode() + b"\n")
        answers.flush()


def _returncode(wait_status: int) -> int:
    """As ``subprocess`` reports it: the exit code, or minus the signal that killed the process."""
    return -os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else os.WEXITSTATUS(wait_status)


def _child(request: dict) -> None:
    """``python -m <module> <args>`` in this forked process, with the request's environment, folder and files."""
    import runpy
    import traceback

    code = 1
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
        sys.stdout = sys.__stdout__ = _stream(1, "strict", unbuffered)
        sys.stderr = sys.__stderr__ = _stream(2, "backslashreplace", True)
        sys.argv = ["-m", *request["args"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as done:  # as the interpreter treats it
            if done.code is None or isinstance(done.code, int):
                code = done.code or 0
            else:
                print(done.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            traceback.print_exc()
            code = -signal.SIGINT
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        threading._shutdown()  # the interpreter's exit: wait for non-daemon threads, then atexit handlers
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if not stream.closed:  # (a command may close its output, as json.tool does)
                stream.flush()
    except BaseException:
        traceback.print_exc()
    finally:
        if code < 0:  # died of SIGINT, as an uncaught KeyboardInterrupt makes the interpreter do
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code & 0xFF)


def _stream(fd: int, errors: str, unbuffered: bool) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw if unbuffered else io.BufferedWriter(raw), encoding="utf-8", errors=errors,
                            line_buffering=not unbuffered, write_through=unbuffered)


if __name__ == "__main__":
    _serve()
