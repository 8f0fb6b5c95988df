"""Build config objects with ``hydra.utils.instantiate`` and validate the whole config before compute.

``compose_experiment`` (``check_config``) constructs everything that is cheap to construct, once,
for training, evaluation and inference alike (trainer and tracking settings, the dataset source,
the sampler, the optimizer and scheduler factories, tried on a dummy parameter; the loss with
placeholder statistics) and checks the backbone name against timm's registry, so that a typo or
an out-of-range value fails in well under a second with one line naming the key, e.g.::

    error: loss.lam=-0.1: λ must be in [0, 1]

Constructors raise ``ConfigError`` naming their own argument; ``build`` puts the config group in
front (``lam`` -> ``loss.lam``) and unwraps Hydra's ``InstantiationException``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mlc.engine import checkpoint as ckpt
from mlc.engine.distributed import wants_cuda
from mlc.engine.settings import optimizer_steps_per_epoch
from mlc.errors import ConfigError, MlcError, config_scope, require
from mlc.optim import param_groups
from mlc.stores import MARKER, MARKER_TEXT, os_error_reason

log = logging.getLogger("mlc")

GROUPS = ("dataset", "sampler", "backbone", "loss", "optimizer", "scheduler", "trainer", "tracking")


def build(node: DictConfig, scope: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``, with any config mistake reported as ``ConfigError`` under ``scope``."""
    target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
    try:
        with config_scope(scope):
            return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise cause.under(scope) from None
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            field = str(cause).split("unexpected keyword argument")[-1].strip(" '\"")
            raise ConfigError(f"{scope}.{field}", node.get(field), f"unknown field for {target}") from None
        if "Error locating target" in str(err):
            root = cause.__cause__ if cause is not None and cause.__cause__ is not None else cause
            detail = f" ({type(root).__name__}: {root})".splitlines()[0] if root is not None else ""
            raise ConfigError(f"{scope}._target_", target, f"cannot be imported{detail}") from None
        reason = f"{type(cause).__name__}: {cause}" if cause else str(err).splitlines()[0]
        raise ConfigError(scope, target, reason.splitlines()[0]) from None


