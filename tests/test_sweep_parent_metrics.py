"""What a sweep's MLflow parent run holds at the end: per study its best value, its finished trials' mean and std
(``study/<grid point>/best|mean|std|n``) and its best params. The sweep runs through mlc's own loop and parent-run
callback on a real SQLite MLflow store; its trials are a pure-Python objective (``tests/test_sweep_loop.py``'s
launch callable), so the numbers are the summary's and Optuna's, not a trained model's."""

from __future__ import annotations

import json
import statistics

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.tracking import MlflowClient

from mlc.config import compose_config
from mlc.sweep.callbacks import MultirunTracking
from mlc.sweep.loop import SweepLoop
from mlc.sweep.parent import study_results


def test_each_study_gets_its_best_mean_std_and_count():
    studies = [{"name": "s[dataset.negative_ratio=0.5]", "fixed": {"dataset.negative_ratio": 0.5},
                "best_params": {"loss.lam": 0.02}, "best_value": 0.9,
                "trials": [{"params": {}, "value": v} for v in (0.9, 0.7, 0.8)]},
               {"name": "s[dataset.negative_ratio=0.8]", "fixed": {"dataset.negative_ratio": 0.8},
                "best_params": {"loss.lam": 0.1}, "best_value": 0.6, "trials": [{"params": {}, "value": 0.6}]},
               {"name": "s[dataset.negative_ratio=0.9]", "fixed": {"dataset.negative_ratio": 0.9},
                "best_params": {}, "best_value": None, "trials": []}]  # every trial failed or was pruned
    params, metrics = study_results({"studies": studies})
    assert params == {"best/dataset.negative_ratio_0.5/loss.lam": 0.02, "best/dataset.negative_ratio_0.8/loss.lam": 0.1}
    assert metrics == pytest.approx({
        "study/dataset.negative_ratio_0.5/best": 0.9, "study/dataset.negative_ratio_0.5/mean": 0.8,
        "study/dataset.negative_ratio_0.5/std": 0.1, "study/dataset.negative_ratio_0.5/n": 3,
        "best/dataset.negative_ratio_0.5/value": 0.9,
        # one trial: a mean, no std (a sample std needs two)
        "study/dataset.negative_ratio_0.8/best": 0.6, "study/dataset.negative_ratio_0.8/mean": 0.6,
        "study/dataset.negative_ratio_0.8/n": 1, "best/dataset.negative_ratio_0.8/value": 0.6})


def test_names_are_legal_mlflow_keys_and_unique_per_study():
    from mlflow.utils.validation import validate_param_and_metric_name

    one = {"fixed": {}, "best_params": {"loss.lam": 0.1}, "best_value": 0.5,
           "trials": [{"value": 0.5}, {"value": 0.3}]}
    params, metrics = study_results({"studies": [{"name": "demo@abc", **one}]})  # no grid: the sweep's one study
    assert set(metrics) == {"study/best", "study/mean", "study/std", "study/n", "best/value"}
    assert set(params) == {"best/loss.lam"}
    # a grid value with characters MLflow refuses in a key; two phases with the same grid point
    odd = [{"name": "p@1[loss=a,b=c]", **one, "fixed": {"loss": "a,b=c/d"}},
           {"name": "p@2[dataset.negative_ratio=0.5]", **one, "fixed": {"dataset.negative_ratio": 0.5}},
           {"name": "p@3[dataset.negative_ratio=0.5]", **one, "fixed": {"dataset.negative_ratio": 0.5}}]
    params, metrics = study_results({"studies": odd})
    assert all(validate_param_and_metric_name(k) for k in [*params, *metrics]), [*params, *metrics]
    assert {k.rsplit("/", 1)[0] for k in metrics if k.startswith("study/")} == {
        "study/loss_a_b_c_d", "study/p_2_dataset.negative_ratio_0.5_", "study/p_3_dataset.negative_ratio_0.5_"}


