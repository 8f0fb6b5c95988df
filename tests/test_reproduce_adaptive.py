"""``mlc reproduce NAME --until-decided``: seeds in planned looks, on real runs, re-run safely; its input checks.

The stopping rule's error rate is shown by simulation in tests/test_sequential.py; here the command itself runs.
"""

from __future__ import annotations

import re

import pytest

from mlc.cli.reproduce import Adaptive, main, run
from tests.conftest import mlflow_runs
from tests.test_reproduce_presets import groups_in


def training_runs(outputs, experiment):
    return [r for r in mlflow_runs(outputs, experiment) if r.data.tags.get("mlc.kind") == "run"]


@pytest.mark.slow
def test_until_decided_runs_planned_looks_and_a_rerun_adds_nothing(tmp_path, data_cache):
    said: list[str] = []
    adaptive = Adaptive(max_seeds=3, per_round=1)
    cache = [f"paths.cache={data_cache}"]  # the session's digits data (in no study's name): generated once
    results = run("single_positive_table", cache, tiny=True, output=tmp_path / "exp", outputs=tmp_path / "out",
                  say=lambda *a, **k: said.append(" ".join(map(str, a))), adaptive=adaptive)
    text = results.read_text()
    assert "mlc reproduce single_positive_table --tiny --until-decided --max-seeds=3 --seeds-per-round=1" in text
    assert "Planned looks at 2, 3 seeds, each at α/2 = 0.025 (97.5% intervals" in text
    looks = re.findall(r"^\| (\d) \| (\d) \(([\d, ]+)\) \| (\d+) \| (\d+) of (\d+) \|$", text, re.M)
    assert looks and looks[0][:3] == ("1", "2", "0, 2")  # the tiny form's seeds come first
    runs = training_runs(tmp_path / "out", "single_positive_table")
    last = looks[-1]
    assert len(runs) == int(last[3]) == 2 * int(last[1])  # two groups × the seeds of the last look, nothing more
    assert {r.data.tags["mlc.seed"] for r in runs} == {s.strip() for s in last[2].split(",")}
    stopped_early = len(looks) == 1
    assert stopped_early == (last[4] == last[5])  # it stops early exactly when everything is decided
    assert said[0].startswith("reproduce single_positive_table: look 1/2: 2 seeds")
    # the final report is over every seed run, at the per-look level, with the preset's groups and pairs
    report = (tmp_path / "exp" / "report" / "differences.md").read_text()
    assert "[97.5% CI]" in report
    assert groups_in(text) == ["an", "gr"] and "Paired per-seed differences to `loss=an`" in text
    assert f"Runs used: {last[3]}; the fixed design of 3 seeds runs 6." in text
    # the same command again replays the looks over the stored runs: the same decisions, no new run
    again = run("single_positive_table", cache, tiny=True, output=tmp_path / "exp", outputs=tmp_path / "out",
                say=lambda *a, **k: None, adaptive=adaptive).read_text()
    assert len(training_runs(tmp_path / "out", "single_positive_table")) == len(runs)
    section = r"## Adaptive seeds.*?(?=\n## )"
    assert re.search(section, again, re.S).group(0) == re.search(section, text, re.S).group(0)


@pytest.mark.parametrize(("argv", "says"), [
    (["lambda_vs_negative_ratio_study", "--until-decided"], "has no paired comparisons to decide"),
    (["anyclass_table", "--until-decided", "--max-seeds", "2"], "--max-seeds=2 is below the preset's 3 seeds"),
    (["anyclass_table", "--until-decided", "--seeds-per-round", "0"], "--seeds-per-round=0: must be at least 1"),
    (["anyclass_table", "--until-decided", "--alpha", "0.7"], "--alpha=0.7: must lie in (0, 0.5)"),
    (["anyclass_table", "--max-seeds", "6"], "go with --until-decided"),
    # overrides may come after the options (argparse's intermixed parsing): the check still runs first
    (["anyclass_table", "--until-decided", "--max-seeds", "2", "trainer.max_epochs=3"], "--max-seeds=2 is below"),
])
def test_a_design_that_cannot_run_is_one_line_before_any_run(argv, says, tmp_path, capsys):
    assert main([*argv, "--outputs", str(tmp_path / "out"), "--output", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "exp").exists()
