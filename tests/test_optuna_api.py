"""What mlc relies on in Optuna's and Hydra's private parts (``mlc.sweep.optuna_api``), pinned on the
installed versions with real storages: an upgrade that changes one of them fails here, by name."""

from __future__ import annotations

import time

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from mlc.sweep import optuna_api
from mlc.sweep.study import open_storage


@pytest.fixture
def study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=2)
    return optuna.create_study(study_name="pinned", storage=storage)


def test_a_trials_storage_key_addresses_it_in_the_storage(study):
    first, second = study.ask(), study.ask()
    storage = optuna_api.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    for trial in (first, second):
        key = optuna_api.trial_id(trial)
        assert isinstance(key, int) and storage.get_trial(key).number == trial.number
    frozen = study.get_trials(deepcopy=False)[1]
    assert optuna_api.trial_id(frozen) == optuna_api.trial_id(second)


def test_a_trial_is_reached_by_its_number_from_another_handle(study, tmp_path):
    trial = study.ask()
    other = optuna.load_study(study_name="pinned", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    live = optuna_api.trial_of(other, trial.number)
    live.report(0.5, step=1)  # what the pruning reporter does from the training process
    assert study.get_trials(deepcopy=False)[0].intermediate_values == {1: 0.5}


def test_stale_trials_are_found_without_being_failed(study):
    storage = optuna_api.storage_of(study)
    assert optuna_api.heartbeat_interval(storage) == 1
    trial = study.ask()
    storage.record_heartbeat(optuna_api.trial_id(trial))
    assert optuna_api.stale_trial_ids(study) == set()
    time.sleep(3)  # past the 2 s grace period
    assert optuna_api.stale_trial_ids(study) == {optuna_api.trial_id(trial)}
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING  # (not failed by the test)


def test_storages_without_heartbeats_have_no_stale_trials():
    memory = optuna.create_study()
    memory.ask()
    assert optuna_api.heartbeat_interval(optuna_api.storage_of(memory)) is None
    assert optuna_api.stale_trial_ids(memory) == set()


def test_a_failed_hydra_job_keeps_its_exception():
    error = ValueError("the task's own error")
    job = JobReturn(status=JobStatus.FAILED, _return_value=error)
    assert optuna_api.job_error(job) is error
