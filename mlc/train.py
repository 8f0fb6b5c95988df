"""One training run, as build -> fit -> record: the Hydra job behind ``mlc train`` and every sweep trial
(``mlc.cli.train`` is the command line; this module is what it runs).

The task returns the best value of ``trainer.monitor`` so that Hydra sweepers can optimise it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mlc.config import RUN_OWNER, check_config, claim_run_dir, report_and_exit, resumes
from mlc.data.lineage import dataset_inputs, dataset_name
from mlc.engine import checkpoint as ckpt
from mlc.engine.callbacks import standard_callbacks
from mlc.engine.checkpoint import check_resumable
from mlc.engine.distributed import DistContext
from mlc.engine.elastic import Nodes, default_rdzv_id, rank_logging, run_on_local_ranks
from mlc.engine.trainer import TrainData, Trainer
from mlc.errors import CheckpointError, MlcError, TrainingInterrupted, TrialPruned, config_scope, exit_code
from mlc.flat import flatten
from mlc.sweep.parent import parent_run_id
from mlc.sweep.pruning import reporter_for
from mlc.sweep.trial import TrialSpec
from mlc.tracking import git_tags, make_tracker

log = logging.getLogger("mlc")


@dataclass
class RunContext:
    """What a run needs to know about how Hydra launched it: its folder, the config choices, the command
    line and, in a multirun, its sweep and job number. Read from Hydra in the job process; handed as
    a plain value to the ranks of a ``trainer.nproc`` run, which Hydra did not start."""

    output_dir: str
    choices: dict
    overrides: list
    multirun: bool = False
    sweep_dir: str | None = None
    job_num: int | None = None
    output_subdir: str | None = None
    job_name: str = "train"

    @classmethod
    def from_hydra(cls) -> RunContext:
        if not HydraConfig.initialized():
            return cls(output_dir=os.getcwd(), choices={}, overrides=[])
        h = HydraConfig.get()
        multirun = h.mode == RunMode.MULTIRUN
        return cls(output_dir=str(h.runtime.output_dir), choices=dict(h.runtime.choices),
                   overrides=list(h.overrides.task), multirun=multirun,
                   sweep_dir=str(h.sweep.dir) if multirun else None, job_num=int(h.job.num) if multirun else None,
                   output_subdir=h.output_subdir, job_name=str(h.job.name))


_CONTEXT: RunContext | None = None  # set in the ranks of a trainer.nproc run


def context() -> RunContext:
    return _CONTEXT if _CONTEXT is not None else RunContext.from_hydra()


def run_task(cfg: DictConfig) -> float:
    """One Hydra job (a run, or a trial of a multirun): its best value of ``trainer.monitor``. Outside a
    multirun an ``MlcError`` ends the process with one line and its code from ````mlc.errors.exit_code````; in
    a multirun it goes to the sweeper, which records the trial FAIL and goes on."""
    nnodes = 1
    try:
        nproc, nnodes = int(cfg.trainer.get("nproc") or 1), int(cfg.trainer.get("nnodes") or 1)
        if (nproc > 1 or nnodes > 1) and "LOCAL_RANK" not in os.environ:  # (under torchrun the ranks already exist)
            return train_on_ranks(cfg, nproc)
        return train(cfg)
    except MlcError as err:
        if context().multirun:
            raise
        # Across nodes the folder is global rank 0's (it discards what it made); this node may not even hold it.
        if getattr(err, "before_training", False) and nnodes == 1 and discard_unused_run_dir(_output_dir()):
            print(f"error: {err}", file=sys.stderr, flush=True)  # (the run's log went with its folder)
            sys.exit(exit_code(err))
        report_and_exit(err, exit_code(err))


@contextlib.contextmanager
def _before_training():
    """Marks an ``MlcError`` raised inside the block as a refusal before any training (nothing to keep)."""
    try:
        yield
    except MlcError as err:
        err.before_training = True
        raise


def train(cfg: DictConfig) -> float:
    """Check the config, then build -> fit -> record; the best value of ``trainer.monitor``."""
    with _before_training():
        checked = check_config(cfg)  # everything cheap is validated before any data or compute
        dist = DistContext.from_env(checked.trainer.device)  # (refuses trainer.device=cuda without a GPU)
        trial = _trial_of(checked)
    if not dist.is_main:
        logging.getLogger("mlc").setLevel(logging.WARNING)  # one voice: rank 0 reports progress
    try:
        with _before_training():
            run = build(checked, dist, trial)
        result = fit(run)
        if dist.is_main:
            record(run, result)
        dist.barrier()
        return float(result.best_value)
    finally:
        dist.close()


@dataclass
class Run:
    """One training run, built once from the checked config: what ``fit`` trains and ``record`` tracks.
    Nothing after ``build`` reads the raw config: ``config`` is its resolved, validated form."""

    config: dict  # the resolved config (logged as params and config/resolved.yaml)
    settings: Any  # TrainerSettings
    trainer: Trainer
    tracker: Any  # MLflowTracker, or NullTracker off rank 0 and with tracking=none
    stats: dict  # DatasetStats per split
    loss_name: str
    resume_state: dict | None
    trial: TrialSpec | None  # the sweeper's message, in a sweep trial
    inputs: list = field(default_factory=list)  # MLflow dataset inputs per split (mlc.data.lineage)


def _trial_of(checked) -> TrialSpec | None:
    trial = TrialSpec.from_env()
    seed = int(checked.cfg.seed)
    if trial is not None and trial.seeds and seed not in trial.seeds:
        raise MlcError(f"seed={seed} is not one of this trial's seeds {list(trial.seeds)} (from the sweeper)")
    return trial


def build(checked, dist: DistContext, trial: TrialSpec | None) -> Run:
    """Everything up to the first step: a failure here leaves nothing worth keeping."""
    settings, seed = checked.trainer, int(checked.cfg.seed)
    seed_everything(seed + dist.rank)
    resolved = OmegaConf.to_container(checked.cfg, resolve=True)
    resume_state = ckpt.load(settings.resume) if settings.resume else None
    if resume_state is not None:
        check_resumable(resume_state, resolved)
    run_dir = Path(dist.broadcast_object(str(_output_dir())))
    if resume_state is None and (run_dir / "checkpoints" / "last.pt").exists():
        raise CheckpointError(f"{run_dir / 'checkpoints' / 'last.pt'} already exists: refusing to overwrite "
                              f"another run's checkpoint (resume it with trainer.resume=<path>)")
    # The store is opened (or the server reached) before any data is built: a bad URI fails in seconds.
    tracker = make_tracker(checked.tracking) if dist.is_main else make_tracker(_disabled(checked.tracking))

    # Data: rank 0 first, so that a cache miss generates the data once and the others read the cache.
    if not dist.is_main:
        dist.barrier()
    source = checked.dataset
    datasets = {split: source.load(split) for split in ("train", "val", "test")}
    if dist.is_main:
        dist.barrier()
    stats = {split: ds.stats() for split, ds in datasets.items()}
    inputs = dataset_inputs(dataset_name(_choice("dataset") or "dataset", resolved["dataset"]), datasets, stats) \
        if dist.is_main and checked.tracking.enabled else []

    # Common random numbers: the initial weights come from the seed alone, drawn right before the model
    # is built, so the two arms of a paired comparison (another loss, sampler, λ; any rank) start from the
    # same weights for a seed, as they already share its data, data order and augmentation streams.
    torch.manual_seed(seed)
    model = checked.build_model()
    seed_everything(seed + dist.rank)  # training's own random stream (dropout, ...), one per rank
    loss_fn = checked.build_loss(stats["train"])
    with config_scope("sampler"):
        epoch_order = checked.make_order(targets=datasets["train"].targets, seed=seed)
    loss_name = _choice("loss") or type(loss_fn).__name__
    data = TrainData(datasets, epoch_order, class_weights=getattr(source, "class_weights", None))
    optimizer = checked.build_optimizer(model, loss_fn)
    scheduler = checked.build_scheduler(optimizer, data.epoch_length(), dist.world_size)
    callbacks = standard_callbacks(settings, tracker, config=resolved)
    pruning = reporter_for(trial, settings.monitor, dist.is_main)
    trainer = Trainer(settings, model, loss_fn, optimizer, scheduler, data, run_dir, dist=dist, seed=seed,
                      callbacks=[*callbacks, *([pruning] if pruning is not None else [])], loss_name=loss_name)
    if resume_state is not None:
        trainer.restore(resume_state)
    return Run(resolved, settings, trainer, tracker, stats, loss_name, resume_state, trial, inputs)


def fit(run: Run):
    """Train (rank 0 opens the MLflow run first); a failure ends the MLflow run with its status."""
    trainer, tracker, stats = run.trainer, run.tracker, run.stats
    if trainer.dist.is_main:
        _start_tracking(run)
    log.info("%s | %s | %s | train %d (%.0f%% negative) val %d test %d | %d process(es) on %s | run dir %s",
             run.loss_name, run.config["backbone"]["name"], _choice("dataset") or "dataset",
             stats["train"].num_samples, 100 * stats["train"].negative_ratio, stats["val"].num_samples,
             stats["test"].num_samples, trainer.dist.world_size, trainer.dist.device, trainer.run_dir)
    try:
        return trainer.fit()
    except TrialPruned as err:  # the sweeper records the trial PRUNED; the run's checkpoints are complete
        with contextlib.suppress(MlcError):
            tracker.set_tags({"mlc.pruned": "true"})
            tracker.end("KILLED", str(err))
        log.info("%s", err)
        raise
    except (TrainingInterrupted, KeyboardInterrupt) as err:
        with contextlib.suppress(MlcError):  # the run's own error is the one to report
            tracker.end("KILLED", str(err) or type(err).__name__)
        raise
    except BaseException as err:
        with contextlib.suppress(MlcError):
            tracker.end("FAILED", f"{type(err).__name__}: {err}"[:5000])
        raise


def _start_tracking(run: Run) -> None:
    where, trainer, tracker, resolved = context(), run.trainer, run.tracker, run.config
    tags = {**run_tags(resolved, run.loss_name, run.stats["train"]), "mlc.run_dir": str(trainer.run_dir.resolve()),
            "mlc.overrides": " ".join(where.overrides), "mlc.world_size": str(trainer.dist.world_size),
            **git_tags()}
    parent = None
    if where.multirun:
        # mlc's sweeper names the parent run in its message; Hydra's own sweepers leave it in the sweep folder
        parent = run.trial.parent_run_id if run.trial is not None else parent_run_id(where.sweep_dir)
        tags |= {"mlc.sweep_dir": str(Path(where.sweep_dir).resolve()), "mlc.job_num": str(where.job_num)}
    run_name = resolved["tracking"].get("run_name") or _default_run_name(resolved, run.loss_name, where)
    tracker.start(run_name=run_name, tags=tags, parent_run_id=parent,
                  resume_run_id=run.resume_state.get("mlflow_run_id") if run.resume_state else None)
    if run.resume_state is None:
        stats = run.stats
        params = flatten({k: v for k, v in resolved.items() if k != "hydra"})
        for split, st in stats.items():  # every statistic of every split (sizes, ratios, counts, skipped, ...)
            params |= {f"data.{split}.{k}": round(v, 6) if isinstance(v, float) else v
                       for k, v in st.to_dict().items() if k != "class_names"}
        params |= {"data.class_names": stats["train"].class_names, "train.steps_per_epoch": trainer.steps_per_epoch,
                   "data.class_groups": trainer.class_groups}
        tracker.log_params(params)
        tracker.log_datasets(run.inputs)
        tracker.log_text(json.dumps({s: st.to_dict() for s, st in stats.items()}, indent=2), "dataset_stats.json")
        tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), "config/resolved.yaml")
        for path in sorted((trainer.run_dir / ".hydra").glob("*.yaml")):
            tracker.log_artifact(path, "config")


def record(run: Run, result) -> None:
    """The run's results beside it (result.json, curves.png) and in MLflow; the MLflow run ends FINISHED."""
    trainer, tracker, settings = run.trainer, run.tracker, run.settings
    summary = {"best_value": result.best_value, "best_epoch": result.best_epoch, "monitor": settings.monitor,
               "degenerate": result.degenerate, "test": result.test_metrics, "history": result.history}
    (trainer.run_dir / "result.json").write_text(json.dumps(summary, indent=2))
    tracker.log_metrics({f"best/{settings.monitor}": result.best_value, "best/epoch": result.best_epoch},
                        step=result.best_epoch)
    plot = plot_curves(result.history, trainer.run_dir / "curves.png", settings.monitor)
    tracker.log_artifact(plot)
    tracker.log_artifact(trainer.run_dir / "result.json")
    for name in ("thresholds.json", "per_class_test.json"):
        if (trainer.run_dir / name).exists():
            tracker.log_artifact(trainer.run_dir / name)
    for path in sorted((trainer.run_dir / "scores").glob("*.csv*")):
        tracker.log_artifact(path, "scores")
    choice = getattr(tracker, "settings", None) and tracker.settings.log_checkpoint
    for name in {"best": ["best"], "last": ["last"], "both": ["best", "last"]}.get(choice or "none", []):
        path = trainer.ckpt_dir / f"{name}.pt"
        if path.exists():
            tracker.log_artifact(path, "checkpoints")
    tracker.end("FINISHED")
    log.info("best %s = %.4f at epoch %d | run dir %s", settings.monitor, result.best_value, result.best_epoch,
             trainer.run_dir)


