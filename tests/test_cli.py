"""The ``mlc`` command: every subcommand is listed with one line, dispatches to its module, and keeps its checks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from mlc.cli import COMMANDS, main, usage
from tests.conftest import cli_env, run_module


def test_help_lists_every_command_with_one_line_and_each_module_exists(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text == usage() + "\n"
    for name, (module, _, line) in COMMANDS.items():
        assert f"  {name} " in text and line in text
        assert importlib.util.find_spec(module) is not None, module
    assert set(COMMANDS) == {"train", "sweep", "infer", "evaluate", "report", "plot", "data", "studies", "ui",
                             "reproduce", "clean"}


def test_an_unknown_command_is_one_line_with_a_suggestion(capsys):
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.strip() == "error: mlc trian: no such command (did you mean train?); " \
                                              "`mlc --help` lists them"


def test_the_console_script_is_installed_beside_the_interpreter():
    script = Path(sys.executable).parent / "mlc"
    if not script.exists():
        pytest.skip("not installed as a package here (make install puts .venv/bin/mlc)")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "infer" in result.stdout


@pytest.mark.parametrize("args,code,expected", [
    (["train", "loss.lamb=0.1"], 2, "error: loss.lamb: no such key in the config"),  # the pre-Hydra check
    (["sweep", "seed=0,1", "trainer.max_epoch=3"], 2, "error: trainer.max_epoch: no such key"),
    (["evaluate", "nothing.csv"], 2, "error: nothing.csv: no such scores file"),
    (["plot", "likelihood", "--lam", "2", "--output", "x"], 2, "error: --lam"),
])
def test_subcommands_run_their_module_with_its_checks(args, code, expected, tmp_path):
    result = run_module("mlc.cli", args, cli_env(tmp_path), timeout=120)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
