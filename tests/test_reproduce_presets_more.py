"""The other ``mlc reproduce`` presets in their tiny form (two files, so that the two test processes share them),
and a re-run that continues instead of repeating."""

from __future__ import annotations

import json

import pytest

from mlc.cli.reproduce import READING_END, READING_START, run
from tests.test_reproduce_presets import check_tiny_preset, groups_in

pytestmark = pytest.mark.slow


def test_the_tiny_form_of_the_longtail_preset_runs_both_phases(tmp_path, data_cache):
    check_tiny_preset("longtail_table", tmp_path, data_cache)


def test_rerunning_a_preset_continues_it_and_keeps_the_reading(tmp_path, capfd, data_cache):
    kwargs = dict(tiny=True, output=tmp_path / "exp", outputs=tmp_path / "out", say=lambda *a, **k: None)
    cache = [f"paths.cache={data_cache}"]  # the session's digits data (in no study's name): generated once
    results = run("f1_surrogates_table", cache, **kwargs)
    first = results.read_text()
    results.write_text(first.replace("_Not written yet._", "Soft F1 held up."))
    capfd.readouterr()
    run("f1_surrogates_table", cache, **kwargs)
    out = capfd.readouterr().out
    assert out.count("nothing to run") == 4 and "Launching" not in out  # every (loss, seed) study was done
    text = results.read_text()
    assert f"{READING_START}\nSoft F1 held up.\n{READING_END}" in text
    assert groups_in(text) == ["bce", "sigmoid_f1"]


def test_the_tiny_lambda_study_searches_each_ratio_then_reruns_its_best_lambda_over_seeds(tmp_path, data_cache):
    kwargs = dict(tiny=True, output=tmp_path / "exp", outputs=tmp_path / "out", say=lambda *a, **k: None)
    results = run("lambda_vs_negative_ratio_study", [f"paths.cache={data_cache}"], **kwargs)
    text = results.read_text()
    study = (tmp_path / "exp" / "study" / "lambda_study.csv").read_text().splitlines()
    assert study[0].startswith("negative_ratio,trials,best_lambda,search_val/f1_macro_hm_neg,near_best_low")
    rows = [line.split(",") for line in study[1:]]
    assert [(r[0], r[1], r[9]) for r in rows] == [("0.2", "2", "2"), ("0.95", "2", "2")]  # 2 trials, 2 seeds each
    summary = json.loads(next((tmp_path / "out" / "reproduce").glob("*@*/sweep_summary.json")).read_text())
    best = {s["fixed"]["dataset.negative_ratio"]: s["best_params"]["loss.lam"] for s in summary["studies"]}
    assert {float(r[0]): float(r[2]) for r in rows} == best  # the re-runs are of the search's own best λ
    assert all(r[4] and r[5] for r in rows)  # two seeds per trial: the λ not worse than λ* at every ratio
    assert "## Best λ against the negative ratio" in text and "**Relation**:" in text
    assert "study/best_lambda_vs_ratio.png" in text and "search/lambda_vs_ratio.png" in text
    assert (tmp_path / "exp" / "search" / "lambda_vs_ratio.png").is_file()
    assert groups_in(text.replace("## Re-runs over seeds", "## Results")) == ["0.2", "0.95"]
    assert "each trial scored over seeds 0, 1), then each study's best parameters re-run at seeds 2, 3" in text