def run_tags(config: dict, loss_name: str, train_stats) -> dict[str, str]:
    """What a run is, as MLflow tags: the dashboard's group-by and compare views and ``mlc report``
    read these instead of digging through the flattened params."""
    ratio = config["dataset"].get("negative_ratio")
    # the backbone's config choice (cnn_small, cnn_wide, resnet18: what users type and group by; two choices
    # may build the same timm model at other widths), its timm name without one; the name is a param anyway
    dataset, backbone = config["dataset"], config["backbone"]
    tags = {"mlc.kind": "run", "mlc.loss": loss_name, "mlc.backbone": _choice("backbone") or str(backbone["name"]),
            "mlc.dataset": _choice("dataset") or str(dataset.get("_target_", "dataset")).rsplit(".", 1)[-1],
            "mlc.negative_ratio": f"{float(ratio) if ratio is not None else train_stats.negative_ratio:.4g}",
            "mlc.seed": str(config["seed"]), "mlc.monitor": str(config["trainer"]["monitor"])}
    if config["loss"].get("lam") is not None:
        tags["mlc.lam"] = f"{float(config['loss']['lam']):.6g}"
    return tags


def plot_curves(history: list[dict], path: Path, monitor: str) -> Path:
    """Training loss and validation metrics per epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [h["train/loss"] for h in history], marker="o", label="train")
    ax_loss.plot(epochs, [h["val/loss"] for h in history], marker="o", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    for key in ("val/f1_macro", "val/f2_macro", "val/map", "val/f1_neg"):
        ax_val.plot(epochs, [h[key] for h in history], marker="o", label=key.split("/")[1],
                    linewidth=2.5 if key == monitor else 1.2)
    ax_val.set(xlabel="epoch", ylim=(0, 1), title="validation")
    ax_val.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train_on_ranks(cfg: DictConfig, nproc: int) -> float:
    """``trainer.nproc=N``: this run (or sweep trial) as an N-process DDP job on this machine, its ranks
    started by torch's elastic launcher (gloo on CPU, NCCL on CUDA). Rank 0 keeps this job's folder and
    its one MLflow run; its best value is returned to the sweeper. The config is checked here first, so a
    mistake is one line before any rank starts; a rank's error comes back as that error.

    ``trainer.nnodes=M``: one run of M x N ranks, this node's N among them; every node runs the same
    command and they meet at ``trainer.rdzv_endpoint``. The global rank 0, on whichever node, claims the
    shared ``hydra.run.dir`` and writes the run (``_claim_for_the_job``); each node returns its lowest
    rank's value."""
    with _before_training():
        checked = check_config(cfg)
    settings, nodes = checked.trainer, None
    if settings.nnodes > 1:
        if context().multirun:
            raise MlcError(f"trainer.nnodes={settings.nnodes}: is for one run (the same command on every node), "
                           f"not for the trials of a sweep; use trainer.nproc for DDP trials")
        run_dir = str(HydraConfig.get().run.dir) if HydraConfig.initialized() else str(_output_dir())
        nodes = Nodes(settings.nnodes, str(settings.rdzv_endpoint), settings.rdzv_id or default_rdzv_id(run_dir))
        log.info("starting %d rank(s) here, %d in all on %d nodes (trainer.nnodes=%d): rendezvous %s as %s",
                 nproc, nproc * nodes.count, nodes.count, nodes.count, nodes.endpoint, nodes.run_id)
    else:
        log.info("starting %d ranks (trainer.nproc=%d) through torch's elastic launcher", nproc, nproc)
    config = OmegaConf.to_container(cfg, resolve=True)
    shared = _hydra_files(cfg) if nodes is not None else None
    return float(run_on_local_ranks(_rank_main, nproc, (config, context(), shared), str(_output_dir()), nodes))


