"""A shared tracking server on PostgreSQL (README, "Scaling out"): ``mlc ui --serve --backend-store-uri
postgresql://...`` on the same real PostgreSQL server the Optuna tests start, artifacts proxied; two sweep
workers log through HTTP, and ``mlc report --tracking-uri http://...`` builds its tables from the server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, SMALL, cli_env, run_module
from tests.postgres import create_database
from tests.test_tracking_server import stop, wait_healthy
from tests.test_ui import free_port

pytestmark = pytest.mark.slow


def test_two_workers_log_through_a_tracking_server_on_postgres_and_the_report_reads_it(postgres_url, outputs,
                                                                                          data_cache, tmp_path):
    import psycopg
    from mlflow.tracking import MlflowClient

    store = create_database(postgres_url, "mlflow_server")
    studies = create_database(postgres_url, "optuna_server")
    port, artifacts = free_port(), tmp_path / "artifacts"
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("w") as out:  # a file, not a pipe nobody reads (request logs would fill it and stall the server)
        server = subprocess.Popen([sys.executable, "-m", "mlc.cli.ui", "--serve", "--port", str(port),
                                   "--backend-store-uri", store, "--artifacts-destination", str(artifacts)],
                                  cwd=ROOT, env=cli_env(outputs), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, server, log)
        sweep = run_module(
            "mlc.cli", ["sweep", "--workers", "2", "hparams_search=lambda_vs_negative_ratio",
                        "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                        "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]", "trainer.max_epochs=1", *SMALL,
                        f"hydra.sweeper.storage={studies}", f"tracking.tracking_uri={base}",
                        f"paths.cache={data_cache}"],
            cli_env(outputs), timeout=600)
        assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
        assert "[worker 0]" in sweep.stdout and "[worker 1]" in sweep.stdout

        client = MlflowClient(base)
        exp = client.get_experiment_by_name("lambda_vs_negative_ratio")
        assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied: clients upload through HTTP
        runs = client.search_runs([exp.experiment_id])
        (parent,) = [r for r in runs if r.data.tags.get("mlc.kind") == "sweep"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert parent.info.status == "FINISHED" and parent.data.tags["mlc.sweep.workers"] == "2"
        assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
        assert len({r.data.tags["mlc.run_dir"] for r in children}) == 2  # one run per trial, one per worker's job
        # The runs are rows of the PostgreSQL database (not a file store beside the server), their artifacts
        # in the server's destination, and nothing was written to the clients' local store.
        with psycopg.connect(store) as conn:
            rows = conn.execute("SELECT run_uuid, status FROM runs").fetchall()
        assert sorted(rows) == sorted((r.info.run_id, "FINISHED") for r in runs)
        assert sorted(p.parent.parent.name for p in artifacts.rglob("result.json")) == \
            sorted(r.info.run_id for r in children)
        assert not (outputs / "mlflow.db").exists() and not (outputs / "mlartifacts").exists()

        report = run_module(
            "mlc.report", ["--tracking-uri", base, "--experiment", "lambda_vs_negative_ratio", "--group-by", "lam",
                           "--metrics", "test/f1_macro,test/map", "--output", str(tmp_path / "report")],
            cli_env(outputs), timeout=300)
        assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
        table = (tmp_path / "report" / "table.csv").read_text().splitlines()
        assert table[0].startswith("lam,n,") and len(table) == 3  # one row per λ the two workers tried
        lams = sorted(row.split(",")[0] for row in table[1:])
        assert lams == sorted(r.data.tags["mlc.lam"] for r in children)
    finally:
        stop(server)
