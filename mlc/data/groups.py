"""Head / medium / tail class groups from training counts (the long-tailed MLC convention).

head: more than 100 training instances; medium: 20 to 100; tail: fewer than 20 (VOC-LT/COCO-LT,
and the probability-guided loss of seed 002). One definition for losses, metrics, stats and reports.
"""

from __future__ import annotations

from collections.abc import Sequence

GROUPS = ("head", "medium", "tail")


def class_groups(class_counts: Sequence[float], head: int = 100, tail: int = 20) -> list[str]:
    """The group of each class: ``head`` if n > head, ``tail`` if n < tail, else ``medium``."""
    return ["head" if n > head else "tail" if n < tail else "medium" for n in class_counts]
