"""Build config objects with ``hydra.utils.instantiate`` and validate the whole config before compute.

``check_config`` constructs everything that is cheap to construct (trainer and tracking settings,
the dataset source, the loss with placeholder statistics, the optimizer and scheduler on a dummy
parameter) and checks the backbone name against timm's registry, so that a typo or an out-of-range
value fails in well under a second with one line naming the key, e.g.::

    error: loss.lam=-0.1: λ must be in [0, 1]

Constructors raise ``ConfigError`` naming their own argument; ``build`` puts the config group in
front (``lam`` -> ``loss.lam``) and unwraps Hydra's ``InstantiationException``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mlc.errors import ConfigError, MlcError, config_scope, require

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
class CheckedConfig:
    """The settings objects ``check_config`` built on the way; the task reuses them."""

    trainer: Any
    tracking: Any
    dataset: Any


def check_config(cfg: DictConfig) -> CheckedConfig:
    for group in GROUPS:
        require(group in cfg and cfg[group] is not None, group, None, f"the config has no '{group}' group selected")
    require(isinstance(cfg.get("seed"), int), "seed", cfg.get("seed"), "must be an integer")
    trainer = build(cfg.trainer, "trainer")
    tracking = build(cfg.tracking, "tracking")
    dataset = build(cfg.dataset, "dataset")
    from mlc.models import check_backbone

    with config_scope("backbone"):
        require("name" in cfg.backbone, "name", None, "a backbone config needs a timm model name")
        check_backbone(cfg.backbone.name, bool(cfg.backbone.get("pretrained", False)), cfg.backbone.get("weights_file"))
    num_classes = len(dataset.class_names)
    make_order = build(cfg.sampler, "sampler")
    with config_scope("sampler"):  # the order's own checks (per_class, ...) run when it sees targets
        make_order(targets=np.vstack([np.eye(num_classes), np.zeros((1, num_classes))]), seed=0)
    build(cfg.loss, "loss", class_counts=[1.0] * num_classes, negative_count=1, num_samples=num_classes + 1)
    probe = torch.nn.Linear(1, 1)
    try:
        optimizer = build(cfg.optimizer, "optimizer")(probe.parameters())
    except ValueError as err:  # torch's own range checks, e.g. "Invalid learning rate: -1"
        if isinstance(err, ConfigError):
            raise
        raise ConfigError("optimizer", cfg.optimizer.get("_target_"), str(err)) from None
    schedule_log = logging.getLogger("mlc.optim")  # its notes (a shortened warm-up) belong to the real build
    schedule_log.disabled, was_disabled = True, schedule_log.disabled
    try:
        with config_scope("scheduler"):
            build(cfg.scheduler, "scheduler")(optimizer, steps_per_epoch=1, max_epochs=trainer.max_epochs)
    finally:
        schedule_log.disabled = was_disabled
    return CheckedConfig(trainer=trainer, tracking=tracking, dataset=dataset)


def compose_config(overrides: list[str] | None = None, hydra: bool = False) -> DictConfig:
    """The config that ``python -m mlc.train <overrides>`` would run, composed in-process (with the
    ``hydra`` node when ``hydra=True``)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf_dir = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("train", overrides=overrides or [], return_hydra_config=hydra)


HYDRA_FLAGS_THAT_CHANGE_THE_CONFIG = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")


def check_command_line(argv: list[str]) -> str | None:
    """Compose the command line's plain overrides once; a one-line error for a typo, else ``None``.

    Hydra reports ``loss.lamb=0.1`` or ``loss=hinge`` in several lines; this names the key in one.
    Sweep overrides (``seed=0,1,2``, ``interval(...)``) are left to Hydra and the sweepers.
    """
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if any(a.split("=")[0] in HYDRA_FLAGS_THAT_CHANGE_THE_CONFIG for a in argv):
        return None
    args = [a for a in argv if not a.startswith("-")]
    try:
        plain = [o.input_line for o in OverridesParser.create().parse_overrides(args) if not o.is_sweep_override()]
        compose_config(plain, hydra=True)
    except OverrideParseException:
        return None  # Hydra's own parser message is precise; let it speak
    except MissingConfigException as err:
        found = re.search(r"Could not find '([^/']+)/([^']+)'", str(err))
        if found is None:
            return f"error: {str(err).splitlines()[0]}"
        options = ", ".join(getattr(err, "options", None) or [])
        return (f"error: {found.group(1)}={found.group(2)}: no such option in conf/{found.group(1)}/"
                + (f" (available: {options})" if options else ""))
    except ConfigCompositionException as err:
        found = re.search(r"Could not override '([^']+)'", str(err))
        if found and "not in struct" in str(err.__cause__ or ""):
            key = found.group(1)
            return f"error: {key}: no such key in the config (check the spelling; +{key}=<value> adds a new key)"
        return f"error: {str(err).splitlines()[0]}"
    except OmegaConfBaseException as err:
        return f"error: {str(err).splitlines()[0]}"
    return None


def report_and_exit(err: MlcError, code: int) -> None:
    """The CLI's answer to a user error: one line on stderr (and in the run's log file), no traceback."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (err,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(code)


class PreflightCheck(Callback):
    """Hydra callback: validate the config, and the sweep if its sweeper can, before a multirun starts.

    Runs before any other callback (see ``conf/hydra/default.yaml``), so a bad sweep fails in a second
    without opening an MLflow parent run or a study. A sweeper class opts in with a ``preflight(config)``
    classmethod that raises ``ConfigError``.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import get_class

        task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            check_config(task_cfg)
            target = OmegaConf.select(config, "hydra.sweeper._target_")
            sweeper_cls = get_class(target) if target else None
            if hasattr(sweeper_cls, "preflight"):
                sweeper_cls.preflight(config)
        except ConfigError as err:
            report_and_exit(err, 2)