def test_a_multi_objective_study_gets_each_objectives_best_mean_and_std_and_its_pareto_front_size():
    trials = [{"params": {}, "value": None, "values": v, "pareto": on}
              for v, on in (([0.6, 0.2], True), ([0.4, 0.5], True), ([0.5, 0.1], False))]
    summary = {"objectives": [["val/f1_macro", "maximize"], ["val/f1_neg", "maximize"]],
               "studies": [{"name": "m[dataset.negative_ratio=0.8]", "fixed": {"dataset.negative_ratio": 0.8},
                            "best_params": {}, "best_value": None, "trials": trials}]}
    params, metrics = study_results(summary)
    study = "study/dataset.negative_ratio_0.8"
    assert params == {} and metrics == pytest.approx({
        f"{study}/pareto": 2,
        f"{study}/val/f1_macro/best": 0.6, f"{study}/val/f1_macro/mean": 0.5, f"{study}/val/f1_macro/std": 0.1,
        f"{study}/val/f1_macro/n": 3, f"{study}/val/f1_neg/best": 0.5, f"{study}/val/f1_neg/mean": 0.8 / 3,
        f"{study}/val/f1_neg/std": statistics.stdev([0.2, 0.5, 0.1]), f"{study}/val/f1_neg/n": 3})


def test_the_parent_run_of_a_sweep_carries_each_studys_best_mean_and_std(tmp_path):
    """Two studies (negative ratio 0.5 and 0.9) of 3 trials, the parent run opened and closed by mlc's
    ``MultirunTracking`` callback around the loop, as Hydra calls it."""
    store, storage = f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/optuna.db"
    cfg = compose_config(["hparams_search=lambda_vs_negative_ratio", f"paths.outputs={tmp_path}",
                          f"tracking.tracking_uri={store}", "tracking.experiment=parent-metrics",
                          "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5,0.9]", "hydra.sweeper.n_trials=3",
                          f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={tmp_path}/sweep"], hydra=True)

    def launch(overrides: list[tuple[str, ...]], initial_job_idx: int) -> list[JobReturn]:
        """Each job's value from its λ and ratio (a peak at λ = 10^-1.5), as a launcher returns a trained one's."""
        returns = []
        for job in overrides:
            args = dict(o.split("=", 1) for o in job if "=" in o and not o.startswith("+hydra."))
            returns.append(JobReturn(overrides=list(job), status=JobStatus.COMPLETED))
            returns[-1].return_value = float(args["dataset.negative_ratio"]) - abs(float(args["loss.lam"]) - 0.03)
        return returns

    callback = MultirunTracking()
    callback.on_multirun_start(cfg)
    run_id = callback.tracker.run_id
    SweepLoop(cfg, launch, url=storage, n_trials=3, direction="maximize",
              sampler=cfg.hydra.sweeper.sampler).run(list(cfg.hydra.overrides.task))
    callback.on_multirun_end(cfg)
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    client = MlflowClient(store)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlc.kind"] == "sweep"
    for study in summary["studies"]:
        label = f"dataset.negative_ratio_{study['fixed']['dataset.negative_ratio']}"
        values = [t.value for t in optuna.load_study(study_name=study["name"], storage=storage).trials]
        assert len(values) == 3 and [t["value"] for t in study["trials"]] == values
        got = {k.rsplit("/", 1)[1]: v for k, v in parent.data.metrics.items() if k.startswith(f"study/{label}/")}
        assert got == pytest.approx({"best": max(values), "mean": statistics.fmean(values),
                                     "std": statistics.stdev(values), "n": 3}), got
        assert float(parent.data.params[f"best/{label}/loss.lam"]) == study["best_params"]["loss.lam"]
        assert parent.data.metrics[f"best/{label}/value"] == study["best_value"] == max(values)
    # the summary files are the parent's artifacts, as before
    assert {"sweep_summary.json", "sweep_summary.md"} <= {a.path for a in client.list_artifacts(run_id)}
