"""``TrialSpec``, the one message from mlc's sweeper to a trial: written and read in one place, carried
through Hydra's override grammar intact, refused when it is not one."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from mlc.errors import MlcError
from mlc.sweep import trial as trial_message
from mlc.sweep.trial import TrialSpec

SPEC = TrialSpec(study="demo@1a2b3c4d[dataset.negative_ratio=0.8]", number=7, storage="sqlite:////tmp/o p/optuna.db",
                 params={"loss.lam": 0.0302852515}, fixed={"dataset.negative_ratio": 0.8},
                 resume="/tmp/o p/multirun/x/3/checkpoints/last.pt",
                 pruner={"_target_": "optuna.pruners.MedianPruner", "n_warmup_steps": 2},
                 parent_run_id="94790382bd554f75a9d72a5b48357ec9", seeds=(0,))


def test_the_message_survives_json_and_the_environment():
    assert TrialSpec.from_json(SPEC.to_json()) == SPEC
    assert TrialSpec.from_env({trial_message.ENV: SPEC.to_json()}) == SPEC
    assert TrialSpec.from_env({}) is None  # not a trial of mlc's sweeper


def test_its_overrides_parse_as_hydra_overrides_and_carry_the_message_back():
    overrides = SPEC.overrides(["trainer.max_epochs=3"])
    parsed = {o.get_key_element(): o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    assert parsed["trainer.max_epochs"] == 3
    assert parsed["dataset.negative_ratio"] == 0.8 and parsed["loss.lam"] == pytest.approx(0.0302852515)
    assert parsed["trainer.resume"] == SPEC.resume  # (a path with a space survives the grammar)
    assert TrialSpec.from_json(parsed[f"+hydra.job.env_set.{trial_message.ENV}"]) == SPEC
    # the sampled values win over the grid point and the fixed arguments (Hydra: the last one wins)
    assert overrides.index("loss.lam=0.0302852515") > overrides.index("dataset.negative_ratio=0.8")


def test_a_fresh_trial_has_no_resume_override():
    fresh = TrialSpec(study="s", number=0, params={"loss.lam": 0.1})
    assert not any(o.startswith("trainer.resume") for o in fresh.overrides())


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"study": "s"}', '{"study": "s", "number": 1, "evil": 1}'])
def test_anything_else_is_refused_in_one_line(text):
    with pytest.raises(MlcError, match=r"^\$MLC_TRIAL is not a trial message of this mlc"):
        TrialSpec.from_json(text)


def test_a_training_process_refuses_a_message_for_other_seeds(monkeypatch):
    from mlc.train import _trial_of

    class Checked:
        class cfg:  # noqa: N801 (the config's attribute access)
            seed = 3

    monkeypatch.setenv(trial_message.ENV, SPEC.to_json())
    with pytest.raises(MlcError, match=r"seed=3 is not one of this trial's seeds \[0\]"):
        _trial_of(Checked)
    Checked.cfg.seed = 0
    assert _trial_of(Checked) == SPEC


def test_a_seeded_job_of_a_trial_overrides_its_seed_and_keeps_the_others():
    job = TrialSpec(study="s", number=2, params={"loss.lam": 0.1}, seeds=(0, 1, 2), seed=1)
    overrides = job.overrides()
    assert "seed=1" in overrides and overrides.index("seed=1") > overrides.index("loss.lam=0.1")
    assert TrialSpec.from_json(job.to_json()) == job
    assert not any(o.startswith("seed=") for o in SPEC.overrides())  # one seed: the config's own
