"""Where a result came from: the git commit of the code and the machine it ran on.

Why this module: MLflow runs, ``mlc reproduce`` reports and the benchmark tables each record their
provenance, and each used to ask git and the machine in its own way (different commands, timeouts and
failure handling). This is the one place that asks. Standard library only (``machine()`` imports torch
when called, to report its version); every git call has a short timeout, and an answer of None or
``"unknown"`` means git or the repository was not available, never an error.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the checkout mlc runs from (an editable install)
GIT_TIMEOUT_S = 5


def _git(repo: Path | None, *args: str) -> str | None:
    """``git args`` in ``repo`` (default: mlc's checkout, if mlc runs from one): its stdout, or None."""
    if repo is None:
        if not (REPO / ".git").exists():  # installed into site-packages: no commit describes this code
            return None
        repo = REPO
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(repo: Path | None = None) -> tuple[str, bool] | None:
    """(full sha of HEAD, whether tracked files have uncommitted changes), or None without git or a repo."""
    sha = _git(repo, "rev-parse", "--verify", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no") if sha else None
    return None if status is None else (sha, bool(status))


def git_describe(repo: Path | None = None) -> str:
    """``git describe --always --dirty`` (e.g. ``12fc150-dirty``), or ``"unknown"``."""
    return _git(repo, "describe", "--always", "--dirty") or "unknown"


def machine() -> str:
    """One line: date · CPU · cores · torch version (threads) · Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_part = f" · torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_part = ""
    python = platform.python_version()
    return f"{date.today().isoformat()} · {cpu} · {os.cpu_count()} cores{torch_part} · Python {python}"
