"""Scores files: one row per instance with its id, one score column per class and its labels, if known.

``mlc infer`` and the trainer write them; ``mlc evaluate`` and ``mlc report`` read them. The format is
plain so that any tool reads it without mlc:

- columns ``id``, then ``score:<class>`` for every class (the sigmoid probability), then
  ``label:<class>`` (0/1) when the split has labels;
- CSV (scores written with 9 significant digits, which round-trips float32 exactly, so metrics
  computed from the file equal those computed from the model's output), or Parquet when the file
  name ends in ``.parquet``;
- a sidecar ``<file>.json`` with what the rows cannot say: the class names in order, the split, the
  decision threshold(s), the classes' head/medium/tail groups and importance weights (so that every
  logged metric can be recomputed), and where the scores came from (run, checkpoint).

Reading never executes anything from the file: CSV and Parquet are parsed as data, the sidecar as JSON.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlc.errors import MlcError

FORMAT_VERSION = 1
SCORE, LABEL = "score:", "label:"


class ScoresError(MlcError):
    """A scores file that cannot be read (named, with the reason)."""


@dataclass
class Scores:
    ids: list[str]
    scores: np.ndarray  # (N, K) float32 probabilities
    labels: np.ndarray | None  # (N, K) uint8, or None for unlabelled images
    class_names: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def thresholds(self) -> float | np.ndarray:
        """The decision threshold recorded with the scores (per class when tuned), else 0.5."""
        tuned = self.meta.get("thresholds")
        return np.asarray(tuned, dtype=np.float64) if tuned is not None else float(self.meta.get("threshold", 0.5))


def meta_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_scores(path: str | Path, ids, scores: np.ndarray, labels: np.ndarray | None, class_names: list[str],
                 meta: dict | None = None) -> Path:
    """Write the table (and its sidecar) atomically: a reader never sees half a file."""
    path = Path(path)
    scores = np.asarray(scores, dtype=np.float32)
    ids = [str(i) for i in ids]
    if scores.ndim != 2 or scores.shape != (len(ids), len(class_names)):
        raise ValueError(f"scores {scores.shape} must be ({len(ids)} ids, {len(class_names)} classes)")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.uint8)
        if labels.shape != scores.shape:
            raise ValueError(f"labels {labels.shape} must match scores {scores.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["id", *(SCORE + c for c in class_names), *((LABEL + c for c in class_names) if labels is not None
                                                           else ())]
    if path.suffix == ".parquet":
        _atomic(path, lambda tmp: _write_parquet(tmp, columns, ids, scores, labels, class_names))
    else:
        _atomic(path, lambda tmp: _write_csv(tmp, columns, ids, scores, labels))
    info = {"format": FORMAT_VERSION, "class_names": list(class_names), "rows": len(ids),
            "labelled": labels is not None, **(meta or {})}
    _atomic(meta_path(path), lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2, default=_plain)))
    return path


def read_scores(path: str | Path) -> Scores:
    """Read a scores file written by ``write_scores`` (or by hand in the same layout: the sidecar is optional)."""
    path = Path(path)
    if not path.is_file():
        raise ScoresError(f"{path}: no such scores file")
    meta = {}
    if meta_path(path).is_file():
        try:
            meta = json.loads(meta_path(path).read_text())
        except (OSError, ValueError) as err:
            raise ScoresError(f"{meta_path(path)}: not a readable JSON sidecar ({err})") from None
        if not isinstance(meta, dict):
            raise ScoresError(f"{meta_path(path)}: expected a JSON object")
    table = _read_table(path)
    header = [str(h) for h in table.columns]
    if not header or header[0] != "id":
        raise ScoresError(f"{path}: the first column must be 'id' (got {header[:1]})")
    names = [h[len(SCORE):] for h in header if h.startswith(SCORE)]
    label_names = [h[len(LABEL):] for h in header if h.startswith(LABEL)]
    if not names:
        raise ScoresError(f"{path}: no '{SCORE}<class>' column")
    if label_names and label_names != names:
        raise ScoresError(f"{path}: label columns {label_names} do not match score columns {names}")
    if meta.get("class_names") not in (None, names):
        raise ScoresError(f"{path}: its columns name the classes {names}, its sidecar {meta['class_names']}")
    unknown = [h for h in header[1:] if not h.startswith((SCORE, LABEL))]
    if unknown:
        raise ScoresError(f"{path}: unknown column {unknown[0]!r} (expected id, {SCORE}<class>, {LABEL}<class>)")
    scores = _numeric(table, [SCORE + c for c in names], path).astype(np.float32)
    labels = None
    if label_names:
        values = _numeric(table, [LABEL + c for c in names], path)
        if ((values != 0) & (values != 1)).any():
            raise ScoresError(f"{path}: labels must be 0 or 1")
        labels = values.astype(np.uint8)
    ids = [str(i) for i in table["id"].tolist()]
    if not np.isfinite(scores).all():
        row, col = map(int, np.argwhere(~np.isfinite(scores))[0])
        raise ScoresError(f"{path}: row {row + 1} ({ids[row]}): {SCORE}{names[col]} is {scores[row, col]}; scores "
                          "must be probabilities in [0, 1]")
    outside = (scores < 0) | (scores > 1)
    if outside.any():  # logits or percentages would move every threshold-based metric without a word
        row, col = map(int, np.argwhere(outside)[0])
        raise ScoresError(f"{path}: row {row + 1} ({ids[row]}): {SCORE}{names[col]} = {scores[row, col]:g} is outside "
                          f"[0, 1]; scores are probabilities (apply a sigmoid to logits), {int(outside.sum())} such "
                          "value(s)")
    seen: dict[str, int] = {}
    for row, item in enumerate(ids):
        if item in seen:  # a repeated image would count twice in every metric
            raise ScoresError(f"{path}: id {item!r} is repeated (rows {seen[item] + 1} and {row + 1}); each image "
                              "must appear once")
        seen[item] = row
    return Scores(ids, scores, labels, names, meta)


def _read_table(path: Path):
    """The file as a pandas DataFrame (fast C parsers for 100k × 1000; ids stay strings)."""
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    except Exception as err:  # pandas/pyarrow raise their own types for foreign, torn or ragged files
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        raise ScoresError(f"{path}: not a readable {kind} scores file ({str(err).splitlines()[0]})") from None


def _numeric(table, columns: list[str], path: Path) -> np.ndarray:
    import pandas as pd

    block = table[columns].apply(pd.to_numeric, errors="coerce")
    bad = block.isna().to_numpy()
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise ScoresError(f"{path}: row {row + 1} ({table['id'].iloc[row]}): {columns[col]} is not a number "
                          f"({table[columns[col]].iloc[row]!r})")
    return block.to_numpy(dtype=np.float64)


def _write_csv(tmp: str, columns, ids, scores, labels) -> None:
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, row_id in enumerate(ids):
            row = [row_id, *(f"{v:.9g}" for v in scores[i].tolist())]
            if labels is not None:
                row += labels[i].tolist()
            writer.writerow(row)


def _write_parquet(tmp: str, columns, ids, scores, labels, class_names) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array(ids, pa.string())] + [pa.array(scores[:, k]) for k in range(len(class_names))]
    if labels is not None:
        arrays += [pa.array(labels[:, k]) for k in range(len(class_names))]
    pq.write_table(pa.Table.from_arrays(arrays, names=columns), tmp)


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
