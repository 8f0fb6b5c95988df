"""The few private parts of Optuna and Hydra that mlc's sweeps rely on, in one place.

Each has no public equivalent: a trial's storage key (to close a dead trial atomically in the storage,
or to report to a trial from another process), a study's storage and key, Optuna's own test for trials
whose heartbeat stopped (without failing them, so that mlc can queue their continuation first), the
heartbeat interface, and the exception a Hydra launcher kept for a failed job. ``tests/test_optuna_api.py``
pins what mlc expects of each on the installed versions, so an upgrade that changes one fails there,
by name, rather than somewhere in a sweep.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the interface of storages with heartbeats (RDB)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """A trial's key in its storage (trial numbers count within a study; the storage's calls take the key)."""
    return trial._trial_id


def trial_of(study: optuna.Study, number: int) -> optuna.Trial:
    """Trial ``number`` of ``study`` as a live trial, to report to it from another process."""
    key = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    return optuna.Trial(study, key)


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between heartbeats of a storage that records them (RDB), else None."""
    return storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None


def stale_trial_ids(study: optuna.Study) -> set[int]:
    """Keys of the study's RUNNING trials without a heartbeat within the grace period: Optuna's own test,
    without failing them (``optuna.storages.fail_stale_trials`` would, before mlc could queue their
    continuation)."""
    if not heartbeat_interval(study._storage):
        return set()
    return set(study._storage._get_stale_trial_ids(study._study_id))


def job_error(job_return: Any) -> BaseException:
    """The exception a Hydra launcher kept for a failed job (``JobReturn.return_value`` would re-raise it
    and print a stray line)."""
    return job_return._return_value
