"""Sweeps on a real PostgreSQL server: what scaling out to several machines relies on (see README, "Scaling out").

The server is Debian's PostgreSQL, started for the session by ``tests.postgres`` on a loopback port;
without its binaries these tests are skipped (``.ci/run`` installs them).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs, run_cli
from tests.postgres import create_database, free_port

pytestmark = pytest.mark.slow
SWEEP = ["hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.sampler.n_startup_trials=2", "trainer.max_epochs=1",
         "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]", *SMALL]


def test_two_workers_started_together_fill_one_postgres_study(postgres_db, outputs, data_cache):
    """On an empty database: the workers build Optuna's tables under mlc's advisory lock (without it,
    two create_all at once collide on pg_type_typname_nsp_index)."""
    from mlc.sweep.study import ATTR_SURPLUS

    args = ["-m", *SWEEP, "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={postgres_db}",
            f"paths.cache={data_cache}"]
    # Two processes at the same instant, sharing one outputs folder (its SQLite MLflow store) as two machines
    # would share an MLflow server.
    workers = [subprocess.Popen([sys.executable, "-m", "mlc.cli.train", *args], cwd=ROOT, env=cli_env(outputs),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [w.communicate(timeout=300) for w in workers]
    for worker, (_, stderr) in zip(workers, results, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    (summary,) = optuna.get_all_study_summaries(postgres_db)  # one study, filled by both
    trials = optuna.load_study(study_name=summary.study_name, storage=postgres_db).get_trials()
    counted = [t for t in trials if not t.user_attrs.get(ATTR_SURPLUS)]  # (a surplus trial lost a race, never ran)
    done = [t for t in counted if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and len(done) == len(counted), [(t.number, t.state) for t in trials]  # exactly n_trials
    assert len({t.params["loss.lam"] for t in done}) == len(done)  # no worker proposed another's parameters
    runs = mlflow_runs(outputs, "lambda_vs_negative_ratio")
    assert sum(r.data.tags.get("mlc.kind") == "sweep" for r in runs) == 2 and len(runs) == 2 + len(done)
    assert all(r.info.status == "FINISHED" for r in runs)
    # The storage alone tells how the study stands, from any machine.
    listed = run_cli([postgres_db], outputs, None, module="mlc.cli.studies")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert f"{summary.study_name}: ok, best " in listed.stdout and f"({len(done)} complete, 0 pruned, 0 failed, " \
        "0 interrupted, 0 running of which 0 stale, 0 queued)" in listed.stdout, listed.stdout


def test_two_storages_opened_at_once_on_an_empty_database(postgres_url):
    from mlc.sweep.study import open_storage

    errors = []

    def open_when_released(url: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            open_storage(url).engine.dispose()
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")

    for _ in range(4):  # the collision takes a few tries to show up, not many
        url, barrier = create_database(postgres_url, "empty"), threading.Barrier(2)
        threads = [threading.Thread(target=open_when_released, args=(url, barrier)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors[0]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_heartbeats_on_postgres_find_a_dead_trial(postgres_db):
    from mlc.sweep.study import heartbeat, open_storage, reclaim, stale_trial_numbers

    storage = open_storage(postgres_db, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="beats", storage=storage, direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    with heartbeat(storage, trial):  # a live trial: beating every second, never stale
        time.sleep(3)
        assert stale_trial_numbers(study) == []
    time.sleep(3)  # its process "died": no beat for longer than the grace period (the database's clock)
    assert stale_trial_numbers(study) == [trial.number]
    assert [t.number for t in reclaim(study)] == [trial.number]
    assert reclaim(study) == []  # closed once
    (failed, queued) = study.get_trials()
    assert failed.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert queued.user_attrs["mlc.continues"] == trial.number  # the next ask, anywhere, runs it again
    assert stale_trial_numbers(study) == []


@pytest.mark.parametrize("module", ["mlc.cli.train", "mlc.cli.studies"])
def test_a_postgres_url_where_no_server_listens_is_one_line_before_any_trial(module, outputs, data_cache):
    url = f"postgresql://mlc@127.0.0.1:{free_port()}/mlc"  # closed again: nothing listens there
    key = "hydra.sweeper.storage" if module == "mlc.cli.train" else "storage"
    args = ["-m", *SWEEP, "hydra.sweeper.n_trials=1", f"{key}={url}"] if module == "mlc.cli.train" else [url]
    result = run_cli(args, outputs, data_cache if module == "mlc.cli.train" else None, module=module)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith(f"error: {key}='{url}': cannot open the Optuna storage (OperationalError: "), lines[0]
    assert "Connection refused" in lines[0]
    assert not list(outputs.iterdir())  # no run, sweep or store was created
