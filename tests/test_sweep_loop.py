"""``mlc.sweep.loop.SweepLoop`` without Hydra's sweeper plugin or launcher: its launch callable here runs a
tiny pure-Python objective per job and returns Hydra's own ``JobReturn`` objects, as a launcher does."""

from __future__ import annotations

import json
import math
import os
import signal

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from mlc.config import compose_config
from mlc.sweep.loop import SweepLoop
from mlc.sweep.plan import objectives, study_direction
from mlc.sweep.study import ATTR_ERROR, open_storage


def sweep(tmp_path, fail: str | None = None, extra: tuple[str, ...] = (), degenerate: tuple[int, ...] = (),
          sampler: dict | None = None) -> list[tuple[str, ...]]:
    """Run a sweep of 2 studies (negative ratio 0.5 and 0.9) of 3 trials each; the jobs it launched. The first
    job at negative ratio ``fail`` fails, its exception kept on its ``JobReturn`` as a launcher keeps it."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    cfg = compose_config(["hparams_search=lambda_vs_negative_ratio", "tracking=none", f"paths.outputs={tmp_path}",
                          "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5,0.9]", "hydra.sweeper.n_trials=3",
                          f"hydra.sweeper.storage={url}", f"hydra.sweep.dir={tmp_path}/sweep", *extra], hydra=True)
    jobs: list[tuple[str, ...]] = []

    def launch(overrides: list[tuple[str, ...]], initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for offset, job in enumerate(overrides):
            args = dict(o.split("=", 1) for o in job if not o.startswith("+hydra."))
            run_dir = tmp_path / "sweep" / str(initial_job_idx + offset)
            run_dir.mkdir(parents=True, exist_ok=True)
            result = {"degenerate": "same_set"} if len(jobs) in degenerate else {}  # as training records it
            # two validation metrics that pull λ apart (as F1 and F1-Neg do), at the run's best epoch (2)
            lam, seed = math.log10(float(args["loss.lam"])), int(args.get("seed", 0))
            history = [{"epoch": 1}, {"epoch": 2, "val/f1_macro": 0.8 - (lam + 1.5) ** 2 + 0.01 * seed,
                                      "val/f1_neg": 0.5 + 0.1 * lam - 0.02 * seed}]
            (run_dir / "result.json").write_text(json.dumps({**result, "best_epoch": 2, "history": history}))
            ret = JobReturn(overrides=list(job), status=JobStatus.COMPLETED)
            ret.return_value = float(args["dataset.negative_ratio"]) - (math.log10(float(args["loss.lam"])) + 1.5) ** 2
            if args["dataset.negative_ratio"] == fail and not any(f"dataset.negative_ratio={fail}" in j for j in jobs):
                ret.status, ret.return_value = JobStatus.FAILED, ValueError("the loss diverged\n(its traceback)")
            jobs.append(job)
            returns.append(ret)
        return returns

    sweeper = cfg.hydra.sweeper
    SweepLoop(cfg, launch, url=url, n_trials=sweeper.n_trials, direction=study_direction(cfg, None),
              sampler=sampler or sweeper.sampler, heartbeat_interval=sweeper.heartbeat_interval,
              grace_period=sweeper.grace_period, seeds_per_trial=sweeper.seeds_per_trial,
              objectives=objectives(cfg)).run(list(cfg.hydra.overrides.task))
    return jobs


def trials(tmp_path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Each study's trials, by its negative ratio."""
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=None, grace_period=None)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return {n.rpartition("=")[2].rstrip("]"): optuna.load_study(study_name=n, storage=storage).trials for n in names}


def test_the_loop_runs_each_study_to_n_trials_on_a_plain_launch_callable(tmp_path):
    jobs = sweep(tmp_path)
    assert len(jobs) == 6 and all(any(o.startswith("loss.lam=") for o in job) for job in jobs)
    studies = trials(tmp_path)
    assert sorted(studies) == ["0.5", "0.9"]
    assert all([t.state for t in ts] == [TrialState.COMPLETE] * 3 for ts in studies.values())
    lams = {ratio: [t.params["loss.lam"] for t in ts] for ratio, ts in studies.items()}
    assert len(set(lams["0.5"])) == 3 and lams["0.5"] == lams["0.9"]  # trial n's sampler is seeded by n
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert summary["outcome"]["code"] == 0 and summary["direction"] == "maximize"
    assert [(s["fixed"], s["status"], s["complete"]) for s in summary["studies"]] == [
        ({"dataset.negative_ratio": 0.5}, "ok", 3), ({"dataset.negative_ratio": 0.9}, "ok", 3)]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == [str(n) for n in range(6)]
    assert sweep(tmp_path) == []  # re-run: the studies are complete, nothing to launch


def test_a_failed_job_is_a_failed_trial_and_a_rerun_adds_the_missing_one(tmp_path):
    sweep(tmp_path, fail="0.9")
    studies = trials(tmp_path)
    assert [t.state for t in studies["0.5"]] == [TrialState.COMPLETE] * 3
    assert [t.state for t in studies["0.9"]] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert studies["0.9"][0].user_attrs[ATTR_ERROR] == "the loss diverged"  # the error's first line
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert summary["outcome"]["code"] == 1 and "did not reach n_trials" in summary["outcome"]["message"]
    assert [(s["status"], s["complete"], s["failed"]) for s in summary["studies"]] == [("ok", 3, 0),
                                                                                       ("incomplete", 2, 1)]
    assert len(sweep(tmp_path)) == 1  # the same command again runs only the missing trial
    assert [t.state for t in trials(tmp_path)["0.9"]][1:] == [TrialState.COMPLETE] * 3
    assert json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())["outcome"]["code"] == 0


