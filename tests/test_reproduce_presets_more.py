"""The other ``mlc reproduce`` presets in their tiny form (two files, so that the two test processes share them),
and a re-run that continues instead of repeating."""

from __future__ import annotations

import pytest

from mlc.reproduce import READING_END, READING_START, run
from tests.test_reproduce_presets import check_tiny_preset, groups_in

pytestmark = pytest.mark.slow


def test_the_tiny_form_of_the_longtail_preset_runs_both_phases(tmp_path):
    check_tiny_preset("longtail_table", tmp_path)


def test_rerunning_a_preset_continues_it_and_keeps_the_reading(tmp_path, capfd):
    kwargs = dict(tiny=True, output=tmp_path / "exp", outputs=tmp_path / "out", say=lambda *a, **k: None)
    results = run("f1_surrogates_table", [], **kwargs)
    first = results.read_text()
    results.write_text(first.replace("_Not written yet._", "Soft F1 held up."))
    capfd.readouterr()
    run("f1_surrogates_table", [], **kwargs)
    out = capfd.readouterr().out
    assert out.count("nothing to run") == 4 and "Launching" not in out  # every (loss, seed) study was done
    text = results.read_text()
    assert f"{READING_START}\nSoft F1 held up.\n{READING_END}" in text
    assert groups_in(text) == ["bce", "sigmoid_f1"]
