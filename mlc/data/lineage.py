"""What a run trained and was tested on, as MLflow dataset inputs: a name, a digest and a profile per split.

In the dashboard's runs table two runs at 50% and at 90% negatives look alike unless their data says so. Each
split becomes an MLflow dataset input (its *Dataset* column) with

- a **name** that says the dataset and the controls that changed it (``digits neg=0.8``, ``coco longtail``);
- a **digest** of exactly the split's items and labels: the instance ids (image paths) and the label matrix,
  and for in-memory data whose ids are only indices (the built-in digits) the pixels too, so another
  negative ratio, long-tail draw or data seed gives another digest, and the same split the same one;
- a **profile**: instances, negatives and the per-class counts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

DIGEST_CHARS = 16


def split_digest(dataset: Any) -> str:
    """Hash of a split's items and labels (``MultiLabelDataset``): its ids, its targets, and the pixels of data
    that has no ids of its own."""
    digest = hashlib.sha256()
    targets = np.ascontiguousarray(dataset.targets, dtype=np.uint8)
    digest.update(f"{targets.shape}".encode())
    digest.update(targets.tobytes())
    if getattr(dataset, "ids", None) is not None:
        digest.update("\0".join(dataset.instance_ids()).encode())
    elif getattr(dataset, "images", None) is not None:  # synthetic data: its ids are indices, its pixels are it
        digest.update(np.ascontiguousarray(dataset.images).tobytes())
    digest.update("\0".join(dataset.class_names).encode())
    return digest.hexdigest()[:DIGEST_CHARS]


def dataset_name(choice: str, dataset_config: dict[str, Any]) -> str:
    """``<dataset option>`` and the controls that change its items: ``digits neg=0.8 longtail single_positive``."""
    parts = [choice]
    ratio = dataset_config.get("negative_ratio")
    if ratio is not None:
        parts.append(f"neg={ratio:g}" if isinstance(ratio, int | float) else f"neg={ratio}")
    parts += [flag for flag in ("longtail", "single_positive") if dataset_config.get(flag)]
    return " ".join(parts)


def profile(stats: Any) -> dict[str, Any]:
    """A split's profile as the dashboard shows it (``DatasetStats``)."""
    return {"instances": stats.num_samples, "negatives": stats.negative_count,
            "negative_ratio": round(stats.negative_ratio, 6),
            "class_counts": dict(zip(stats.class_names, stats.class_counts, strict=True))}


def dataset_inputs(name: str, datasets: dict[str, Any], stats: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(name, digest, profile JSON, split) per split, for ``MLflowTracker.log_datasets``."""
    return [(name, split_digest(ds), json.dumps(profile(stats[split])), split) for split, ds in datasets.items()]
