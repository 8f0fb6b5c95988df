"""Every loss option trains end to end: `python -m mlc.cli.train -m loss=<every option>` for one short epoch."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, SMALL, mlflow_runs, run_cli

pytestmark = pytest.mark.slow
LOSS_OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml"))


@pytest.fixture(scope="module")
def all_loss_runs(tmp_path_factory, data_cache):
    """One multirun over every loss option (in one process: ~1 s per option instead of ~6)."""
    outputs = tmp_path_factory.mktemp("all-losses")
    result = run_cli(["-m", f"loss={','.join(LOSS_OPTIONS)}", "trainer.max_epochs=1", *SMALL], outputs,
                     data_cache, timeout=900)
    runs = {r.data.tags["mlc.loss"]: r for r in mlflow_runs(outputs) if "mlc.loss" in r.data.tags}
    return result, runs


@pytest.mark.parametrize("option", LOSS_OPTIONS)
def test_loss_option_trains_one_epoch(option, all_loss_runs):
    result, runs = all_loss_runs
    assert option in runs, f"no run for loss={option}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    run = runs[option]
    assert run.info.status == "FINISHED", run.data.tags.get("mlc.error")
    assert run.data.metrics["train/loss"] == run.data.metrics["train/loss"]  # finite, not NaN
    assert 0.0 <= run.data.metrics["val/f1_macro"] <= 1.0