def test_the_gaussian_process_sampler_finds_the_best_lambda_of_a_1d_search(tmp_path):
    """hydra/sweeper/sampler=gp (Optuna's GPSampler), seeded per trial like every sampler: after 3 random trials
    it tries both ends, then closes in on the objective's peak at λ = 10^-1.5 ≈ 0.032 ([0.001, 0.5], log)."""
    sweep(tmp_path, extra=("hydra/sweeper/sampler=gp", "hydra.sweeper.sampler.n_startup_trials=3",
                           "hydra.sweeper.n_trials=10", "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]"))
    (study,) = trials(tmp_path).values()
    assert [t.state for t in study] == [TrialState.COMPLETE] * 10
    distance = [abs(math.log10(t.params["loss.lam"]) + 1.5) for t in study]
    # its last proposals sit at the peak (the random start's nearest was 0.019 decades away; these 0.003-0.004)
    assert max(distance[-3:]) < 0.05 and max(distance[-3:]) < min(distance[:3])


def test_with_k_seeds_per_trial_the_summary_keeps_each_trials_per_seed_values(tmp_path):
    """What ``mlc.report.lambda_study`` needs for the set of λ not worse than λ*: every seed's value, and the
    trial's value is their mean."""
    jobs = sweep(tmp_path, extra=("hydra.sweeper.seeds_per_trial=2",
                                  "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]"), degenerate=(0,))
    assert len(jobs) == 6  # 3 trials × 2 seeds (each job's seed travels in its TrialSpec)
    (study,) = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())["studies"]
    assert len(study["trials"]) == 3
    for trial in study["trials"]:
        assert sorted(trial["seeds"]) == ["0", "1"]
        assert trial["value"] == sum(trial["seeds"].values()) / 2
    # the first trial's first seed (job 0) was degenerate: the trial is flagged, though its last run was not
    assert [t["degenerate"] for t in study["trials"]] == ["same_set", None, None]


class CtrlCOnTrialTwo(optuna.samplers.RandomSampler):
    """A sampler during whose proposal for trial #2 a real SIGINT (Ctrl-C) reaches the process: between two
    trials' runs, after Optuna has written trial #2 as RUNNING."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        if trial.number == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_ctrl_c_between_trials_writes_the_summary_and_the_same_command_finishes_the_study(tmp_path):
    interrupting = {"_target_": f"{__name__}.CtrlCOnTrialTwo", "seed": 0}
    extra = ("hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]",)
    assert len(sweep(tmp_path, extra=extra, sampler=interrupting)) == 2  # trials #0 and #1 ran, then Ctrl-C
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert summary["outcome"]["code"] == 130 and "interrupted between trials" in summary["outcome"]["message"]
    (study,) = trials(tmp_path).values()
    assert TrialState.RUNNING not in [t.state for t in study]  # the trial being proposed is not left running
    assert len(sweep(tmp_path, extra=extra)) == 1  # the same command runs only the missing trial
    assert json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())["outcome"]["code"] == 0


def test_a_multi_objective_search_keeps_each_studys_pareto_front(tmp_path):
    """hydra.sweeper.objectives: each trial is valued by its run's validation metrics at its best epoch (the
    mean over its K seeds); the summary marks the Pareto front, checked here against a plain dominance test."""
    jobs = sweep(tmp_path, extra=("hydra.sweeper.objectives=[val/f1_macro,val/f1_neg]", "hydra.sweeper.n_trials=5",
                                  "hydra.sweeper.seeds_per_trial=2",
                                  "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]"))
    assert len(jobs) == 10  # 5 trials × 2 seeds
    (study,) = trials(tmp_path).values()
    for t in study:  # the mean over seeds 0 and 1 of each objective, read from the runs' result.json
        lam = math.log10(t.params["loss.lam"])
        assert t.values == [0.8 - (lam + 1.5) ** 2 + 0.005, 0.5 + 0.1 * lam - 0.01]
        assert sorted(t.user_attrs["mlc.seed_values"]) == ["0", "1"] and t.intermediate_values == {}
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert summary["outcome"]["code"] == 0 and summary["objectives"] == [["val/f1_macro", "maximize"],
                                                                         ["val/f1_neg", "maximize"]]
    (s,) = summary["studies"]
    values = [t["values"] for t in s["trials"]]

    def dominated(v):
        return any(all(o >= x for o, x in zip(other, v, strict=True)) and other != v for other in values)

    assert [t["pareto"] for t in s["trials"]] == [not dominated(v) for v in values]
    assert any(t["pareto"] for t in s["trials"]) and s["best_value"] is None and s["best_params"] == {}
    text = (tmp_path / "sweep" / "sweep_summary.md").read_text()
    assert "Pareto front of val/f1_macro (maximize), val/f1_neg (maximize)" in text
    assert "Pareto front (val/f1_macro, val/f1_neg):" in text and (tmp_path / "sweep" / "sweep_summary.png").is_file()
    assert sweep(tmp_path, extra=("hydra.sweeper.objectives=[val/f1_macro,val/f1_neg]", "hydra.sweeper.n_trials=5",
                                  "hydra.sweeper.seeds_per_trial=2",
                                  "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]")) == []  # continues
