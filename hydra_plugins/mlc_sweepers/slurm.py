"""``RequeuingSlurmLauncher`` (``hydra/launcher=slurm_cpu|slurm_gpu|slurm_ddp``): Hydra's submitit SLURM launcher,
whose trials are requeued from their checkpoint when SLURM warns them, instead of failing.

SLURM sends a job its warning signal ``signal_delay_s`` seconds before the time limit, or when it is about
to preempt it (``sbatch --signal=USR2@<s>``, which submitit asks for). Submitit's handler for it calls the
job's ``checkpoint()`` and requeues the job (``scontrol requeue``) with what that returns; Hydra's launcher
returns the same arguments, so the requeued trial would start again in its own run folder, which a run
refuses ("last.pt already exists"), and the trial would be recorded FAIL. Here instead:

- while the trial trains, the trainer takes the signal like SIGTERM: it stops after the step, writes
  ``last.pt`` and raises ``TrainingInterrupted`` (its MLflow run ends KILLED);
- the job then hands the signal on to submitit, whose ``checkpoint()`` call gets the trial's arguments plus
  ``trainer.resume=<that last.pt>``: the requeued job continues the run (same folder, same MLflow run), and
  the sweeper, still waiting for the job's result, gets the finished trial;
- a signal outside training (building the data, testing) is noted and nothing stops: there is no checkpoint
  to continue from yet, or nothing left to train;
- if submitit will not requeue (``max_num_timeout`` requeues after time limits used up), the trial stays
  interrupted: the sweeper records it so and stops, and the same command continues it later.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from mlc.errors import TrainingInterrupted

log = logging.getLogger("mlc.sweep")

WARNING_SIGNAL = signal.SIGUSR2  # submitit's default (SUBMITIT_PREEMPT_SIGNAL unset); the trainer stops on it


class RequeuingSlurmLauncher(submitit_launcher.SlurmLauncher):
    """Hydra's ``submitit_slurm`` launcher, plus the requeue of a warned trial from its ``last.pt``."""

    _resume_from: str | None = None  # set in the job, when its trial stopped on the warning signal

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict) -> JobReturn:
        requeue = signal.getsignal(WARNING_SIGNAL)  # submitit's checkpoint-and-requeue handler (in a job)
        warned: list[bool] = []

        def note(_signum: int, _frame: Any) -> None:  # outside training: nothing to checkpoint yet
            warned.append(True)
            log.warning("%s received outside training: no checkpoint to requeue from; carrying on",
                        WARNING_SIGNAL.name)

        signal.signal(WARNING_SIGNAL, note)
        try:
            ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        finally:
            signal.signal(WARNING_SIGNAL, requeue)
        from mlc.sweep.optuna_api import job_error  # deferred: loads Optuna; Hydra imports this plugin in every run

        err = job_error(ret) if ret.status == JobStatus.FAILED else None
        stopped = isinstance(err, TrainingInterrupted) and (err.signal == WARNING_SIGNAL.name or bool(warned))
        if stopped and err.checkpoint and callable(requeue):
            self._resume_from = err.checkpoint
            log.warning("%s: requeuing this trial from %s", str(err).split(";")[0], err.checkpoint)
            try:
                signal.raise_signal(WARNING_SIGNAL)  # submitit: self.checkpoint(...), scontrol requeue, exit
            except Exception as refused:  # submitit's UncompletedJobError: e.g. max_num_timeout used up
                log.warning("not requeued (%s): the trial stays interrupted", str(refused).splitlines()[0])
        return ret

    def checkpoint(self, sweep_overrides: list[str], *args: Any) -> Any:
        """What submitit requeues: this trial again, resuming from the ``last.pt`` its trainer wrote."""
        import submitit  # (as Hydra's launcher: lazily, so that plugin discovery stays fast)

        from mlc.config import quote_override  # deferred: loads torch; Hydra imports this plugin in every run

        overrides = list(sweep_overrides)
        if self._resume_from:
            overrides = [o for o in overrides if not o.startswith("trainer.resume=")]
            overrides.append(f"trainer.resume={quote_override(self._resume_from)}")
        return submitit.helpers.DelayedSubmission(self, overrides, *args)
