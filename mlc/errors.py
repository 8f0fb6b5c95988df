"""Errors that mlc reports to users as one line.

Every user-facing failure (a bad config value, a broken checkpoint, a loss that became NaN) is an
``MlcError``: the CLI prints ``error: <message>`` and exits non-zero instead of dumping a traceback,
because the message already names the culprit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class MlcError(Exception):
    """An error whose message alone tells the user what went wrong and where."""


class ConfigError(MlcError, ValueError):
    """A config value is invalid. ``key`` is the dotted config key, e.g. ``loss.lam``."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={value!r}: {reason}")

    def __reduce__(self) -> tuple:
        # Rebuilt from its three fields, not the message: a trial's error survives the pickling of a
        # process-based launcher (hydra/launcher=joblib, submitit_*) on its way back to the sweeper.
        return type(self), (self.key, self.value, self.reason), self.__dict__

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key prefixed, e.g. ``lam`` -> ``loss.lam``."""
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.value, self.reason)


@contextmanager
def config_scope(prefix: str) -> Iterator[None]:
    """Re-raise ``ConfigError`` from a constructor with its key under ``prefix``.

    Constructors name their own keyword argument (``lam``); the caller knows where in the config
    that argument came from (``loss``), so together they name the full key (``loss.lam``).
    """
    try:
        yield
    except ConfigError as err:
        raise err.under(prefix) from None


def require(ok: bool, key: str, value: Any, reason: str) -> None:
    """Raise ``ConfigError(key, value, reason)`` unless ``ok``."""
    if not ok:
        raise ConfigError(key, value, reason)


class NonFiniteLossError(MlcError):
    """The training loss became NaN or infinite."""


class CheckpointError(MlcError):
    """A checkpoint is missing, unreadable, or belongs to an incompatible run."""


class DataError(MlcError):
    """Input data is missing or malformed."""


class TrainingInterrupted(MlcError):
    """Training stopped on SIGINT/SIGTERM/SIGUSR2 after saving ``last.pt``; the message says how to resume.

    Where the trainer knows them, ``signal`` names the signal and ``checkpoint`` is that ``last.pt``: a SLURM
    trial stopped by the warning signal before its time limit (SIGUSR2) is requeued from it, not failed
    (``hydra_plugins.mlc_sweepers.slurm``)."""

    def __init__(self, message: str, signal: str | None = None, checkpoint: str | None = None):
        super().__init__(message)
        self.signal, self.checkpoint = signal, checkpoint


class TrialPruned(MlcError):
    """A sweep trial's pruner stopped it at an epoch boundary (its checkpoints are complete)."""


# The exit codes of every mlc process (train, its elastic ranks, sweeps and their workers, the other commands):
EXIT_OK = 0
EXIT_FAILED = 1  # the work failed, or a sweep's studies did not reach n_trials
EXIT_USAGE = 2  # bad input (config, override, file, command line), refused before any compute where possible
EXIT_INTERRUPTED = 130  # stopped by a signal with its state saved: the same command continues it


def exit_code(err: BaseException) -> int:
    """The exit code for ``err`` when it ends a process (the table above)."""
    if isinstance(err, (TrainingInterrupted, KeyboardInterrupt)):
        return EXIT_INTERRUPTED
    return EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILED


def is_real(x: Any) -> bool:
    """A finite real number from a config (not a bool, NaN or ±inf): what numeric fields accept."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def is_integer(x: Any) -> bool:
    """An integer from a config (not a bool)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)
