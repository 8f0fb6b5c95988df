"""Several nodes, one DDP run, on one machine: two "nodes" are two launchers on 127.0.0.1 that meet at a
c10d rendezvous (gloo, one rank each), started as separate process groups so that a node can be killed
whole.

- The README recipe exactly (raw ``torchrun --nnodes=2 ... --rdzv_backend=c10d``): one run folder, one
  MLflow run, and its logged test metrics equal one process scoring the same best weights.
- mlc's own settings (``mlc train trainer.nnodes=2 trainer.rdzv_endpoint=...`` on each node): a folder
  another run holds is refused on every node in one line; the run trains, and resumes on one node.
- A node killed outright (SIGKILL to all its processes): the other stops in seconds with one line.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlc.cli.evaluate import evaluate_checkpoint
from mlc.cli.train import main as train_main
from mlc.config import RUN_OWNER
from mlc.engine import TrainerSettings
from mlc.errors import ConfigError
from tests.conftest import ROOT, SMALL, cli_env, mlflow_runs, run_cli
from tests.test_elastic import ranks_of, running

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(cmd: list[str], outputs: Path, name: str) -> subprocess.Popen:
    """One "node": its own process group (``start_new_session``), its output in ``<outputs>/../<name>.*``."""
    out, err = (open(outputs.parent / f"{name}.{s}", "w") for s in ("out", "err"))  # noqa: SIM115 (the node's)
    with out, err:
        return subprocess.Popen(cmd, cwd=ROOT, env=cli_env(outputs), stdout=out, stderr=err, text=True,
                                start_new_session=True)


def output(outputs: Path, name: str) -> tuple[str, str]:
    return tuple((outputs.parent / f"{name}.{s}").read_text() for s in ("out", "err"))


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the launcher's ranks leave its process group: see mlc.engine.elastic)."""
    kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(p for kid in kids for p in descendants(int(kid)))]


def kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL to every process group of the node's processes: what a machine's sudden death looks like."""
    for pid in descendants(proc.pid):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_all(nodes: list[subprocess.Popen]) -> None:
    for proc in nodes:
        if proc.poll() is None:
            kill_node(proc)
        proc.wait(timeout=30)


def listening_pids(port: int) -> set[int]:
    """The processes with a TCP socket listening on ``port`` (from /proc: no ss or lsof needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for row in fh.read().splitlines()[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                pids.add(int(pid))
        except OSError:
            continue
    return pids


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def test_multinode_settings_are_checked_in_one_line_naming_the_key():
    ok = TrainerSettings(nnodes=2, rdzv_endpoint="node0:29400", rdzv_id=7)
    assert (ok.nnodes, ok.rdzv_id) == (2, "7")  # (Hydra reads rdzv_id=7 as a number)
    for kwargs, key in [({"nnodes": 0}, "nnodes"), ({"nnodes": 2}, "rdzv_endpoint"),
                        ({"nnodes": 2, "rdzv_endpoint": "node0"}, "rdzv_endpoint"),
                        ({"nnodes": 2, "rdzv_endpoint": "node0:99999"}, "rdzv_endpoint"),
                        ({"nnodes": 2, "rdzv_endpoint": "node0:29400", "rdzv_id": "a b"}, "rdzv_id"),
                        ({"rdzv_endpoint": "node0:29400"}, "rdzv_endpoint"), ({"rdzv_id": "x"}, "rdzv_id")]:
        with pytest.raises(ConfigError) as err:
            TrainerSettings(**kwargs)
        assert err.value.key == key, kwargs


def test_a_nodes_process_names_the_shared_folder_and_writes_nothing_there(tmp_path, monkeypatch):
    """What each node's ``mlc train trainer.nnodes=2`` checks before Hydra (``check_before_hydra``)."""
    from mlc.config import check_before_hydra

    monkeypatch.setenv("MLC_OUTPUTS", str(tmp_path / "outputs"))
    for name in ("RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    nodes = ["trainer.nnodes=2", "trainer.rdzv_endpoint=127.0.0.1:29400"]
    error, code, _ = check_before_hydra(nodes)
    assert code == 2 and error.startswith("error: trainer.nnodes=2: needs hydra.run.dir=<a folder every node shares>")
    run_dir = tmp_path / "shared" / "run"
    # No claim here (the other node names the same folder; global rank 0 claims it), and Hydra writes nothing.
    assert check_before_hydra([*nodes, f"hydra.run.dir={run_dir}"]) == (
        None, 0, ["hydra.output_subdir=null", "hydra/job_logging=stdout"])
    assert not run_dir.exists()
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text("{}")  # another run's folder: refused before any rendezvous
    error, code, _ = check_before_hydra([*nodes, f"hydra.run.dir={run_dir}"])
    assert code == 2 and "refusing to overwrite another run there (it holds result.json)" in error
    monkeypatch.setenv("RANK", "0")  # under torchrun its --nnodes says it
    error, code, _ = check_before_hydra([*nodes, f"hydra.run.dir={tmp_path / 'other'}"])
    assert code == 2 and error.startswith("error: trainer.nnodes=2: is for mlc's own launcher")


@pytest.mark.slow
def test_the_readme_recipe_trains_one_run_whose_metrics_equal_one_process(tmp_path, outputs, data_cache):
    port, run_dir = free_port(), tmp_path / "shared" / "run"
    # The README's "Several nodes, one DDP run" command, with 1 rank per node instead of 8 GPUs.
    recipe = [TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
              "--rdzv_id=test-job", "-m", "mlc.cli.train", f"hydra.run.dir={run_dir}", "trainer.max_epochs=1",
              *SMALL, f"paths.cache={data_cache}"]
    nodes = [start_node(recipe, outputs, f"node{i}") for i in range(2)]
    try:
        codes = [proc.wait(timeout=400) for proc in nodes]
    finally:
        stop_all(nodes)
    logs = [output(outputs, f"node{i}") for i in range(2)]
    assert codes == [0, 0], logs
    assert sum("2 process(es) on cpu" in out for out, _ in logs) == 1  # global rank 0 speaks, on one node
    # One run folder (the shared one), with its config and log; nothing of rank 1's anywhere else.
    assert [p.name for p in run_dir.parent.iterdir()] == ["run"] and not (outputs / "runs").exists()
    assert {".hydra", "train.log", "checkpoints", "result.json", RUN_OWNER} <= {p.name for p in run_dir.iterdir()}
    assert "job: test-job " in (run_dir / RUN_OWNER).read_text()  # rank 0 claimed it for this job
    (run,) = mlflow_runs(outputs)  # one MLflow run, written by global rank 0
    assert run.info.status == "FINISHED" and run.data.tags["mlc.world_size"] == "2"
    assert run.data.tags["mlc.run_dir"] == str(run_dir.resolve())
    # Honest DDP metrics: every test metric logged equals one process scoring the same best weights.
    single = evaluate_checkpoint(str(run_dir / "checkpoints" / "best.pt"), "test")
    logged = {k.removeprefix("test/"): v for k, v in run.data.metrics.items() if k.startswith("test/")}
    assert len(logged) >= 30 and set(logged) <= set(single)
    for key, value in logged.items():
        assert single[key] == pytest.approx(value, abs=1e-6), key
    assert json.loads((run_dir / "result.json").read_text())["test"]["f1_macro"] == pytest.approx(logged["f1_macro"])


@pytest.mark.slow
def test_mlc_train_on_two_nodes_refuses_a_held_folder_trains_and_resumes_on_one(tmp_path, outputs, data_cache,
                                                                              monkeypatch, capsys):
    run_dir = tmp_path / "shared" / "run"

    def on_each_node(port: int, *extra: str) -> list[tuple[int, str, str]]:
        cmd = [sys.executable, "-m", "mlc.cli.train", "trainer.nnodes=2", "trainer.nproc=1",
               f"trainer.rdzv_endpoint=127.0.0.1:{port}", f"hydra.run.dir={run_dir}", *extra, *SMALL,
               f"paths.cache={data_cache}"]
        nodes = [start_node(cmd, outputs, f"node{i}") for i in range(2)]
        try:
            codes = [proc.wait(timeout=400) for proc in nodes]
        finally:
            stop_all(nodes)
        return [(code, *output(outputs, f"node{i}")) for i, code in enumerate(codes)]

    # Another run holds the folder (its claim locked, nothing written yet): global rank 0 finds that out once
    # the rendezvous made it rank 0, and every node says so in one line; nothing is written there.
    run_dir.mkdir(parents=True)
    held = os.open(run_dir / RUN_OWNER, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        refused = on_each_node(free_port(), "trainer.max_epochs=1")
    finally:
        os.close(held)
    for code, _, err in refused:
        (line,) = err.strip().splitlines()
        assert code == 1 and line == (f"error: hydra.run.dir={str(run_dir)!r}: another mlc run is writing there now; "
                                      f"choose a new directory"), err
    assert [p.name for p in run_dir.iterdir()] == [RUN_OWNER]

    port = free_port()
    trained = on_each_node(port, "trainer.max_epochs=1")
    assert [code for code, _, _ in trained] == [0, 0], trained
    assert not any("Traceback" in err or "frame #" in err for _, _, err in trained), trained  # (torch's C++ warnings)
    assert all(f"rendezvous 127.0.0.1:{port} as mlc-" in out for _, out, _ in trained)
    assert {"config.yaml", "hydra.yaml", "overrides.yaml"} == {p.name for p in (run_dir / ".hydra").iterdir()}
    assert "epoch 1/1" in (run_dir / "train.log").read_text()
    (run,) = mlflow_runs(outputs)
    assert run.info.status == "FINISHED" and run.data.tags["mlc.world_size"] == "2"
    files = set(run_dir.iterdir())
    # A second, unrelated run in that folder is refused (as a plain run, and as another 2-node run), before
    # Hydra or any rank: ``mlc.cli.train.main`` (what ``python -m mlc.cli.train`` exits with) run here, not in
    # a new process (a refusal there is this same call; a process only adds its start-up).
    monkeypatch.setenv("MLC_OUTPUTS", str(outputs))
    again = train_main([f"hydra.run.dir={run_dir}", "trainer.max_epochs=1", *SMALL, f"paths.cache={data_cache}"])
    err = capsys.readouterr().err
    assert again == 2 and "refusing to overwrite another run there" in err, err
    alone = train_main(["trainer.nnodes=2", f"trainer.rdzv_endpoint=127.0.0.1:{free_port()}",
                        f"hydra.run.dir={run_dir}", *SMALL, f"paths.cache={data_cache}"])
    err = capsys.readouterr().err
    assert alone == 2 and err.strip().splitlines()[-1].startswith(
        f"error: hydra.run.dir={str(run_dir)!r}: refusing to overwrite another run there"), err
    assert set(run_dir.iterdir()) == files  # neither wrote anything there
    # Resumed with another node count (one node, one process): the epochs go on from last.pt, in the same
    # MLflow run.
    resumed = run_cli([f"trainer.resume={run_dir / 'checkpoints' / 'last.pt'}", "trainer.max_epochs=2", *SMALL],
                      outputs, data_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((run_dir / "result.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2] and "1 process(es) on cpu" in resumed.stdout
    (run,) = mlflow_runs(outputs)
    assert run.info.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/f1_macro")] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["store_host", "other_node"])
def test_a_killed_node_stops_the_other_in_seconds_with_one_line(tmp_path, outputs, data_cache, victim):
    port, run_dir = free_port(), tmp_path / "shared" / "run"
    cmd = [sys.executable, "-m", "mlc.cli.train", "trainer.nnodes=2", "trainer.nproc=1",
           f"trainer.rdzv_endpoint=127.0.0.1:{port}", f"hydra.run.dir={run_dir}", "trainer.max_epochs=200", *SMALL,
           f"paths.cache={data_cache}"]
    nodes = [start_node(cmd, outputs, f"node{i}") for i in range(2)]
    try:
        wait_for(lambda: any("epoch 1/200" in output(outputs, f"node{i}")[0] for i in range(2))
                 or any(p.poll() is not None for p in nodes), 400, "first epoch")
        assert all(p.poll() is None for p in nodes), [output(outputs, f"node{i}") for i in range(2)]
        # The node whose launcher bound the endpoint hosts the rendezvous store (the other one connected to it).
        hosts = [i for i, p in enumerate(nodes) if listening_pids(port) & set(descendants(p.pid))]
        assert len(hosts) == 1, hosts
        dead = hosts[0] if victim == "store_host" else 1 - hosts[0]
        survivor = ranks_of(nodes[1 - dead].pid)
        kill_node(nodes[dead])
        killed = time.monotonic()
        code = nodes[1 - dead].wait(timeout=120)
        took = time.monotonic() - killed
    finally:
        stop_all(nodes)
    out, err = output(outputs, f"node{1 - dead}")
    assert code == 1 and took < 60, (code, took, out, err)
    (line,) = err.strip().splitlines()  # one line on stderr: no traceback, no torch warnings
    assert line.startswith("error: node lost: ") and "resume with trainer.resume=" in line, line
    assert line.endswith(f"{run_dir / 'checkpoints' / 'last.pt'}") and (run_dir / "checkpoints" / "last.pt").is_file()
    assert len(survivor) == 1 and not any(running(pid) for pid in survivor)  # its rank went with it
    print(f"\n{victim} killed: the other node stopped after {took:.1f} s: {line}")
