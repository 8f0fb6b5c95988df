"""Every ``mlc reproduce`` preset, run end to end in its tiny form (1 epoch, small data, the first and last
value of each grid list): the sweep, ``mlc report`` and RESULTS.md, so that no preset can rot."""

from __future__ import annotations

import re

import pytest

from mlc.reproduce import PRESETS, run

pytestmark = pytest.mark.slow


def groups_in(results: str) -> list[str]:
    """The first column of the results table (the groups), in order."""
    table = results.split("## Results", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    return [row.split("|")[1].strip() for row in table.splitlines()[2:]]


@pytest.mark.parametrize("name", ["anyclass_table", "lambda_ablation", "single_positive_table"])
def test_the_tiny_form_of_each_preset_runs_and_is_reported(name, tmp_path):
    check_tiny_preset(name, tmp_path)


def check_tiny_preset(name, tmp_path):
    results = run(name, [], tiny=True, output=tmp_path / "exp", outputs=tmp_path / "out", say=lambda *a, **k: None)
    text = results.read_text()
    assert f"mlc reproduce {name} --tiny" in text and "git commit" in text
    groups = groups_in(text)
    expected = {"anyclass_table": 4, "lambda_ablation": 4, "longtail_table": 3, "single_positive_table": 2}[name]
    assert len(groups) == expected, groups
    assert re.search(r"\| 2 \| ", text)  # two seeds per group
    baseline = PRESETS[name].baseline
    assert "Paired per-seed differences" in text
    assert f"={baseline}`" in text if ":" not in baseline else "`any_focal` → `cb_focal`" in text
    if name == "lambda_ablation":
        assert "Best λ per negative ratio" in text and "lambda_vs_ratio.png" in text
    if name == "longtail_table":
        assert "db_focal" in groups  # the second phase (class-aware sampling) is in the same report
