"""``python -m mlc.report`` against a real MLflow store (SQLite in a temporary folder, no mocks).

The store is filled with synthetic runs whose values the tests know, so every number the report
prints is checked against an independent computation (numpy, scipy) on the logged values:

- digits: losses cb_bce / any_bce × backbones cnn_small / resnet18 × seeds 0, 1, 2. On cnn_small
  any_bce is cb_bce + 0.05 (tiny noise): clearly better; on resnet18 it is cb_bce + seed noise of
  about ±0.02: no difference. Per-epoch val/f2_macro and train_prob/* histories, scores files
  for the cnn_small seed-0 runs. Plus runs that must not count: a FAILED run, a sweep parent, a
  run without test/f1_neg (a note), and report runs made by the tests themselves.
- grid: any_bce at λ ∈ {0.01, 0.05, 0.2} × negative ratio ∈ {0.5, 0.9} × seeds 0, 1, in one sweep
  directory, built so that the best λ is 0.05 at ratio 0.5 and 0.2 at ratio 0.9.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from mlc.report import main
from mlc.report.stats import (  # (INCONCLUSIVE and NO_INTERVAL come from mlc.report.verdicts)
    INCONCLUSIVE,
    NO_INTERVAL,
    Cell,
    GroupSummary,
    best_rows,
    paired_difference,
)
from mlc.report.tables import latex_escape
from tests.conftest import run_module

ROOT = Path(__file__).resolve().parents[1]
LOSSES, BACKBONES, SEEDS = ("cb_bce", "any_bce"), ("cnn_small", "resnet18"), (0, 1, 2)
METRICS = ("test/f1_macro", "test/f2_macro", "test/map", "test/f1_neg")
CLASSES = ["zero", "one", "two", "three"]
DIGITS = "tags.`mlc.dataset` = 'digits'"
GRID_LAMS, GRID_RATIOS, GRID_OPT = (0.01, 0.05, 0.2), (0.5, 0.9), {0.5: 0.05, 0.9: 0.2}


def _log_run(client, exp_id, name, tags, params, metrics, histories=None, status="FINISHED"):
    from mlflow.entities import Metric, Param

    run = client.create_run(exp_id, run_name=name, tags=tags)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for key, values in (histories or {}).items():
        items += [Metric(key, float(v), now + step, step) for step, v in enumerate(values, start=1)]
    client.log_batch(run.info.run_id, metrics=items, params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from mlc.scores import write_scores

    base = tmp_path_factory.mktemp("report")
    outputs = base / "outputs"
    outputs.mkdir()
    uri = f"sqlite:///{outputs}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("mlc", artifact_location=(outputs / "mlartifacts").as_uri())
    client.create_experiment("other", artifact_location=(outputs / "mlartifacts-other").as_uri())
    rng = np.random.default_rng(0)
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    ids: dict[tuple[str, str, int], str] = {}
    noise = {"cnn_small": (0.002, -0.003, 0.001), "resnet18": (0.02, -0.025, 0.004)}
    shift = {"cnn_small": 0.05, "resnet18": 0.0}
    for backbone in BACKBONES:
        low = 0.55 if backbone == "cnn_small" else 0.4  # cnn_small is the better backbone
        base_values = {m: rng.uniform(low, low + 0.1, size=3) for m in METRICS}
        base_loss = rng.uniform(0.2, 0.3, size=3)
        for loss in LOSSES:
            group = values.setdefault((loss, backbone), {})
            for i, seed in enumerate(SEEDS):
                metrics = {}
                for m in METRICS:
                    v = base_values[m][i]
                    if loss == "any_bce" and m == "test/f1_macro":
                        v += shift[backbone] + noise[backbone][i]
                    elif loss == "any_bce":
                        v += rng.normal(0, 0.01)
                    metrics[m] = v
                metrics["test/loss"] = base_loss[i] - (0.05 if loss == "any_bce" else 0.0)
                for k, v in metrics.items():
                    group.setdefault(k, []).append(v)
                tags = {"mlc.kind": "run", "mlc.loss": loss, "mlc.backbone": backbone, "mlc.dataset": "digits",
                        "mlc.negative_ratio": "0.5", "mlc.seed": str(seed), "mlc.monitor": "val/f2_macro"}
                if loss == "any_bce":
                    tags["mlc.lam"] = "0.02"
                histories = {"val/f2_macro": list(np.linspace(0.2, metrics["test/f2_macro"], 5))}
                if backbone == "cnn_small":  # train_prob: all tiers for any_bce, no tail for cb_bce
                    tiers = ("head", "medium", "tail") if loss == "any_bce" else ("head", "medium")
                    for tier in tiers:
                        histories[f"train_prob/pos_{tier}"] = list(np.linspace(0.3, 0.8, 5))
                        histories[f"train_prob/neg_{tier}"] = list(np.linspace(0.4, 0.05, 5))
                ids[loss, backbone, seed] = _log_run(
                    client, exp_id, f"{loss}-{backbone}-{seed}", tags,
                    {"seed": seed, "backbone.name": backbone, "trainer.monitor": "val/f2_macro"}, metrics, histories)
    # scores files of the two cnn_small seed-0 runs (the report's default representatives of their groups)
    for loss in LOSSES:
        labels = rng.random((120, len(CLASSES))) < 0.3
        scores = np.clip(labels * 0.5 + rng.random(labels.shape) * 0.6, 0, 1)
        path = write_scores(base / "scores" / loss / "test.csv", [f"img{i}" for i in range(120)], scores, labels,
                            CLASSES, {"split": "test"})
        run_id = ids[loss, "cnn_small", 0]
        client.log_artifact(run_id, str(path), "scores")
        client.log_artifact(run_id, str(path) + ".json", "scores")
    # runs that must stay out of the tables
    common = {"mlc.loss": "cb_bce", "mlc.backbone": "cnn_small", "mlc.dataset": "digits", "mlc.seed": "7"}
    bad = dict.fromkeys([*METRICS, "test/loss"], 0.01)
    failed_id = _log_run(client, exp_id, "failed", {"mlc.kind": "run", **common}, {"seed": 7}, bad, status="FAILED")
    sweep_dir = (base / "multirun" / "grid").resolve()
    sweep_dir.mkdir(parents=True)
    _log_run(client, exp_id, "sweep parent", {"mlc.kind": "sweep", **common, "mlc.sweep_dir": str(sweep_dir)}, {},
             dict.fromkeys(METRICS, 0.99))
    _log_run(client, exp_id, "partial", {"mlc.kind": "run", **common, "mlc.seed": "8"}, {"seed": 8},
             {m: 0.5 for m in METRICS if m != "test/f1_neg"})
    # the λ × ratio grid (λ and seed only as params, the ratio as a tag, the monitor as a param)
    grid: dict[tuple[float, float], list[float]] = {}
    for ratio in GRID_RATIOS:
        for lam in GRID_LAMS:
            for seed in (0, 1):
                f1 = 0.7 - 0.1 * (math.log10(lam) - math.log10(GRID_OPT[ratio])) ** 2 + 0.003 * (seed - 0.5) \
                    - 0.2 * (ratio - 0.5)
                grid.setdefault((ratio, lam), []).append(f1)
                tags = {"mlc.kind": "run", "mlc.loss": "any_bce", "mlc.backbone": "cnn_small", "mlc.dataset": "grid",
                        "mlc.negative_ratio": str(ratio), "mlc.sweep_dir": str(sweep_dir)}
                _log_run(client, exp_id, f"grid-{ratio}-{lam}-{seed}", tags,
                         {"loss.lam": lam, "dataset.negative_ratio": ratio, "seed": seed,
                          "trainer.monitor": "val/f1_macro"},
                         {"test/f1_macro": f1, "test/f2_macro": f1 - 0.05},
                         {"val/f1_macro": list(np.linspace(0.3, f1, 4))})
    return SimpleNamespace(uri=uri, outputs=outputs, client=client, exp_id=exp_id, values=values, ids=ids,
                           failed_id=failed_id, sweep_dir=sweep_dir, grid=grid, base=base)


def _run(store, out: Path, *args: str) -> int:
    return main(["--tracking-uri", store.uri, *args, "--output", str(out)])


@pytest.fixture(scope="module")
def digits_report(store, tmp_path_factory):
    """One report of the digits runs with a baseline, shared by the checks below (it is the slow part)."""
    out = tmp_path_factory.mktemp("digits-report") / "report"
    rc = _run(store, out, "--filter", DIGITS, "--baseline", "cb_bce", "--no-log",
              "--metrics", ",".join([*METRICS, "test/loss"]))
    assert rc == 0
    return out


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _md_rows(path: Path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_table_is_mean_and_sample_std_over_seeds(store, digits_report):
    rows = {(r["loss"], r["backbone"]): r for r in _csv_rows(digits_report / "table.csv")}
    assert set(rows) == {(loss, b) for loss in LOSSES for b in BACKBONES}  # no FAILED, sweep or partial group
    for key, row in rows.items():
        assert row["n"] == "3" and row["seeds"] == "0;1;2"  # the FAILED seed-7 and partial seed-8 runs are out
        for m in [*METRICS, "test/loss"]:
            logged = np.array(store.values[key][m])
            assert float(row[f"{m}_mean"]) == pytest.approx(np.mean(logged), abs=1e-12)
            assert float(row[f"{m}_std"]) == pytest.approx(np.std(logged, ddof=1), abs=1e-12)

    md = _md_rows(digits_report / "table.md")
    header = [c.strip() for c in (digits_report / "table.md").read_text().splitlines()[0].strip("|").split("|")]
    assert header == ["loss", "backbone", "n", *METRICS, "test/loss"]
    assert [tuple(r[:2]) for r in md] == [("any_bce", "cnn_small"), ("any_bce", "resnet18"), ("cb_bce", "cnn_small"),
                                         ("cb_bce", "resnet18")]
    for j, m in enumerate([*METRICS, "test/loss"]):
        means = {tuple(r[:2]): round(np.mean(store.values[tuple(r[:2])][m]), 4) for r in md}
        best = (min if m == "test/loss" else max)(means.values())
        for r in md:
            mean, std = np.mean(store.values[tuple(r[:2])][m]), np.std(store.values[tuple(r[:2])][m], ddof=1)
            text = f"{mean:.4f} ± {std:.4f}"
            assert r[3 + j] == (f"**{text}**" if means[tuple(r[:2])] == best else text)
    assert md[0][3].startswith("**")  # any_bce on cnn_small has the best f1_macro by 0.05

    tex = (digits_report / "table.tex").read_text()
    assert "\\begin{tabular}{llrrrrrr}" in tex and tex.rstrip().endswith("\\end{tabular}")
    assert "any\\_bce & cnn\\_small & 3 & \\textbf{" in tex and "$\\pm$" in tex
    body = [line for line in tex.splitlines() if line.endswith("\\\\")]
    assert len(body) == 5 and all(line.count("&") == 7 for line in body)


def test_paired_differences_and_their_intervals(store, digits_report):
    rows = {(r["loss"], r["backbone"]): r for r in _csv_rows(digits_report / "differences.csv")}
    assert set(rows) == {("any_bce", "cnn_small"), ("any_bce", "resnet18")}
    for (loss, backbone), row in rows.items():
        assert (row["baseline_loss"], row["baseline_backbone"], row["n_pairs"]) == ("cb_bce", backbone, "3")
        for m in [*METRICS, "test/loss"]:
            d = np.array(store.values[loss, backbone][m]) - np.array(store.values["cb_bce", backbone][m])
            half = sps.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
            assert float(row[f"{m}_diff_mean"]) == pytest.approx(d.mean(), abs=1e-12)
            assert float(row[f"{m}_ci_low"]) == pytest.approx(d.mean() - half, abs=1e-12)
            assert float(row[f"{m}_ci_high"]) == pytest.approx(d.mean() + half, abs=1e-12)
    assert rows["any_bce", "cnn_small"]["test/f1_macro_verdict"] == "better"  # +0.05, CI far from 0
    assert rows["any_bce", "resnet18"]["test/f1_macro_verdict"] == INCONCLUSIVE  # ±0.02 seed noise
    assert float(rows["any_bce", "resnet18"]["test/f1_macro_ci_low"]) < 0 < float(
        rows["any_bce", "resnet18"]["test/f1_macro_ci_high"])
    # test/loss is 0.05 lower for any_bce in every seed: lower is better for a loss
    assert rows["any_bce", "cnn_small"]["test/loss_verdict"] == "better"

    md = _md_rows(digits_report / "differences.md")
    resnet = next(r for r in md if r[1] == "resnet18")
    assert resnet[4] == INCONCLUSIVE and "better" not in resnet[3:5]
    d = np.array(store.values["any_bce", "cnn_small"]["test/f1_macro"]) - np.array(
        store.values["cb_bce", "cnn_small"]["test/f1_macro"])
    half = sps.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    cnn = next(r for r in md if r[1] == "cnn_small")
    assert cnn[2:5] == ["3", f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}]", "better"]
    assert "\\begin{tabular}" in (digits_report / "differences.tex").read_text()


def test_named_baseline_pairs_compare_only_those_pairs(store, tmp_path):
    out = tmp_path / "pairs"
    assert _run(store, out, "--filter", DIGITS, "--baseline", "cb_bce:any_bce", "--no-log",
                "--metrics", "test/f1_macro") == 0
    rows = {(r["loss"], r["backbone"]): r for r in _csv_rows(out / "differences.csv")}
    assert set(rows) == {("cb_bce", "cnn_small"), ("cb_bce", "resnet18")}  # the named pair only, reversed here
    for (_, backbone), row in rows.items():
        assert row["baseline_loss"] == "any_bce"
        d = np.array(store.values["cb_bce", backbone]["test/f1_macro"]) - np.array(
            store.values["any_bce", backbone]["test/f1_macro"])
        assert float(row["test/f1_macro_diff_mean"]) == pytest.approx(d.mean(), abs=1e-12)
    assert rows["cb_bce", "cnn_small"]["test/f1_macro_verdict"] == "worse"
    assert "## Differences to loss: cb_bce → any_bce" in (out / "report.md").read_text()


def test_figures_and_index(store, digits_report):
    from matplotlib.image import imread

    for name in ("learning_curves.png", "probabilities.png", "pr_curves.png", "per_class_ap.png"):
        image = imread(digits_report / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not (digits_report / "lambda_vs_ratio.png").exists()  # one λ only
    index = (digits_report / "report.md").read_text()
    for name in ("learning_curves.png", "probabilities.png", "pr_curves.png", "per_class_ap.png"):
        assert f"]({name})" in index
    assert store.uri in index and "--baseline cb_bce" in index
    assert (digits_report / "table.md").read_text() in index
    assert (digits_report / "differences.md").read_text() in index
    assert "1 run(s) left out: no metric 'test/f1_neg'" in index  # the partial run
    assert index.count("no scores/test.csv artifact") == 2  # the resnet18 seed-0 runs
    assert "lambda_vs_ratio.png not drawn" in index


def test_single_seed_has_no_std_and_no_interval(store, tmp_path):
    out = tmp_path / "r"
    chosen = store.ids["any_bce", "cnn_small", 0]
    assert _run(store, out, "--filter", f"{DIGITS} and tags.`mlc.seed` = '0'", "--baseline", "cb_bce",
                "--runs", chosen, "--no-log") == 0
    assert (out / "pr_curves.png").is_file() and "no scores/test.csv" not in (out / "report.md").read_text()
    md = _md_rows(out / "table.md")
    assert all(r[2] == "1" and r[3].strip("*").endswith("± —") for r in md)
    assert {r["test/f1_macro_std"] for r in _csv_rows(out / "table.csv")} == {""}
    diffs = _csv_rows(out / "differences.csv")
    assert {r["test/f1_macro_verdict"] for r in diffs} == {NO_INTERVAL}
    assert {r["test/f1_macro_ci_low"] for r in diffs} == {""}


def test_all_statuses_brings_in_the_failed_run(store, tmp_path):
    out = tmp_path / "r"
    assert _run(store, out, "--filter", DIGITS, "--all-statuses", "--metrics", "test/f1_macro", "--no-log") == 0
    rows = {(r["loss"], r["backbone"]): r for r in _csv_rows(out / "table.csv")}
    assert rows["cb_bce", "cnn_small"]["n"] == "5"  # + the FAILED seed 7 and the partial seed 8


def test_lambda_grid_of_a_sweep(store, tmp_path, capsys):
    from matplotlib.image import imread

    out = tmp_path / "r"
    assert _run(store, out, "--sweep", str(store.sweep_dir), "--group-by", "loss", "--metrics",
                "test/f1_macro,test/f2_macro", "--no-log") == 0
    best = _csv_rows(out / "best_lambda.csv")
    assert [(float(r["negative_ratio"]), float(r["best_lambda"])) for r in best] == [(0.5, 0.05), (0.9, 0.2)]
    for r in best:
        ratio = float(r["negative_ratio"])
        means = {lam: np.mean(store.grid[ratio, lam]) for lam in GRID_LAMS}
        lam = max(means, key=means.get)
        assert float(r["best_lambda"]) == lam and r["n"] == "2"
        assert float(r["test/f1_macro_mean"]) == pytest.approx(means[lam], abs=1e-12)
        assert float(r["test/f1_macro_std"]) == pytest.approx(np.std(store.grid[ratio, lam], ddof=1), abs=1e-12)
    assert imread(out / "lambda_vs_ratio.png").ndim == 3
    assert imread(out / "learning_curves.png").ndim == 3  # monitor from the trainer.monitor param
    md = (out / "best_lambda.md").read_text()
    assert "| loss | negative_ratio | best λ | test/f1_macro | n |" in md and "| any_bce | 0.5 | 0.05 |" in md
    index = (out / "report.md").read_text()
    assert "](lambda_vs_ratio.png)" in index and md in index
    assert "12 runs for 2 seed(s)" in index and "lam, negative_ratio" in index  # the grouping hides λ and the ratio
    rows = _csv_rows(out / "table.csv")
    assert len(rows) == 1 and rows[0]["n"] == "2"  # not the sweep parent (kind=sweep, same sweep dir)
    printed = capsys.readouterr().out.splitlines()
    assert all(line.startswith("wrote ") for line in printed) and len(printed) == len(list(out.iterdir()))


def test_report_run_is_logged_and_never_counted(store, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["--outputs", str(store.outputs), "--filter", DIGITS, "--output", str(out)]) == 0
    run_id = re.search(r"report run (\w+)", capsys.readouterr().out).group(1)
    run = store.client.get_run(run_id)
    assert run.data.tags["mlc.kind"] == "report" and run.info.status == "FINISHED"
    assert run.info.experiment_id == store.exp_id and run.info.run_name.startswith("report loss=any_bce,cb_bce ")
    logged = {a.path for a in store.client.list_artifacts(run_id)}
    assert logged == {p.name for p in out.iterdir()} and {"report.md", "table.md", "pr_curves.png"} <= logged
    # a second report (into the same directory) sees the same runs: report runs are not training runs
    assert main(["--outputs", str(store.outputs), "--filter", DIGITS, "--no-log", "--output", str(out)]) == 0
    assert {r["n"] for r in _csv_rows(out / "table.csv")} == {"3"}


@pytest.mark.parametrize("args, expected", [
    (["--experiment", "nope"], "--experiment='nope': no such experiment in the store; it has: Default, mlc, other"),
    (["--filter", "tags.`mlc.dataset` = 'imagenet'"], "no training run (mlc.kind=run, FINISHED)"),
    (["--filter", "tags.x ==== 1"], "--filter='tags.x ==== 1': MLflow rejected the search"),
    (["--metrics", "test/f1_macro,test/f3_macro"], "--metrics: no run has the metric 'test/f3_macro'"),
    (["--group-by", "loss,optimizer"], "--group-by: no run has 'optimizer'"),
    (["--baseline", "focal"], "--baseline='focal': no run has loss='focal'; values of loss: any_bce, cb_bce"),
    (["--baseline", "any_bce:focal"], "--baseline='any_bce:focal': no run has loss='focal'; values of loss:"),
    (["--baseline", "any_bce:any_bce"], "'any_bce:any_bce' is not a pair 'value:baseline' of two different values"),
    (["--baseline", "any_bce:cb_bce,any_bce:x"], "'any_bce:x' is not a pair 'value:baseline' of two different"),
    (["--runs", "0123456789abcdef"], "--runs: no run '0123456789abcdef'"),
    (["--sweep", "/nowhere"], "--sweep='/nowhere': no matching run has mlc.sweep_dir=/nowhere"),
    (["--group-by", ","], "--group-by=',': expected a comma-separated list"),
])
def test_bad_input_is_one_line_and_writes_nothing(store, tmp_path, capsys, args, expected):
    before = len(store.client.search_runs([store.exp_id], max_results=1000))
    out = tmp_path / "r"
    assert _run(store, out, *args, "--no-log") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert expected in captured.err
    assert not out.exists()
    assert len(store.client.search_runs([store.exp_id], max_results=1000)) == before


def test_bad_store_and_output(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLC_OUTPUTS", str(tmp_path / "none"))
    missing = tmp_path / "none" / "mlflow.db"
    assert main(["--tracking-uri", f"sqlite:///{missing}", "--output", str(tmp_path / "r")]) == 2
    assert main(["--output", str(tmp_path / "r")]) == 2  # the store of $MLC_OUTPUTS
    assert main(["--tracking-uri", store.uri]) == 2  # no --output
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    assert _run(store, a_file, "--filter", DIGITS) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert _run(store, other, "--filter", DIGITS) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)
    assert "no such database file" in err[0]
    assert err[1].startswith("error: --outputs (from $MLC_OUTPUTS)=") and "no such database file" in err[1]
    assert "--output" in err[2] and "is a file" in err[3] and "without a report.md" in err[4]
    assert not missing.exists() and not missing.parent.exists()  # no empty new store
    assert a_file.read_text() == "keep" and [p.name for p in other.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "r").exists()


def test_cli_process_error_and_help(tmp_path, capsys):
    done = run_module("mlc.report", ["--tracking-uri", f"sqlite:///{tmp_path}/x.db", "--output", str(tmp_path / "r")],
                      dict(os.environ), timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --tracking-uri=")
    assert not (tmp_path / "x.db").exists()
    assert main(["--help"]) == 0 and "--baseline" in capsys.readouterr().out


def test_paired_difference_by_hand():
    base = {"0": 0.60, "1": 0.62, "2": 0.58, "3": 0.61}
    better = {s: v + 0.03 + e for (s, v), e in zip(base.items(), (0.001, -0.002, 0.0, 0.001), strict=True)}
    d = np.array([better[s] - base[s] for s in base])
    half = sps.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    got = paired_difference(better, base)
    assert (got.n, got.verdict) == (4, "better")
    assert (got.mean, got.low, got.high) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))
    assert paired_difference({s: v - 0.03 for s, v in base.items()}, base).verdict == "worse"
    noisy = {"0": 0.63, "1": 0.60, "2": 0.59, "3": 0.62}
    assert paired_difference(noisy, base).verdict == INCONCLUSIVE
    assert paired_difference({s: v - 0.03 for s, v in base.items()}, base, lower_better=True).verdict == "better"
    only_one = paired_difference({"0": 0.7, "9": 0.1}, base)  # seeds are paired: "9" has no partner
    assert (only_one.n, only_one.verdict, only_one.low) == (1, NO_INTERVAL, None)
    assert only_one.mean == pytest.approx(0.1)
    assert paired_difference({"5": 0.7}, base).n == 0


def test_best_rows_and_latex_escape():
    def summary(mean):
        return GroupSummary(("x",), [], ["0"], {"val/f1": Cell(mean, None, 1), "val/loss": Cell(mean, None, 1)})

    rows = [summary(0.5), summary(0.70001), summary(0.7), summary(0.2)]
    assert best_rows(rows, "val/f1") == {1, 2}  # equal at 4 decimals
    assert best_rows(rows, "val/loss") == {3}
    assert latex_escape("cb_bce 50% & ±—") == r"cb\_bce 50\% \& $\pm$---"