def _hydra_files(cfg: DictConfig) -> dict[str, str]:
    """What Hydra writes into ``.hydra/`` of a run, for the global rank 0 of a ``trainer.nnodes`` run to
    write once it owns the folder (the nodes' own Hydra writes nothing there)."""
    if not HydraConfig.initialized():
        return {}
    hydra = HydraConfig.get()
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra})),
            "overrides.yaml": OmegaConf.to_yaml(hydra.overrides.task)}


def _rank_main(config: dict, run: RunContext, shared: dict[str, str] | None = None) -> float:
    """One rank of a ``trainer.nproc`` (or ``trainer.nnodes``) run (a process the elastic launcher spawned)."""
    global _CONTEXT
    _CONTEXT = run
    if shared is None:
        rank_logging(Path(run.output_dir) / f"{run.job_name}.log", int(os.environ.get("RANK", "0")))
        return train(OmegaConf.create(config))
    dist = _claim_for_the_job(config, run, shared)
    try:
        return train(OmegaConf.create(config))
    except MlcError as err:
        if dist.is_main and getattr(err, "before_training", False):
            discard_unused_run_dir(Path(run.output_dir))  # this job's own files, and only if nothing else
        raise


def _claim_for_the_job(config: dict, run: RunContext, hydra_files: dict[str, str]) -> DistContext:
    """The global rank 0 of a ``trainer.nnodes`` run claims the shared run directory (``claim_run_dir``: a
    second, unrelated run there is refused as ever), writes ``.hydra/`` and opens the log; every rank hears
    the outcome, so that a refusal is the same one line from every node, not a rank waiting for rank 0.
    The process group started here is the one ``train`` uses."""
    dist = DistContext.from_env(config["trainer"]["device"])
    run_dir = Path(run.output_dir)
    resuming = resumes(run_dir, config["trainer"].get("resume"))
    error = claim_run_dir(run_dir, resuming=resuming) if dist.is_main else None
    error = dist.broadcast_object(error)
    if error:
        dist.close()
        refused = MlcError(f"hydra.run.dir={run.output_dir!r}: {error}")
        refused.before_training = True  # (and nothing of this job's was written there)
        raise refused
    if dist.is_main:
        run.output_subdir = ".hydra"
        (run_dir / ".hydra").mkdir(exist_ok=True)
        for name, text in hydra_files.items():
            (run_dir / ".hydra" / name).write_text(text)
    rank_logging(run_dir / f"{run.job_name}.log", dist.rank)
    return dist


