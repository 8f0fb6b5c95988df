"""``flatten``: a nested config as dotted keys, the one form in which mlc logs and compares configs
(MLflow params, the resume check, study fingerprints, sweep grids and search spaces)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole values. ``tree`` may be a mapping, an
    OmegaConf node (resolved first) or None (nothing)."""
    if OmegaConf.is_config(tree):
        tree = OmegaConf.to_container(tree, resolve=True)
    out: dict[str, Any] = {}
    for key, value in (tree or {}).items():
        if isinstance(value, Mapping):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
