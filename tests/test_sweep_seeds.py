"""``hydra.sweeper.seeds_per_trial=K``: a trial is K runs (the same seeds for every trial, one MLflow run each),
valued by their mean, run in rounds of one seed; the study's pruner judges the per-seed values; a continued
trial runs only the seeds it lacks. Real sweeps, real signals."""

from __future__ import annotations

import re
import signal

import optuna
import pytest

from tests.conftest import mlflow_runs, run_cli
from tests.test_sweep import _run_until, _start

pytestmark = pytest.mark.slow

TINY = ["dataset.train_size=128", "dataset.val_size=64", "dataset.test_size=64", "trainer.batch_size=32"]
SEEDS = ["hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.sampler.n_startup_trials=2", *TINY,
         "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]", "hydra.sweeper.seeds_per_trial=2"]


def _study(outputs) -> optuna.Study:
    storage = f"sqlite:///{outputs}/optuna.db"
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return optuna.load_study(study_name=name, storage=storage)


def _runs_by_trial(outputs) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in mlflow_runs(outputs, "lambda_vs_negative_ratio"):
        if run.data.tags.get("mlc.kind") == "run":
            out.setdefault(run.data.tags["mlc.lam"], []).append(run)
    return out


def test_the_pruner_judges_trials_by_their_seeds(outputs, data_cache):
    # ThresholdPruner with an unreachable lower bound: every trial stops after its first seed, deterministically
    done = run_cli(["-m", *SEEDS, "trainer.max_epochs=1", "hydra.sweeper.n_trials=1", "hydra/sweeper/pruner=threshold",
                    "hydra.sweeper.pruner.lower=0.999", "hydra.sweeper.pruner.upper=null",
                    "hydra.sweeper.pruner.n_warmup_steps=0"], outputs, data_cache, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pruned by ThresholdPruner after 1 of 2 seeds" in done.stdout
    trials = _study(outputs).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED]
    assert [int(r.data.tags["mlc.seed"]) for rs in _runs_by_trial(outputs).values() for r in rs] == [0]


def test_a_continued_trial_runs_only_the_seeds_it_lacks_and_each_trial_is_the_mean_of_its_seeds_runs(
        outputs, data_cache):
    # One sweep of two trials × two seeds: Ctrl-C while trial #0 trains seed 1, then the same command continues
    # it (trial #1: seed 1 only, from its checkpoint) and runs trial #2 whole (seeds 0 and 1, the same seeds).
    args = [*SEEDS, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "hydra.sweeper.n_trials=2"]
    proc = _start(args, outputs, data_cache)
    _run_until(proc, "trial #0, seed 0:")  # seed 0 finished; Ctrl-C while seed 1 trains
    _run_until(proc, "epoch 2 step 3/")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    first = _study(outputs).get_trials()
    assert [t.state for t in first] == [optuna.trial.TrialState.FAIL]
    assert list(first[0].user_attrs["mlc.seed_values"]) == ["0"]

    again = run_cli(["-m", *args], outputs, data_cache, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"trial #1 \(job \d+\), seed 1", again.stdout), again.stdout[-3000:]
    assert not re.search(r"trial #1 \(job \d+\), seed 0|trial #1, seed 0:", again.stdout)  # seed 0 is not run again
    assert re.search(r"trial #2 \(job \d+\), seed 0", again.stdout) and re.search(r"trial #2 \(job \d+\), seed 1",
                                                                                 again.stdout)
    study = _study(outputs)
    assert "seeds_per_trial" in study.user_attrs["mlc.config"]  # K > 1 is a study of its own
    trials = study.get_trials()
    complete = optuna.trial.TrialState.COMPLETE
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, complete, complete]
    continued, fresh = trials[1], trials[2]
    assert continued.params == first[0].params
    runs = _runs_by_trial(outputs)
    assert sorted(int(r.data.tags["mlc.seed"]) for rs in runs.values() for r in rs) == [0, 0, 1, 1]  # one run per
    sweeps = {r.info.run_id for r in mlflow_runs(outputs, "lambda_vs_negative_ratio") if r.data.tags.get("mlc.kind")
              == "sweep"}  # one parent run per invocation
    for trial in (continued, fresh):  # (trial, seed): the interrupted seed 1 was resumed, not run again
        (lam,) = [k for k in runs if float(k) == pytest.approx(trial.params["loss.lam"], rel=1e-5)]
        mine = {int(r.data.tags["mlc.seed"]): r for r in runs[lam]}
        assert sorted(mine) == [0, 1] and {r.info.status for r in mine.values()} == {"FINISHED"}
        assert (mine[1].data.tags.get("mlc.resumed") == "true") == (trial is continued)
        per_seed = {s: r.data.metrics[f"best/{r.data.tags['mlc.monitor']}"] for s, r in mine.items()}
        assert trial.intermediate_values == pytest.approx({0: per_seed[0], 1: per_seed[1]})
        assert trial.value == pytest.approx((per_seed[0] + per_seed[1]) / 2)
        parents = {r.data.tags["mlflow.parentRunId"] for r in mine.values()}
        # every seed's run nests under a sweep's parent run; those of a trial run in one invocation, under its one
        assert parents <= sweeps and (trial is continued or len(parents) == 1)


def test_sweeping_seed_as_well_is_refused_in_one_line(outputs, data_cache):
    done = run_cli(["-m", *SEEDS, "seed=0,1"], outputs, data_cache)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.seeds_per_trial=2: gives each trial its seeds (seed, seed+1, ...): do not sweep "
        "seed as well")