def discard_unused_run_dir(run_dir: Path) -> bool:
    """Remove the folder made for a run that was refused before training: only its own files (``.hydra/``,
    the job log, the claim ``.mlc-run``) and only if that is all it holds; then empty date folders above it."""
    if not run_dir.is_dir() or run_dir.is_symlink() or not (HydraConfig.initialized() or _CONTEXT is not None):
        return False
    run = context()
    if any(p.name not in {run.output_subdir, f"{run.job_name}.log", RUN_OWNER} for p in run_dir.iterdir()):
        return False  # something else is in there: not ours to remove
    logging.shutdown()  # the job log is open
    import shutil

    shutil.rmtree(run_dir)  # (it never follows a symlink inside)
    folder = run_dir.parent
    while folder.name != "runs" and folder != folder.parent:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            break
        folder = folder.parent
    return True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _output_dir() -> Path:
    return Path(context().output_dir)


def _choice(group: str) -> str | None:
    return context().choices.get(group)


NAMED = ("loss", "loss.lam", "backbone", "dataset", "dataset.negative_ratio", "seed")  # in every default run name


def _default_run_name(config: dict, loss_name: str, run: RunContext) -> str:
    """What tells runs apart in the dashboard: ``any_bce λ=0.02 neg=0.8 cnn_small digits s0``, a trial's job
    number first (``#3 ...``, its folder) and any other swept value after (``lr=0.001``)."""
    lam, ratio = config["loss"].get("lam"), config["dataset"].get("negative_ratio")
    parts = [loss_name, *([f"λ={lam:.4g}"] if isinstance(lam, int | float) else []),
             *([f"neg={ratio:g}"] if isinstance(ratio, int | float) else []),
             config["backbone"]["name"], _choice("dataset") or "data", f"s{config['seed']}"]
    if run.multirun:
        swept = [_short_override(o) for o in run.overrides if o.split("=")[0].lstrip("+~") not in NAMED
                 and not o.split("=")[0].lstrip("+~").startswith(("experiment", "hparams_search", "hydra"))]
        parts = [f"#{run.job_num}", *parts, *swept]
    return " ".join(parts)


def _short_override(override: str) -> str:
    """'loss.lam=0.0302852515' -> 'lam=0.03029' (run names stay readable in the dashboard)."""
    key, _, value = override.partition("=")
    try:
        value = f"{float(value):.4g}" if "." in value or "e" in value else value
    except ValueError:
        pass
    return f"{key.split('.')[-1]}={value}"


def _disabled(settings):
    from dataclasses import replace

    return replace(settings, enabled=False)