@dataclass
class Experiment:
    """Every object a config describes, built once by ``compose_experiment`` and shared by training,
    evaluation, inference and the config check.

    The model and the loss are built on demand: the model needs the dataset's class count and the
    loss the training split's statistics, which are only known once the data is loaded.
    """

    cfg: DictConfig
    trainer: Any  # TrainerSettings
    tracking: Any  # TrackingSettings (None when composed without tracking, e.g. for inference)
    dataset: Any  # DatasetSource
    make_order: Any  # (targets, seed) -> the sampler's epoch order
    optimizer: Any  # (param groups) -> torch.optim.Optimizer
    scheduler: Any  # (optimizer, steps_per_epoch, max_epochs) -> LR scheduler

    @property
    def num_classes(self) -> int:
        return len(self.dataset.class_names)

    def build_model(self) -> torch.nn.Module:
        return build(self.cfg.backbone, "backbone", num_classes=self.num_classes)

    def build_loss(self, train_stats: Any) -> torch.nn.Module:
        """The loss, with the class counts, negative count and size of the training split it sees."""
        return build(self.cfg.loss, "loss", class_counts=train_stats.class_counts,
                     negative_count=train_stats.negative_count, num_samples=train_stats.num_samples)

    def build_optimizer(self, module: torch.nn.Module, loss_fn: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The optimizer over the model's parameter groups and, in a group of their own (no weight decay,
        the loss's ``optimizer_options``), a loss's learnable parameters (ROLE's label estimates)."""
        optimizer = self.optimizer(param_groups(module, float(self.cfg.optimizer.get("weight_decay", 0.0))))
        loss_params = [p for p in loss_fn.parameters() if p.requires_grad] if loss_fn is not None else []
        if loss_params:
            optimizer.add_param_group({"params": loss_params, "weight_decay": 0.0,
                                       **getattr(loss_fn, "optimizer_options", {})})
        return optimizer

    def build_scheduler(self, optimizer: torch.optim.Optimizer, epoch_length: int, world_size: int = 1):
        """The LR schedule, stepped once per optimizer step (``optimizer_steps_per_epoch`` per epoch)."""
        return self.scheduler(optimizer, steps_per_epoch=optimizer_steps_per_epoch(self.trainer, epoch_length,
                                                                                  world_size),
                              max_epochs=self.trainer.max_epochs)


# The models mlc registers in timm itself (``mlc.models``): known to exist without importing timm, so that a
# config mistake in a run of the default backbone is reported before timm's ~3 s import (tests/test_models.py).
OWN_MODELS = ("mlc_cnn_small",)


@dataclass(frozen=True)
class _PlaceholderStats:
    """Training statistics for the config check: one instance of each class and one negative. The
    loss's own field checks run on them before any data is built; the real loss is built later with
    the real statistics."""

    class_counts: list
    negative_count: int
    num_samples: int


def compose_experiment(cfg: DictConfig, tracking: bool = True) -> Experiment:
    """Validate the whole config and build every cheap object once (settings, dataset source,
    sampler, optimizer and scheduler factories); the backbone name is checked against timm's
    registry and the loss's fields with placeholder statistics. A mistake raises ``ConfigError``
    naming its key, in well under a second and before any data or compute."""
    for group in GROUPS:
        if group == "tracking" and not tracking:
            continue
        require(group in cfg and cfg[group] is not None, group, None, f"the config has no '{group}' group selected")
    require(isinstance(cfg.get("seed"), int), "seed", cfg.get("seed"), "must be an integer")
    trainer = build(cfg.trainer, "trainer")
    tracking_settings = build(cfg.tracking, "tracking") if tracking else None
    dataset = build(cfg.dataset, "dataset")
    with config_scope("backbone"):
        require("name" in cfg.backbone, "name", None, "a backbone config needs a timm model name")
        pretrained = bool(cfg.backbone.get("pretrained", False))
        if cfg.backbone.name not in OWN_MODELS or pretrained:
            from mlc.models import check_backbone  # deferred: loads timm (~3 s, torchvision and dynamo with it)

            check_backbone(cfg.backbone.name, pretrained, cfg.backbone.get("weights_file"))
    num_classes = len(dataset.class_names)
    make_order = build(cfg.sampler, "sampler")
    with config_scope("sampler"):  # the order's own checks (per_class, ...) run when it sees targets
        make_order(targets=np.vstack([np.eye(num_classes), np.zeros((1, num_classes))]), seed=0)
    optimizer_factory = build(cfg.optimizer, "optimizer")
    scheduler_factory = build(cfg.scheduler, "scheduler")
    experiment = Experiment(cfg=cfg, trainer=trainer, tracking=tracking_settings, dataset=dataset,
                            make_order=make_order, optimizer=optimizer_factory, scheduler=scheduler_factory)
    experiment.build_loss(_PlaceholderStats([1] * num_classes, 1, num_classes + 1))
    probe = torch.nn.Linear(1, 1)
    try:
        optimizer = optimizer_factory(probe.parameters())
    except (ValueError, TypeError) as err:  # torch's own checks, e.g. "Invalid learning rate: -1"
        if isinstance(err, ConfigError):
            raise
        raise optimizer_error(cfg.optimizer, err) from None
    schedule_log = logging.getLogger("mlc.optim")  # its notes (a shortened warm-up) belong to the real build
    schedule_log.disabled, was_disabled = True, schedule_log.disabled
    try:
        with config_scope("scheduler"):
            scheduler_factory(optimizer, steps_per_epoch=1, max_epochs=trainer.max_epochs)
    finally:
        schedule_log.disabled = was_disabled
    return experiment


def check_config(cfg: DictConfig) -> Experiment:
    """The config check before any compute of training (the task, the multirun preflight, the sweep's
    probes): ``compose_experiment``, and positive images (``mlc infer`` may score an all-negative split)."""
    experiment = compose_experiment(cfg)
    ratio = cfg.dataset.get("negative_ratio")
    require(ratio is None or ratio < 1, "dataset.negative_ratio", ratio, "every image would be negative: no "
            "positive to learn from or to evaluate (mAP and F1 undefined); use a ratio below 1")
    return experiment


# How torch's optimizers name their arguments in their errors ("Invalid learning rate: -1").
OPTIMIZER_WORDS = (("learning rate", "lr"), ("epsilon", "eps"), ("beta", "betas"), ("weight_decay", "weight_decay"),
                   ("nesterov", "nesterov"), ("momentum", "momentum"), ("dampening", "dampening"))


def optimizer_error(node: DictConfig, err: Exception) -> ConfigError:
    """A ConfigError naming the field (``optimizer.lr``) that the optimizer's own check rejected."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    fields = [k for k in node if not str(k).startswith("_")]
    text = message.lower()
    named = next((f for words, f in OPTIMIZER_WORDS if words in text and f in fields), None)
    named = named or next((f for f in fields if f in text), None)
    if named is None and isinstance(err, TypeError):  # e.g. a string where a number belongs
        named = next((f for f in fields if isinstance(node[f], str)), None)
    if named is None:
        return ConfigError("optimizer", node.get("_target_"), message)
    return ConfigError(f"optimizer.{named}", node[named], f"{node.get('_target_')} refuses it ({message})")


def compose_config(overrides: list[str] | None = None, hydra: bool = False) -> DictConfig:
    """The config that ``python -m mlc.cli.train <overrides>`` would run, composed in-process (with the
    ``hydra`` node when ``hydra=True``)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf_dir = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("train", overrides=overrides or [], return_hydra_config=hydra)


def check_command_line(argv: list[str]) -> str | None:
    """Compose the command line's plain overrides once; a one-line error for a typo, else ``None``.

    Hydra reports ``loss.lamb=0.1``, ``loss=hinge``, a malformed override (``loss.lam=[``) or a broken
    config file (YAML) in several lines or a traceback; this names the key, override or file in one.
    Sweep overrides (``seed=0,1,2``, ``interval(...)``) are left to Hydra and the sweepers.
    """
    return _compose_command_line(argv)[1]


def check_before_hydra(argv: list[str]) -> tuple[str | None, int, list[str]]:
    """What ``python -m mlc.cli.train`` checks before Hydra writes anything: (error line or None, exit code,
    extra overrides).

    Besides ``check_command_line``: the outputs folder must take a write (a full disk is named, not met
    as a traceback minutes later); a single run's config (``check_config``, a GPU for ``cuda``) is checked
    before a folder exists to leave behind; a resumed run must be resumable with this config and keeps
    its run directory and log (its new Hydra config goes to ``.hydra/resume-<time>/``); and rank 0 claims
    the run directory (``claim_run_dir``; a new run's path is pinned, so that Hydra writes where the
    claim is), then marks the outputs folder as mlc's. Under torchrun, a rank > 0 given the same
    ``hydra.run.dir`` waits for its job's rank 0 to hold that claim before Hydra writes there (else a
    rank 1 that is quicker than rank 0 would make the folder look taken, and rank 0 would be refused).

    ``trainer.nnodes > 1`` (mlc's launcher on every node): the nodes' processes run before any rank
    exists and all name the same folder, so none of them claims it here; it must be given
    (``hydra.run.dir``: every node must find the run, and a dated default differs per node), is only
    checked not to be another run's, and Hydra writes nothing into it: the job's global rank 0 claims
    it, and writes ``.hydra/`` and the log, once the rendezvous has made it rank 0 (``mlc.train``).
    """
    cfg, error, args = _compose_command_line(argv)
    if error or cfg is None:
        return error, 2, []
    if args.cfg or args.info or args.help or args.hydra_help or args.shell_completion:
        return None, 0, []  # Hydra prints and exits: no run, nothing written
    outputs = str(OmegaConf.select(cfg, "paths.outputs"))
    error = check_writable(outputs, "paths.outputs")
    if error or args.multirun:
        return error, 2, []  # (a multirun's config: PreflightCheck, once Hydra composed it)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    resume = OmegaConf.select(cfg, "trainer.resume")
    try:
        wants_cuda(check_config(task).trainer.device)
        if resume:  # the config and position only (mmap); the task reads the weights
            ckpt.check_resumable(ckpt.load(resume, mmap=True), OmegaConf.to_container(task, resolve=True))
    except MlcError as err:
        return f"error: {err}", 2 if isinstance(err, ConfigError) else 1, []
    explicit = any(o.split("=", 1)[0] == "hydra.run.dir" for o in args.overrides)
    nnodes = OmegaConf.select(cfg, "trainer.nnodes") or 1
    if nnodes > 1 and "RANK" in os.environ:
        return (f"error: trainer.nnodes={nnodes}: is for mlc's own launcher (mlc train on every node); under "
                f"torchrun, its --nnodes says how many nodes"), 2, []
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun, rank 0 owns the run directory
        error = _await_rank_zero(Path(str(OmegaConf.select(cfg, "hydra.run.dir")))) if explicit else None
        return (f"error: hydra.run.dir={str(OmegaConf.select(cfg, 'hydra.run.dir'))!r}: {error}", 1, []) \
            if error else (None, 0, [])
    resume_dir = _run_dir_of(resume) if resume else None
    run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))) if explicit or resume_dir is None else resume_dir
    resuming = resumes(run_dir, resume)
    if nnodes > 1:
        if not explicit:
            return (f"error: trainer.nnodes={nnodes}: needs hydra.run.dir=<a folder every node shares> (the "
                    f"same on every node; a dated default differs per node)"), 2, []
        error = run_dir_taken(run_dir, resuming) if run_dir.is_dir() else None
        if error:
            return f"error: hydra.run.dir={str(run_dir)!r}: {error}", 2, []
        mark_outputs(outputs)
        return None, 0, ["hydra.output_subdir=null", "hydra/job_logging=stdout"]  # (rank 0 writes both)
    error = claim_run_dir(run_dir, resuming=resuming)
    if error:
        return f"error: hydra.run.dir={str(run_dir)!r}: {error}", 2, []
    mark_outputs(outputs)
    if explicit or resume_dir is None:
        return None, 0, [] if explicit else [f"hydra.run.dir={quote_override(str(run_dir))}"]
    from datetime import datetime

    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    return None, 0, [f"hydra.run.dir={quote_override(str(resume_dir))}", f"hydra.output_subdir=.hydra/resume-{stamp}"]


