"""The tests' zygote (tests/forked_cli.py) gives what a fresh ``python -m`` gives: exit code, stdout, stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, ZYGOTE


@pytest.mark.parametrize("module, args", [
    ("json.tool", ["--sort-keys", "{file}"]),  # exit 0, output on stdout
    ("json.tool", ["{missing}"]),  # argparse's error: exit 2, its message on stderr
    ("json.tool", ["{bad}"]),  # sys.exit(message): exit 1, the message on stderr
    ("mlc.cli.plot", ["likelihood", "--lam", "2", "--output", "{tmp}"]),  # mlc's one-line error, exit 2
])
def test_a_forked_command_answers_as_a_fresh_interpreter_does(module, args, tmp_path):
    (tmp_path / "ok.json").write_text('{"b": 1, "a": [1, 2]}')
    (tmp_path / "bad.json").write_text("{nope")
    places = {"file": tmp_path / "ok.json", "missing": tmp_path / "none.json", "bad": tmp_path / "bad.json",
              "tmp": tmp_path}
    args = [a.format(**places) for a in args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    fresh = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    forked = ZYGOTE.run(module, args, env, ROOT, timeout=120)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_a_forked_command_gets_its_own_environment_and_folder(tmp_path):
    code = "import os, sys; print(os.getcwd(), os.environ.get('MLC_PROBE'), sys.argv[1:]); sys.exit(3)"
    (tmp_path / "probe_module.py").write_text(code)
    env = dict(os.environ, MLC_PROBE="yes", PYTHONPATH=str(tmp_path))
    done = ZYGOTE.run("probe_module", ["a", "b"], env, tmp_path, timeout=60)
    assert done.returncode == 3 and done.stdout.split() == [str(tmp_path), "yes", "['a',", "'b']"]


def test_a_command_past_its_timeout_is_killed(tmp_path):
    (tmp_path / "sleeper.py").write_text("import time; print('started', flush=True); time.sleep(600)")
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        ZYGOTE.run("sleeper", [], dict(os.environ, PYTHONPATH=str(tmp_path)), tmp_path, timeout=3)
    assert "started" in raised.value.output
    assert ZYGOTE.run("json.tool", ["--help"], dict(os.environ), ROOT, timeout=60).returncode == 0  # still serves
