"""Pruning sweep trials at epoch boundaries (``hydra/sweeper/pruner=median|percentile|hyperband|threshold``).

Hydra's stock Optuna sweeper cannot prune (hydra#1954): its trials never talk to Optuna while they
train. mlc's sweeper hands each trial its Optuna identity in the trial's message (``mlc.sweep.trial``:
storage URL, study name, trial number and the pruner's config), which reaches the training process
whatever the launcher (in-process, joblib, submitit).
The trainer then reports the monitored validation metric of each epoch to that trial — the
intermediate values Optuna's pruners and dashboards use — and, when the pruner says so, stops at
the epoch boundary (after its checkpoints are written) with ``TrialPruned``; the sweeper records
the trial PRUNED (it counts towards ``n_trials``) and its MLflow run ends KILLED, tagged ``mlc.pruned``.

The pruner is rebuilt in the training process from that message, so only Optuna's
own pruner classes may be named there: nothing in the environment chooses other code to run.
"""

from __future__ import annotations

import logging
from typing import Any

from mlc.engine.callbacks import Callback
from mlc.errors import ConfigError, MlcError, TrialPruned
from mlc.sweep.trial import TrialSpec

log = logging.getLogger("mlc")

PRUNERS = ("NopPruner", "MedianPruner", "PercentilePruner", "HyperbandPruner", "SuccessiveHalvingPruner",
           "ThresholdPruner", "PatientPruner", "WilcoxonPruner")


def build_pruner(spec: dict | None) -> Any:
    """An Optuna pruner from its config (``_target_`` one of ``optuna.pruners.<PRUNERS>``)."""
    import optuna

    spec = dict(spec or {})
    target = str(spec.pop("_target_", "optuna.pruners.NopPruner"))
    module, _, name = target.rpartition(".")
    if module != "optuna.pruners" or name not in PRUNERS:
        raise ConfigError("hydra.sweeper.pruner._target_", target,
                          f"must be one of optuna.pruners.{{{', '.join(PRUNERS)}}}")
    try:
        return getattr(optuna.pruners, name)(**spec)
    except (TypeError, ValueError) as err:
        raise ConfigError("hydra.sweeper.pruner", target, str(err).splitlines()[0]) from None


class PruningReporter(Callback):
    """Reports each epoch's monitored value to the trial; raises ``TrialPruned`` when it should stop."""

    def __init__(self, storage: str, study: str, number: int, pruner: dict | None, monitor: str):
        import optuna  # deferred: only a sweep trial needs Optuna

        from mlc.sweep import optuna_api  # deferred: loads Optuna; mlc.train imports this module in every run

        self.monitor, self.number = monitor, int(number)
        self.study = optuna.load_study(study_name=study, storage=storage, pruner=build_pruner(pruner))
        self.trial = optuna_api.trial_of(self.study, self.number)
        self.multi = len(self.study.directions) > 1  # hydra.sweeper.objectives: Optuna keeps no intermediate values

    def on_epoch_end(self, trainer: Any, record: dict[str, float], improved: bool = False) -> None:
        epoch = int(record["epoch"])
        stop = False
        if not self.multi:
            self.trial.report(float(record[self.monitor]), step=epoch)
            stop = self.trial.should_prune() if epoch < trainer.s.max_epochs else False
        stop = bool(trainer.dist.broadcast_object(stop))  # rank 0 decides for every rank
        if stop:
            raise TrialPruned(f"trial #{self.number} pruned by {type(self.study.pruner).__name__} at epoch {epoch} "
                              f"({self.monitor} = {record[self.monitor]:.4f})")


class _FollowRankZero(Callback):
    """On the other ranks of a DDP trial: stop when rank 0's reporter says so."""

    def on_epoch_end(self, trainer: Any, record: dict[str, float], improved: bool = False) -> None:
        if trainer.dist.broadcast_object(False):
            raise TrialPruned(f"pruned at epoch {int(record['epoch'])} (decided on rank 0)")


def reporter_for(trial: TrialSpec | None, monitor: str, is_main: bool = True) -> Callback | None:
    """The reporter of a sweep trial (None outside mlc's sweeper, or for an in-memory study)."""
    if trial is None or trial.storage is None or len(trial.seeds) > 1:
        return None  # (a trial of K seeded runs reports per seed, from the sweeper: its steps are seeds, not epochs)
    if not is_main:
        return _FollowRankZero()
    try:
        return PruningReporter(trial.storage, trial.study, trial.number, trial.pruner, monitor)
    except MlcError:
        raise
    except Exception as err:  # a trial that cannot report still trains; the sweep loses only its pruning
        log.warning("this trial cannot report to Optuna (%s: %s): it runs without pruning", type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "")
        return None