RUN_OWNER = ".mlc-run"  # in every run directory; the run writing there holds a lock on it
CLAIM_WAIT_S = 120  # how long a torchrun rank > 0 waits for its rank 0 to claim the run directory


def claim_run_dir(run_dir: Path, resuming: bool = False) -> str | None:
    """Make ``run_dir`` this process's own before Hydra writes there, or say in one line why not: an
    exclusive ``flock`` on its ``.mlc-run``, held until the process exits, so that of two runs started at
    once exactly one gets it, and a crashed run's lock goes with it. Unless resuming, the folder must hold
    nothing else (before and after the lock); a refused run writes nothing into it. A rank of a torchrun
    (or ``trainer.nnodes``) job also writes which job it is, for its other ranks (``_await_rank_zero``)."""
    import fcntl

    if run_dir.is_dir() and (error := run_dir_taken(run_dir, resuming)):
        return error
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / RUN_OWNER, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        error = run_dir_taken(run_dir, resuming)
    except BlockingIOError:
        error = "another mlc run is writing there now; choose a new directory"
    if error:
        os.close(fd)
        return error
    os.ftruncate(fd, 0)  # (a resumed run's file held the previous job's line)
    job = _job_of_ranks()
    os.write(fd, b"This folder is one mlc run's; the process writing it holds a lock on this file.\n"
             + (f"job: {job}\n".encode() if job else b""))
    return None  # (fd stays open, and the lock held, until the process exits)


