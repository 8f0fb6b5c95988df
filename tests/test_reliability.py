"""Run directories under concurrency, and refusals that leave nothing behind, through the real CLI."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow
TINY = ["dataset.train_size=64", "dataset.val_size=32", "dataset.test_size=32", "trainer.batch_size=16",
        "tracking=none"]


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def test_two_runs_started_at_once_on_one_folder_one_owns_it(outputs, data_cache, tmp_path):
    run = tmp_path / "run"
    procs = {epochs: subprocess.Popen([sys.executable, "-m", "mlc.cli.train", f"trainer.max_epochs={epochs}", *TINY,
                                       f"hydra.run.dir={run}", f"paths.cache={data_cache}"], cwd=ROOT,
                                      env=cli_env(outputs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for epochs in (1, 2)}
    done = {epochs: (p, *p.communicate(timeout=300)) for epochs, p in procs.items()}
    winners = [e for e, (p, _, _) in done.items() if p.returncode == 0]
    assert len(winners) == 1, {e: (p.returncode, err[-2000:]) for e, (p, _, err) in done.items()}
    (winner,) = winners
    loser, _, stderr = done[3 - winner]
    assert loser.returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: hydra.run.dir='{run}': "), stderr[-3000:]
    # the folder is the winner's alone: its config, its result, its log
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["trainer"]["max_epochs"] == winner
    assert len(json.loads((run / "result.json").read_text())["history"]) == winner
    assert (run / "train.log").read_text().count(" | run dir ") == 2  # its start line and its last line


def test_a_folder_whose_owner_is_alive_is_refused_and_taken_after_a_crash(outputs, data_cache, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".mlc-run", "w") as owner:  # a live run's claim (this process holds its lock) ...
        fcntl.flock(owner, fcntl.LOCK_EX)
        refused = run_cli(["trainer.max_epochs=1", *TINY, f"hydra.run.dir={run}"], outputs, data_cache)
        assert refused.returncode == 2
        assert one_line(refused) == (f"error: hydra.run.dir='{run}': another mlc run is writing there now; choose a "
                                     f"new directory")
        assert [p.name for p in run.iterdir()] == [".mlc-run"] and (run / ".mlc-run").read_text() == ""
    # ... and what a killed one leaves: the file without a lock. The same command now runs there.
    result = run_cli(["trainer.max_epochs=1", *TINY, f"hydra.run.dir={run}"], outputs, data_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "result.json").is_file() and (outputs / ".mlc-outputs").is_file()
    again = run_cli(["trainer.max_epochs=1", *TINY, f"hydra.run.dir={run}"], outputs, data_cache)
    assert again.returncode == 2 and "refusing to overwrite another run there (it holds .hydra/, " in one_line(again)


BROKEN_YAML = "_target_: mlc.losses.BCELoss\nreduction: [mean\nlam: 0.1\n"


@pytest.mark.parametrize("args,expected", [
    (["trainer.device=cuda"], "error: trainer.device='cuda': CUDA was requested but torch.cuda.is_available() is "
                              "False"),
    (["dataset.negative_ratio=1.0"], "error: dataset.negative_ratio=1.0: every image would be negative: no positive "
                                     "to learn from or to evaluate"),
    (["loss.lam=["], "error: override 'loss.lam=[': not a valid Hydra override (no viable alternative at input "),
    (["=3"], "error: override '=3': no key before '='"),
    (["--config-dir", "{conf}", "loss=broken"], "error: {conf}/loss/broken.yaml, line 3: not valid YAML ("),
    (["tracking.tracking_uri=http://127.0.0.1:9"], "error: tracking.tracking_uri='http://127.0.0.1:9': cannot reach "),
])
def test_a_refused_run_is_one_line_and_leaves_no_run_folder(args, expected, outputs, data_cache, tmp_path):
    """Refused before Hydra runs (the config, the command line, its files) or in the task before the first
    step (the tracking server): no run folder either way."""
    if args == ["trainer.device=cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    conf = tmp_path / "conf"
    (conf / "loss").mkdir(parents=True)
    (conf / "loss" / "broken.yaml").write_text(BROKEN_YAML)  # a user's config dir, not the repository's conf/
    run = tmp_path / "run"
    result = run_cli([a.format(conf=conf) for a in args] + ["trainer.max_epochs=1", *TINY[:3],
                                                            f"hydra.run.dir={run}"], outputs, data_cache)
    assert result.returncode == 2
    assert one_line(result).startswith(expected.format(conf=conf))
    assert not run.exists() and not list(outputs.glob("runs/*"))
