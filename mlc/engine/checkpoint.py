"""Checkpoints: written atomically, readable with ``torch.load(weights_only=True)``.

A checkpoint holds everything needed to continue bit-for-bit: model, optimizer, scheduler and
grad-scaler state, the position in training (epoch and step within it), the best metric so far,
the metric history, every rank's RNG states, the resolved config and the MLflow run id. Writing
goes to a temporary file in the same directory, fsync'ed, then ``os.replace``d over the target:
a crash mid-write leaves the previous checkpoint intact, never a torn file.

``load`` is the one way in: after the format check it vets the stored config with
``mlc.trusted.check_stored_config`` (only mlc's own ``_target_``s, no interpolation), so whoever
rebuilds objects from it (evaluate, resume, the best-checkpoint reload) never runs a crafted target.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlc.errors import CheckpointError
from mlc.flat import flatten
from mlc.stores import os_error_reason
from mlc.trusted import check_stored_config

FORMAT_VERSION = 1
# Config keys that must match for a checkpoint to be resumed (the rest, e.g. max_epochs, may change).
RESUME_MUST_MATCH = ("dataset", "sampler", "backbone", "loss", "optimizer", "scheduler", "seed", "trainer.batch_size",
                     "trainer.precision", "trainer.accumulate_grad_batches", "trainer.ema_decay")


def save_atomic(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full or read-only disk: say so in one line; the previous file is intact
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise CheckpointError(f"cannot write checkpoint {path}: {os_error_reason(err)}; {kept}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path`` (or ``<run dir>/checkpoints/last.pt``), its config vetted.

    ``mmap``: map the tensors from the file instead of reading them (a check that only needs the config
    and the position costs almost nothing, whatever the model's size).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt" if (path / "checkpoints").is_dir() else path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: not a readable checkpoint (an empty file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        detail = (str(err).strip().splitlines() or ["the file ends early: truncated?"])[0][:200]
        raise CheckpointError(f"checkpoint {path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{detail})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: not an mlc checkpoint of format {FORMAT_VERSION}")
    check_stored_config(state.get("config") or {}, f"checkpoint {path}")
    state["path"] = str(path)
    return state


def eval_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The weights a checkpoint's metrics were measured on: its EMA when the run monitored ``val_ema/*``."""
    return state["ema"]["weights"] if state.get("eval_weights") == "ema" else state["model"]


def check_resumable(state: dict, resolved: dict) -> None:
    """Refuse to resume a checkpoint trained with a different data/model/loss/optimiser setup."""
    old, new = flatten(state.get("config") or {}), flatten(resolved)
    diffs = [f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
             if any(k == p or k.startswith(p + ".") for p in RESUME_MUST_MATCH) and not k.endswith("cache_dir")
             and old.get(k) != new.get(k)]
    if diffs:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise CheckpointError(f"cannot resume {state['path']}: {diffs[0]}{more}; pass the run's original overrides")


def capture_rng() -> dict[str, Any]:
    """RNG states as bytes, ints and tuples only: they pass through ``all_gather_object`` (which cannot
    carry tensors in every torch version) and load under ``torch.load(weights_only=True)``."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (np_name, np_keys.astype(np.uint32).tobytes(), int(np_pos), int(np_has_gauss), float(np_gauss)),
             "torch": torch.get_rng_state().numpy().tobytes()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.frombuffer(keys, dtype=np.uint32).copy(), pos, has_gauss, gauss))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(s) for s in state["cuda"]])


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