def resumes(run_dir: Path, resume: object) -> bool:
    """Whether ``trainer.resume`` (a checkpoint or run folder, or nothing) continues the run in ``run_dir``."""
    resume_dir = _run_dir_of(resume) if resume else None
    return resume_dir is not None and resume_dir == run_dir.resolve()


def run_dir_taken(run_dir: Path, resuming: bool) -> str | None:
    """Why ``run_dir`` is another run's (it holds more than the claim file), or ``None``; resuming: never."""
    held = [] if resuming else sorted(p.name + "/" * p.is_dir() for p in run_dir.iterdir() if p.name != RUN_OWNER)
    return (f"refusing to overwrite another run there (it holds {', '.join(held[:4])}); choose a new directory, "
            f"or continue that run with trainer.resume={run_dir}") if held else None


def _job_of_ranks() -> str | None:
    """What every rank of one torchrun job, on any node, sees alike and no other job does (its rendezvous
    id, rank 0's address and port, the restart): ``None`` outside torch's elastic launcher."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    env = os.environ
    return (f"{env['TORCHELASTIC_RUN_ID']} {env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')} "
            f"restart {env.get('TORCHELASTIC_RESTART_COUNT', '0')}")


def _await_rank_zero(run_dir: Path) -> str | None:
    """A torchrun rank > 0 sharing rank 0's ``hydra.run.dir``: wait until rank 0 of the same job holds the
    claim (its line in ``.mlc-run``) before Hydra writes there; ``None`` then, or why not after
    ``CLAIM_WAIT_S`` (rank 0 was refused or failed; torchrun usually stops this rank before)."""
    import time

    job = _job_of_ranks()
    if job is None:
        return None  # (not torch's launcher: nothing to recognise rank 0's claim by)
    deadline = time.monotonic() + CLAIM_WAIT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if f"job: {job}\n" in (run_dir / RUN_OWNER).read_text():
                return None
        time.sleep(0.2)
    return f"rank 0 of this job did not claim it within {CLAIM_WAIT_S} s (see rank 0's error)"


def mark_outputs(folder: str) -> None:
    """Mark ``folder`` as an mlc outputs folder (``mlc.cli.clean`` cleans no other); an existing mark stays."""
    with contextlib.suppress(FileExistsError), open(Path(folder) / MARKER, "x") as fh:
        fh.write(MARKER_TEXT)


def check_writable(folder: str, key: str) -> str | None:
    """One line if ``folder`` cannot be created or take a small write (read-only, full, no permission)."""
    path = Path(folder)
    probe = path / f".mlc-write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)  # a page: a full file system refuses it even with inodes left
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(probe) else ""
        return f"error: {key}={folder!r}: cannot write there: {os_error_reason(err)}{where}"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return None


def _run_dir_of(resume: object) -> Path | None:
    """The run directory a ``trainer.resume`` value belongs to (``None`` if it names no checkpoint)."""
    path = Path(str(resume))
    if path.is_dir():
        return path.resolve() if (path / "checkpoints").is_dir() else None
    if path.is_file() and path.parent.name == "checkpoints":
        return path.parent.parent.resolve()
    return None


def quote_override(value: str) -> str:
    """A Hydra override value that stays one string whatever characters it holds (paths, URLs, JSON)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _compose_command_line(argv: list[str]) -> tuple[DictConfig | None, str | None, Any]:
    """(the config, an error line, Hydra's parsed arguments); neither config nor error where Hydra is left
    to speak: its own usage errors, another primary config (``--config-name``, ``--config-path``)."""
    import argparse
    import re

    import yaml
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    parser, overrides, grammar = get_args_parser(), [], OverridesParser.create()
    parser.exit_on_error = False
    try:
        args, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError:
        return None, None, None
    if unknown or args.config_name or args.config_path or args.experimental_rerun:
        return None, None, args
    for arg in args.overrides:
        try:
            overrides += grammar.parse_overrides([arg])
        except OverrideParseException as err:
            reason = str(err).splitlines()[0].replace(f"LexerNoViableAltException: {arg}", "an unexpected character")
            return None, f"error: override {arg!r}: not a valid Hydra override ({reason})", args
        if not overrides[-1].key_or_group:
            return None, f"error: override {arg!r}: no key before '=' (key=value)", args
    plain = [o.input_line for o in overrides if not o.is_sweep_override()]
    if args.config_dir:  # where Hydra puts it too: after conf/, before its schemas
        if not Path(args.config_dir).is_dir():
            return None, f"error: --config-dir={args.config_dir!r}: no such directory", args
        if any(o.key_or_group == "hydra.searchpath" for o in overrides):
            return None, None, args
        plain.append(f"hydra.searchpath=[{quote_override(f'file://{Path(args.config_dir).resolve()}')}]")
    try:
        return compose_config(plain, hydra=True), None, args
    except yaml.YAMLError as err:  # a broken config file: where and what, as YAML says it
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None) or str(err).splitlines()[0]
        where = f"{mark.name}, line {mark.line + 1}" if mark else "a config file"
        return None, f"error: {where}: not valid YAML ({problem})", args
    except MissingConfigException as err:
        found = re.search(r"Could not find '([^/']+)/([^']+)'", str(err))
        if found is None:
            return None, f"error: {str(err).splitlines()[0]}", args
        options = ", ".join(getattr(err, "options", None) or [])
        return None, (f"error: {found.group(1)}={found.group(2)}: no such option in conf/{found.group(1)}/"
                      + (f" (available: {options})" if options else "")), args
    except ConfigCompositionException as err:
        found = re.search(r"Could not override '([^']+)'", str(err))
        if found and "not in struct" in str(err.__cause__ or ""):
            key = found.group(1)
            return None, (f"error: {key}: no such key in the config (check the spelling; +{key}=<value> adds a new "
                          f"key)"), args
        return None, f"error: {str(err).splitlines()[0]}", args
    except OmegaConfBaseException as err:
        return None, f"error: {str(err).splitlines()[0]}", args


def report_and_exit(err: MlcError, code: int) -> None:
    """The CLI's answer to a user error: one line on stderr (and in the run's log file), no traceback."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (err,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(code)


#END
