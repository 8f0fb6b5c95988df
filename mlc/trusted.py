"""Which stored configs may be rebuilt: the guard between a checkpoint file and ``hydra.utils.instantiate``.

A checkpoint carries the resolved config of its run, and ``mlc.cli.evaluate`` rebuilds data, model and
loss from it with Hydra. ``torch.load(weights_only=True)`` only makes *unpickling* safe: the config it
returns is plain data, but Hydra turns any ``_target_`` in it into an import and a call, so a crafted
file naming ``os.system`` (or ``mlc.tracking.subprocess.run``, found by attribute lookup) would run it.

``check_stored_config`` therefore accepts only what mlc itself writes, compared as exact strings
before anything is imported (importing an arbitrary module can itself run code):

- ``_target_`` values that occur in the project's own config groups (every YAML file under ``conf/``);
- ``albumentations.<Name>`` for a transform or compose class of albumentations, the one form the
  dataset pipelines use (``albumentations.Compose``, ``albumentations.HorizontalFlip``, ...);
- ``torch.optim.<Name>`` for an optimiser class;
- Hydra's own keys with values of their type, and plain YAML values (no OmegaConf interpolation: the
  trainer stores a resolved config, and ``${oc.env:...}`` or a resolver would read or run things).

``mlc.engine.checkpoint.load`` calls it, so every reader of a checkpoint (evaluate, resume, the
trainer's best-checkpoint reload) gets a vetted config or a one-line ``CheckpointError``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, NoReturn

import yaml

from mlc.errors import CheckpointError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
CONVERT_MODES = frozenset({"none", "partial", "object", "all"})  # hydra.types.ConvertMode values
PLAIN_VALUES = (str, bool, int, float, type(None))  # what OmegaConf.to_container(resolve=True) leaves

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_KEY = re.compile(r"[\w/-]+")  # printed as `a.b`; anything else as `a['odd key']`
_SUSPECT = "(a crafted or foreign checkpoint?)"
_FOREIGN = f"not one of mlc's config targets {_SUSPECT}"


def check_stored_config(config: Any, source: str) -> None:
    """Raise ``CheckpointError`` unless every node of ``config`` is something mlc itself would store.

    ``source`` names where the config came from (``checkpoint /x/last.pt``); the error names it, the
    dotted key and the value, in one line.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: refusing to build its config: a {type(config).__name__}, not a mapping")
    _check_node(config, "", source)


def is_allowed_target(target: str) -> bool:
    """Whether ``target`` is one of the callables mlc's configs build (exact string, checked before import)."""
    if target in conf_targets():
        return True
    module, _, name = target.rpartition(".")
    if not _IDENTIFIER.fullmatch(name) or name.startswith("_"):
        return False
    if module == "albumentations":
        return _is_albumentations_transform(name)
    if module == "torch.optim":
        return _is_optimizer(name)
    return False


@functools.lru_cache(maxsize=1)
def conf_targets() -> frozenset[str]:
    """Every ``_target_`` string written in the project's config groups (all YAML files under ``conf/``)."""
    targets: set[str] = set()
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        _collect_targets(yaml.safe_load(path.read_text(encoding="utf-8")), targets)
    return frozenset(targets)


def _collect_targets(node: Any, into: set[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            into.add(node["_target_"])
        for value in node.values():
            _collect_targets(value, into)
    elif isinstance(node, list):
        for value in node:
            _collect_targets(value, into)


def _is_albumentations_transform(name: str) -> bool:
    import albumentations
    from albumentations.core.composition import BaseCompose
    from albumentations.core.transforms_interface import BasicTransform

    obj = getattr(albumentations, name, None)
    return isinstance(obj, type) and issubclass(obj, (BasicTransform, BaseCompose))


def _is_optimizer(name: str) -> bool:
    import torch.optim

    obj = getattr(torch.optim, name, None)
    return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)


def _check_node(node: Any, path: str, source: str) -> None:
    """Walk dicts and lists depth-first; refuse the first node that mlc would not have written."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                _refuse(source, f"{path or 'the config'} key {_short(key)}", None, f"keys must be strings {_SUSPECT}",
                        show=False)
            here = _join(path, key)
            if key.startswith("_") and key.endswith("_"):
                _check_hydra_key(key, value, here, source)
            _check_node(value, here, source)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_node(value, f"{path}[{i}]", source)
    elif not isinstance(node, PLAIN_VALUES):
        _refuse(source, path, None, f"a {type(node).__name__}, not a plain config value {_SUSPECT}",
                show=False)
    elif isinstance(node, str) and "${" in node:
        _refuse(source, path, node, f"an interpolation, which a stored (resolved) config never holds {_SUSPECT}")


def _check_hydra_key(key: str, value: Any, path: str, source: str) -> None:
    if key not in HYDRA_KEYS:
        _refuse(source, path, value, f"not a Hydra key mlc writes ({', '.join(sorted(HYDRA_KEYS))}) {_SUSPECT}")
    if key == "_target_" and not (isinstance(value, str) and is_allowed_target(value)):
        _refuse(source, path, value, _FOREIGN)
    if key in ("_partial_", "_recursive_") and not isinstance(value, bool):
        _refuse(source, path, value, "must be true or false")
    if key == "_convert_" and not (isinstance(value, str) and value in CONVERT_MODES):
        _refuse(source, path, value, f"must be one of {', '.join(sorted(CONVERT_MODES))}")
    if key == "_args_" and not isinstance(value, list):
        _refuse(source, path, value, "must be a list")


def _join(path: str, key: str) -> str:
    part = key if _PLAIN_KEY.fullmatch(key) else f"[{key!r}]"
    return part if not path else f"{path}{part}" if part.startswith("[") else f"{path}.{part}"


def _short(value: Any, limit: int = 120) -> str:
    """``repr(value)`` on one line and at most ``limit`` characters: the error stays one line."""
    text = repr(value)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse(source: str, path: str, value: Any, reason: str, show: bool = True) -> NoReturn:
    shown = f"{path}={_short(value)}" if show else path
    raise CheckpointError(f"{source}: refusing to build {shown}: {reason}")
