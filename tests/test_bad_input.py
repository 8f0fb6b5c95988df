"""Every input mistake gets one line naming the culprit and a non-zero exit, and leaves earlier work intact.

One outputs folder holds what a user has already: a finished run (checkpoints, MLflow run) and a
sweep (an Optuna study, its MLflow parent and trial). Each case runs the real CLI against that
folder and checks the answer (exit code, exactly one stderr line, no traceback) and that nothing
written before changed: every file's bytes, every MLflow run and every Optuna trial, and no new run
directory. Read-only and full outputs folders are real file systems (a read-only bind mount, a
full tmpfs) in a user namespace.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mlc.engine import checkpoint as ckpt
from tests.conftest import ROOT, SMALL, cli_env, compose, run_cli, run_module

pytestmark = pytest.mark.slow
SWEEP = ["-m", "hparams_search=lambda_vs_negative_ratio", "hydra.sweeper.n_trials=1", "trainer.max_epochs=1",
         "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5]", *SMALL]
STORE_FILES = (".db", ".db-wal", ".db-shm", ".db-journal", ".lock")  # compared by content, below


@dataclass
class Case:
    args: list[str]
    expected: str  # the start of the one stderr line
    code: int = 2
    module: str = "mlc.cli.train"
    sandbox: str | None = None  # "read-only" | "full": the outputs folder is on such a file system
    absent: list[str] = field(default_factory=list)  # paths (under {files}/{outputs}) that must not appear


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


CASES = {
    # config values and typos, checked before any compute
    "loss-value": Case(["loss.lam=-0.1"], "error: loss.lam=-0.1: λ must be in [0, 1]"),
    "loss-beta": Case(["loss.beta=1.0"], "error: loss.beta=1.0: β must be in [0, 1), or null for no class balancing"),
    "backbone-typo": Case(["backbone.name=resnet5O"],
                          "error: backbone.name='resnet5O': not a timm model (did you mean resnet50"),
    "key-typo": Case(["loss.lamb=0.1"], "error: loss.lamb: no such key in the config (check the spelling; "
                                        "+loss.lamb=<value> adds a new key)"),
    "option-typo": Case(["loss=hinge"], "error: loss=hinge: no such option in conf/loss/ (available: an, an_ls,"),
    "multirun-key-typo": Case(["-m", "seed=0,1", "trainer.max_epoch=3"], "error: trainer.max_epoch: no such key"),
    "optimizer-lr": Case(["optimizer.lr=-1"],
                         "error: optimizer.lr=-1: torch.optim.AdamW refuses it (Invalid learning rate: -1)"),
    "optimizer-momentum": Case(["optimizer=sgd", "optimizer.momentum=-0.5"],
                               "error: optimizer.momentum=-0.5: torch.optim.SGD refuses it (Invalid momentum value"),
    # tracking
    "tracking-unreachable": Case(["tracking.tracking_uri=http://127.0.0.1:{port}"],
                                 "error: tracking.tracking_uri='http://127.0.0.1:{port}': cannot reach the MLflow "
                                 "server"),
    "sweep-tracking-unreachable": Case([*SWEEP, "tracking.tracking_uri=http://127.0.0.1:{port}"],
                                       "error: tracking.tracking_uri='http://127.0.0.1:{port}': cannot reach the "
                                       "MLflow server"),  # no parent run: no trial runs (none would be orphaned)
    "tracking-scheme-typo": Case(["tracking.tracking_uri=sqllite:///{outputs}/mlflow.db"],
                                 "error: tracking.tracking_uri='sqllite:///{outputs}/mlflow.db': unknown scheme "
                                 "'sqllite' (did you mean sqlite?)"),
    "tracking-two-slashes": Case(["tracking.tracking_uri=sqlite://mlflow.db"],
                                 "error: tracking.tracking_uri='sqlite://mlflow.db': a SQLite URL names a file after "
                                 "three slashes"),
    # checkpoints
    "checkpoint-missing": Case(["trainer.resume={files}/missing.pt"], "error: checkpoint {files}/missing.pt: no such "
                                                                      "file", code=1),
    "checkpoint-empty": Case(["trainer.resume={files}/empty.pt"],
                             "error: checkpoint {files}/empty.pt: not a readable checkpoint", code=1),
    "checkpoint-truncated": Case(["trainer.resume={files}/truncated.pt"],
                                 "error: checkpoint {files}/truncated.pt: not a readable checkpoint", code=1),
    "checkpoint-foreign": Case(["trainer.resume={files}/foreign.pt"],
                               "error: checkpoint {files}/foreign.pt: not an mlc checkpoint", code=1),
    "checkpoint-crafted": Case(["trainer.resume={files}/crafted.pt"],
                               "error: checkpoint {files}/crafted.pt: refusing to build loss._target_='os.system'",
                               code=1, absent=["{files}/pwned"]),
    "resume-other-setup": Case(["loss.lam=0.1", "trainer.resume={run}", *SMALL],
                               "error: cannot resume {run}/checkpoints/last.pt: loss.lam: 0.02 in the checkpoint, "
                               "0.1 now", code=1),
    "evaluate-crafted": Case(["{files}/crafted.pt"], "error: checkpoint {files}/crafted.pt: refusing to build",
                             module="mlc.cli.evaluate", absent=["{files}/pwned"]),
    "evaluate-empty": Case(["{files}/empty.pt"], "error: checkpoint {files}/empty.pt: not a readable checkpoint",
                           module="mlc.cli.evaluate"),
    "infer-crafted": Case(["{files}/crafted.pt", "-o", "{files}/s.csv"],
                          "error: checkpoint {files}/crafted.pt: refusing to build", module="mlc.cli.infer",
                          absent=["{files}/pwned", "{files}/s.csv"]),
    "infer-not-a-run": Case(["{files}/nothing", "-o", "{files}/s.csv"],
                            "error: RUN='{files}/nothing': not a checkpoint file, a run directory or an MLflow run id",
                            module="mlc.cli.infer", absent=["{files}/s.csv"]),
    "infer-not-a-dataset-option": Case(["{run}", "trainer.threshold=0.3", "-o", "{files}/s.csv"],
                                       "error: trainer.threshold='0.3': only dataset options can change for inference",
                                       module="mlc.cli.infer", absent=["{files}/s.csv"]),
    "infer-unknown-dataset-field": Case(["{run}", "dataset.colour=1", "-o", "{files}/s.csv"],
                                        "error: dataset.colour='1': no such field in the run's dataset config",
                                        module="mlc.cli.infer", absent=["{files}/s.csv"]),
    "infer-into-the-run": Case(["{run}", "--split", "val", "-o", "{run}/scores/test.csv"],
                               "error: --output='{run}/scores/test.csv' is inside the run's own folder",
                               module="mlc.cli.infer"),
    "evaluate-ragged-scores": Case(["{files}/ragged.csv"], "error: {files}/ragged.csv: not a readable CSV scores file",
                                   module="mlc.cli.evaluate"),
    "evaluate-repeated-id": Case(["{files}/repeated.csv"], "error: {files}/repeated.csv: id 'b' is repeated (rows 2 "
                                 "and 3); each image must appear once", module="mlc.cli.evaluate"),
    "evaluate-logits": Case(["{files}/logits.csv"], "error: {files}/logits.csv: row 2 (b): score:a = -3 is outside "
                            "[0, 1]; scores are probabilities (apply a sigmoid to logits), 2 such value(s)",
                            module="mlc.cli.evaluate"),
    "evaluate-nan-score": Case(["{files}/nan.csv"], "error: {files}/nan.csv: row 1 (a): score:a is not a number",
                               module="mlc.cli.evaluate"),
    # run directories
    "run-dir-taken": Case(["hydra.run.dir={run}"], "error: hydra.run.dir='{run}': refusing to overwrite another run "
                                                   "there (it holds .hydra/, checkpoints/"),
    # sweeps: search spaces and storages, before any trial
    "sweep-bound-params": Case([*SWEEP, "hydra.sweeper.params.loss.lam='interval(-0.5,0.1)'"],
                               "error: loss.lam=-0.5: λ must be in [0, 1] (a value of hydra.sweeper.params.loss.lam)"),
    "sweep-bound-cli": Case([*SWEEP, "loss.lam=interval(0.01,1.5)"],
                            "error: loss.lam=1.5: λ must be in [0, 1] (a value of the command-line search space"),
    "sweep-grid-value": Case([*SWEEP, "hydra.sweeper.study_grid.dataset.negative_ratio=[0.5,1.5]"],
                             "error: dataset.negative_ratio=1.5: must be in [0, 1] (a value of "
                             "hydra.sweeper.study_grid)"),
    "sweep-direction": Case([*SWEEP, "hydra.sweeper.direction=minimize"],
                            "error: hydra.sweeper.direction='minimize': disagrees with trainer.monitor_mode=max"),
    "sweep-reversed-interval": Case([*SWEEP, "loss.lam=interval(0.5,0.001)"],
                                    "error: loss.lam='interval(0.5,0.001)': not a valid Optuna search space"),
    "sweep-log-from-zero": Case([*SWEEP, "hydra.sweeper.params.loss.lam='tag(log, interval(0, 0.5))'"],
                                "error: hydra.sweeper.params.loss.lam='tag(log, interval(0, 0.5))': not a valid "
                                "Optuna search space"),
    "sweep-storage-slashes": Case([*SWEEP, "hydra.sweeper.storage=sqlite://optuna.db"],
                                  "error: hydra.sweeper.storage='sqlite://optuna.db': a SQLite URL names a file"),
    "sweep-storage-database": Case([*SWEEP, "hydra.sweeper.storage=postgress://u@localhost/db"],
                                   "error: hydra.sweeper.storage='postgress://u@localhost/db': unsupported database "
                                   "'postgress' (did you mean postgresql?)"),
    "sweep-study-other-config": Case([*SWEEP, "hydra.sweeper.study_name={study}", "loss.beta=0.99"],
                                     "error: hydra.sweeper.study_name='{study}[dataset.negative_ratio=0.5]': this "
                                     "study was run with another config (loss.beta=0.9999 there, 0.99 now)"),
    "sweep-pruner-target": Case([*SWEEP, "hydra.sweeper.pruner._target_=os.system"],
                                "error: hydra.sweeper.pruner._target_='os.system': must be one of optuna.pruners."),
    "sweep-n-trials": Case([*SWEEP, "hydra.sweeper.n_trials=0"], "error: hydra.sweeper.n_trials=0: must be an integer"),
    "sweeps-cli-typo-path": Case(["sqlite:///{outputs}/optuan.db"],
                                 "error: storage='sqlite:///{outputs}/optuan.db': no such database file",
                                 module="mlc.cli.studies", absent=["{outputs}/optuan.db"]),
    "sweeps-cli-not-a-url": Case(["outputs/optuna.db"], "error: storage='outputs/optuna.db': not a database URL",
                                 module="mlc.cli.studies"),
    # the outputs folder itself
    "outputs-read-only": Case(["trainer.max_epochs=1"], "error: paths.outputs='{outputs}': cannot write there: "
                                                        "read-only file system (EROFS)", sandbox="read-only"),
    "outputs-full": Case(["trainer.max_epochs=1"], "error: paths.outputs='{outputs}': cannot write there: no space "
                                                   "left on device (ENOSPC)", sandbox="full"),
}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, data_cache) -> dict[str, Path]:
    """An outputs folder with a finished run and a finished one-trial sweep, and files for the checkpoint cases."""
    outputs = tmp_path_factory.mktemp("earlier") / "outputs"
    outputs.mkdir()
    assert run_cli(["trainer.max_epochs=1", *SMALL], outputs, data_cache).returncode == 0
    assert run_cli(SWEEP, outputs, data_cache).returncode == 0
    (run,) = [p.parent.parent for p in outputs.glob("runs/*/*/checkpoints/last.pt")]
    files = tmp_path_factory.mktemp("files")
    real = (run / "checkpoints" / "last.pt").read_bytes()
    (files / "empty.pt").write_bytes(b"")
    (files / "ragged.csv").write_text("id,score:a,label:a\n0,0.5,1\n1,0.25\n2,0.1,0,7\n")
    (files / "repeated.csv").write_text("id,score:a,label:a\na,0.5,1\nb,0.25,0\nb,0.25,0\n")
    (files / "logits.csv").write_text("id,score:a,label:a\na,0.5,1\nb,-3,0\nc,1.5,1\n")
    (files / "nan.csv").write_text("id,score:a,label:a\na,nan,1\nb,0.2,0\n")
    (files / "truncated.pt").write_bytes(real[: len(real) // 2])
    torch.save({"weights": torch.zeros(2)}, files / "foreign.pt")
    crafted = ckpt.load(run / "checkpoints" / "last.pt")
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(compose(["trainer.max_epochs=1", *SMALL]), resolve=True)
    config["loss"] = {"_target_": "os.system", "_args_": [f"touch {files / 'pwned'}"]}
    ckpt.save_atomic({**{k: v for k, v in crafted.items() if k != "path"}, "config": config}, files / "crafted.pt")
    import optuna

    (study,) = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{outputs}/optuna.db")]
    return {"outputs": outputs, "run": run, "files": files, "study": study.split("[")[0]}


def snapshot(outputs: Path) -> dict:
    """Everything a user would miss: file bytes, MLflow runs (status, params, metrics, tags), Optuna trials."""
    import optuna
    from mlflow.tracking import MlflowClient

    files = {str(p.relative_to(outputs)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
             for p in sorted(outputs.rglob("*")) if not p.name.endswith(STORE_FILES)}  # empty folders count too
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = sorted((r.info.run_id, r.info.status, r.info.end_time, r.data.params, r.data.metrics, r.data.tags)
                  for r in client.search_runs([e.experiment_id for e in client.search_experiments()]))
    storage = f"sqlite:///{outputs}/optuna.db"
    trials = {s.study_name: [(t.number, t.state.name, t.params, t.values, t.user_attrs)
                             for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials()]
              for s in optuna.get_all_study_summaries(storage)}
    return json.loads(json.dumps({"files": files, "runs": runs, "trials": trials}, default=str))


def namespaces_work() -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return shutil.which("unshare") is not None and probe.returncode == 0


HASHES = ("import hashlib, json, pathlib, sys; root = pathlib.Path(sys.argv[1]); "
          "json.dump({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() "
          "for p in sorted(root.rglob('*')) if p.is_file() and p.name != '.filler'}, open(sys.argv[2], 'w'))")


def run_case(cmd: list[str], sandbox: str | None, outputs: Path, tmp: Path) -> tuple[int, str, bool]:
    """(exit code, stderr, whether everything written before is unchanged) of ``cmd`` run on ``outputs``
    (``python -m ...`` without a sandbox: in a process forked from the tests' zygote, ``run_module``).

    ``read-only``: ``outputs`` is bind-mounted read-only onto itself in a mount namespace. ``full``: a
    tmpfs a little larger than the earlier outputs is mounted over it, the earlier outputs are copied
    in and the rest is filled; the tmpfs vanishes with the namespace, so the bytes of every file (stores
    included) are compared inside it, before and after.
    """
    if sandbox is None:
        before = snapshot(outputs)
        assert cmd[:2] == [sys.executable, "-m"], cmd
        result = run_module(cmd[2], cmd[3:], cli_env(outputs), timeout=120)
        return result.returncode, result.stderr, snapshot(outputs) == before
    run = subprocess.list2cmdline(cmd)
    if sandbox == "read-only":
        before = snapshot(outputs)
        script = f'mount --bind "{outputs}" "{outputs}" && mount -o remount,bind,ro "{outputs}" && exec {run}'
        result = subprocess.run(namespace(script), cwd=ROOT, env=cli_env(outputs), capture_output=True, text=True,
                                timeout=120)
        return result.returncode, result.stderr, snapshot(outputs) == before
    copy = tmp / "copy"
    shutil.copytree(outputs, copy)
    size_kb = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file()) // 1024 + 1024
    hashes = subprocess.list2cmdline([sys.executable, "-c", HASHES])
    script = (f'mount -t tmpfs -o size={size_kb}k tmpfs "{outputs}" && cp -a "{copy}/." "{outputs}/" && '
              f'{{ dd if=/dev/zero of="{outputs}/.filler" bs=4k 2>/dev/null; true; }} && '
              f'{hashes} "{outputs}" "{tmp}/before.json" && '
              f'{{ {run} 2> "{tmp}/stderr"; echo $? > "{tmp}/rc"; }} && {hashes} "{outputs}" "{tmp}/after.json"')
    result = subprocess.run(namespace(script), cwd=ROOT, env=cli_env(outputs), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    same = json.loads((tmp / "before.json").read_text()) == json.loads((tmp / "after.json").read_text())
    return int((tmp / "rc").read_text()), (tmp / "stderr").read_text(), same


def namespace(script: str) -> list[str]:
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_and_leaves_earlier_work_intact(name, earlier, data_cache, tmp_path):
    case = CASES[name]
    if case.sandbox and not namespaces_work():
        pytest.skip("user and mount namespaces are not available here (unshare), so no read-only or full file "
                    "system can be made without root")
    places = {k: str(v) for k, v in earlier.items()} | {"port": str(closed_port())}
    cmd = [sys.executable, "-m", case.module, *(a.format(**places) for a in case.args),
           *([f"paths.cache={data_cache}"] if case.module == "mlc.cli.train" else [])]
    code, stderr, unchanged = run_case(cmd, case.sandbox, earlier["outputs"], tmp_path)
    lines = stderr.strip().splitlines()
    assert code == case.code, stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith(case.expected.format(**places)), lines[0]
    assert unchanged  # every file, MLflow run and Optuna trial as it was; no new run directory
    for path in case.absent:
        assert not Path(path.format(**places)).exists(), path


def test_the_full_outputs_case_really_fills_the_disk(earlier, tmp_path):
    """The ENOSPC case above is only worth something if its tmpfs is full: a one-line write fails there."""
    if not namespaces_work():
        pytest.skip("user and mount namespaces are not available here")
    target = tmp_path / "outputs"
    shutil.copytree(earlier["outputs"], target)
    cmd = [sys.executable, "-c", f"open({str(target / 'probe')!r}, 'wb').write(bytes(65536))"]
    code, stderr, _ = run_case(cmd, "full", target, tmp_path)
    assert code != 0 and "No space left on device" in stderr


def test_a_disk_that_fills_during_training_keeps_the_last_good_checkpoint(tmp_path, data_cache):
    """The outputs tmpfs is filled after epoch 1 of 3: the run stops with one line naming ENOSPC, and
    epoch 1's checkpoint still loads (never a torn file)."""
    if not namespaces_work():
        pytest.skip("user and mount namespaces are not available here")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    run = subprocess.list2cmdline([sys.executable, "-m", "mlc.cli.train", "trainer.max_epochs=3", *SMALL,
                                   f"paths.cache={data_cache}"])
    check = subprocess.list2cmdline([sys.executable, "-c", "import glob, sys; from mlc.engine import checkpoint; "
                                     "s = checkpoint.load(glob.glob(sys.argv[1] + '/runs/*/*/checkpoints/last.pt')[0]);"
                                     " print('epoch', s['epoch'])", str(outputs)])
    script = (f'mount -t tmpfs -o size=16m tmpfs "{outputs}" && '
              f'{{ {run} > "{tmp_path}/stdout" 2> "{tmp_path}/stderr" & }} && pid=$! && '
              f'until grep -q "epoch 1/3" "{tmp_path}/stdout" 2>/dev/null || ! kill -0 $pid 2>/dev/null; '
              f'do sleep 0.05; done && {{ dd if=/dev/zero of="{outputs}/.filler" bs=4k 2>/dev/null; true; }} && '
              f'{{ wait $pid; echo $? > "{tmp_path}/rc"; }} && {check} > "{tmp_path}/check"')
    result = subprocess.run(namespace(script), cwd=ROOT, env=cli_env(outputs), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stderr = (tmp_path / "stderr").read_text()
    lines = stderr.strip().splitlines()
    assert int((tmp_path / "rc").read_text()) == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith("error: ") and ("(ENOSPC)" in lines[0] or "disk is full" in lines[0]), lines[0]
    assert (tmp_path / "check").read_text().split() == ["epoch", "1"]
