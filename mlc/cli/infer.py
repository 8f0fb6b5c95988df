"""``mlc infer RUN [--split test | --data images.csv] [--checkpoint best|last] --output scores.csv``.

Score a trained run on a split of its dataset, or on new images, and write a scores file
(``mlc.scores``: one row per instance, its id, one score column per class and its labels when
known; Parquet when the output's name ends in ``.parquet``).

RUN is a run directory, a checkpoint file or an MLflow run id (looked up in the tracking store:
its local run directory if it still exists, else its logged checkpoint artifact). The checkpoint
carries its run's resolved config, so the data and the model are rebuilt exactly as trained, by
the same composition function as training (``mlc.config.compose_experiment``), after
``mlc.trusted`` has vetted the config: a foreign checkpoint cannot choose code to run. Dataset
options can be changed for inference, as Hydra-style overrides after RUN::

    mlc infer outputs/runs/2026-12-01/10-00-00 --split test --output test.csv
    mlc infer <run> --split val dataset.negative_ratio=0.9 --output val-0.9.csv
    mlc infer <run> --data new_images.csv --output new.csv    # a CSV with a `path` column

``--data``: a CSV whose ``path`` column lists images (relative to the CSV's folder) and that may
have one 0/1 column per class of the run (then the scores file has labels and can be evaluated).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from mlc.errors import ConfigError, DataError, MlcError
from mlc.scores import write_scores
from mlc.stores import opening

log = logging.getLogger("mlc")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class RunNotFound(MlcError):
    """RUN names no checkpoint, run directory or MLflow run."""


@dataclass
class LoadedRun:
    """A checkpoint turned back into its objects, ready to score."""

    checkpoint: Path
    state: dict
    experiment: object  # mlc.config.Experiment
    model: object  # torch.nn.Module with the checkpoint's weights

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.resolve().parent.parent


def resolve_checkpoint(run: str, which: str = "best", tracking_uri: str | None = None) -> Path:
    """The checkpoint file RUN names (see the module docstring); ``which`` picks best.pt or last.pt in a run."""
    path = Path(run)
    if path.is_file():
        return path
    if path.is_dir():
        wanted = path / "checkpoints" / f"{which}.pt"
        if wanted.is_file():
            return wanted
        have = sorted(p.name for p in (path / "checkpoints").glob("*.pt")) if (path / "checkpoints").is_dir() else []
        raise RunNotFound(f"{path}: no checkpoints/{which}.pt in this run directory"
                          + (f" (it has {', '.join(have)}; --checkpoint {have[0][:-3]})" if have else ""))
    if RUN_ID.match(run):
        return _checkpoint_of_mlflow_run(run, which, tracking_uri)
    raise RunNotFound(f"RUN={run!r}: not a checkpoint file, a run directory or an MLflow run id")


def _checkpoint_of_mlflow_run(run_id: str, which: str, tracking_uri: str | None) -> Path:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    try:
        with opening(uri):
            client = MlflowClient(tracking_uri=uri)
            run = client.get_run(run_id)
    except MlflowException as err:
        raise RunNotFound(f"MLflow run {run_id}: not found in {uri} ({str(err).splitlines()[0]})") from None
    local = Path(run.data.tags.get("mlc.run_dir", "")) / "checkpoints" / f"{which}.pt"
    if run.data.tags.get("mlc.run_dir") and local.is_file():
        return local
    import contextlib
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    target = Path(tempfile.mkdtemp(prefix=f"mlc-{run_id[:8]}-"))  # laid out as a run dir: checkpoints/, thresholds
    (target / "checkpoints").mkdir()
    try:
        path = Path(client.download_artifacts(run_id, f"checkpoints/{which}.pt", str(target / "checkpoints")))
        with contextlib.suppress(MlflowException, OSError):  # a run from before tuned thresholds has none
            client.download_artifacts(run_id, "thresholds.json", str(target))
        return path
    except (MlflowException, OSError) as err:
        raise RunNotFound(f"MLflow run {run_id}: its run directory is gone and it has no checkpoints/{which}.pt "
                          f"artifact (tracking.log_checkpoint logs it) ({str(err).splitlines()[0]})") from None


def default_tracking_uri() -> str:
    """The store a plain ``mlc train`` logs to (conf/tracking/mlflow.yaml under the default outputs)."""
    from mlc.config import compose_config  # deferred: mlc.config loads torch and Hydra; `mlc infer --help` does not

    return str(OmegaConf.select(compose_config([]), "tracking.tracking_uri"))


def load_run(checkpoint: str | Path, dataset_overrides: list[str] | None = None) -> LoadedRun:
    """Rebuild a checkpoint's experiment (config vetted by ``ckpt.load``) and its model with the weights."""
    from mlc.config import compose_experiment  # deferred: mlc.config loads torch and Hydra; `mlc infer --help` does not
    from mlc.engine import checkpoint as ckpt  # deferred: loads torch; `mlc infer --help` does not

    state = ckpt.load(checkpoint)
    cfg = OmegaConf.create(state["config"])
    for override in dataset_overrides or []:
        key, sep, value = override.partition("=")
        if not sep or not key.startswith("dataset."):
            raise ConfigError(key or override, value or None,
                              "only dataset options can change for inference (dataset.<field>=<value>)")
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ConfigError(key, value, "no such field in the run's dataset config")
        OmegaConf.update(cfg, key, _yaml_value(value), force_add=False)
    experiment = compose_experiment(cfg, tracking=False)
    model = experiment.build_model()
    model.load_state_dict(ckpt.eval_weights(state))  # the EMA weights when the run monitored them
    return LoadedRun(Path(checkpoint), state, experiment, model)


def _yaml_value(text: str):
    """An override's value as YAML reads it (``0.9`` a float, ``true`` a bool, ``[1, 3]`` a list)."""
    import yaml

    return yaml.safe_load(text) if text.strip() else text


def training_stats(experiment) -> object:
    """The training split's label statistics (for class groups and the loss), without decoding images."""
    source = experiment.dataset
    return source.label_stats("train") if hasattr(source, "label_stats") else source.load("train").stats()


def images_from_csv(csv_path: Path, experiment) -> object:
    """A split of new images listed in a CSV (``path`` column; optional 0/1 class columns)."""
    from mlc.data.images import (  # deferred: loads torch; `mlc infer --help` does not
        MAX_IMAGE_PIXELS,
        FileImages,
        decoded_images,
    )
    from mlc.data.source import binary_cell, read_csv  # deferred: loads torch; `mlc infer --help` does not

    source = experiment.dataset
    names = list(source.class_names)
    header, rows = read_csv(csv_path, ["path"])
    if not rows:
        raise DataError(f"{csv_path}: lists no images")
    present = [c for c in names if c in header]
    if present and present != names:
        raise DataError(f"{csv_path}:1: has label columns for {present} but not for {sorted(set(names) - set(present))}"
                        f" (label every class of the run, or none)")
    unknown = [c for c in header if c != "path" and c not in names]
    if unknown:
        raise DataError(f"{csv_path}:1: unknown column {unknown[0]!r} (the run's classes: {', '.join(names)})")
    paths = [(csv_path.parent / r["path"]).resolve() for _, r in rows]
    missing = [(line, p) for (line, _), p in zip(rows, paths, strict=True) if not p.is_file()]
    if missing:
        raise DataError(f"{csv_path}:{missing[0][0]}: image not found: {missing[0][1]}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    size = int(getattr(source, "image_size", None) or source.params["image_size"])
    pixels, errors = decoded_images(paths, size, cache_dir=None,
                                    max_pixels=int(getattr(source, "max_image_pixels", None) or MAX_IMAGE_PIXELS))
    if errors:
        first = min(errors)
        raise DataError(f"{csv_path}:{rows[first][0]}: cannot decode {paths[first]} ({errors[first]})")
    labels = (np.array([[binary_cell(r[c], c, f"{csv_path}:{line}") for c in names] for line, r in rows],
                       dtype=np.uint8) if present else np.zeros((len(rows), len(names)), dtype=np.uint8))
    dataset = FileImages(pixels, np.arange(len(rows)), labels, names, source.mean, source.std,
                         getattr(source, "eval_transform", None), ids=[r["path"] for _, r in rows])
    dataset.labelled = bool(present)
    return dataset


def infer(loaded: LoadedRun, split: str | None = "test", data: Path | None = None, device: str = "cpu",
          batch_size: int | None = None):
    """(ids, SplitScores, labelled, meta) of a split or of the images in ``data``."""
    from mlc.data.groups import class_groups  # deferred: loads torch; `mlc infer --help` does not
    from mlc.engine.distributed import DistContext  # deferred: loads torch; `mlc infer --help` does not
    from mlc.engine.evaluation import score_split  # deferred: loads torch; `mlc infer --help` does not

    exp = loaded.experiment
    dataset = images_from_csv(data, exp) if data is not None else exp.dataset.load(split)
    labelled = getattr(dataset, "labelled", True)
    train_stats = training_stats(exp)
    loss_fn = exp.build_loss(train_stats) if labelled else None
    dist = DistContext.from_env(device) if device != "cpu" else DistContext()
    scored = score_split(loaded.model.to(dist.device), dataset, dist, batch_size or exp.trainer.eval_batch_size,
                         loss_fn=loss_fn.to(dist.device) if loss_fn is not None else None)
    meta = {"split": split if data is None else f"csv:{data}", "threshold": float(exp.trainer.threshold),
            "class_groups": class_groups(train_stats.class_counts),
            "class_weights": getattr(exp.dataset, "class_weights", None),
            "run_dir": str(loaded.run_dir), "checkpoint": str(loaded.checkpoint.resolve()),
            "epoch": int(loaded.state.get("epoch", 0)), "mlflow_run_id": loaded.state.get("mlflow_run_id"),
            "created_by": "mlc infer"}
    thresholds_file = loaded.run_dir / "thresholds.json"
    if loaded.checkpoint.name == "best.pt" and thresholds_file.is_file():
        import json

        tuned = json.loads(thresholds_file.read_text())
        if tuned.get("class_names") == list(dataset.class_names):
            meta |= {"thresholds": [float(t) for t in tuned["thresholds"]],
                     "thresholds_tuned_for": tuned.get("thresholds_tuned_for"),
                     "thresholds_tuned_on": tuned.get("thresholds_tuned_on")}
    return dataset.instance_ids(), scored, labelled, dataset.class_names, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlc infer", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("run", metavar="RUN", help="run directory, checkpoint file or MLflow run id")
    parser.add_argument("overrides", nargs="*", metavar="dataset.KEY=VALUE", help="dataset options to change")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--split", choices=["train", "val", "test"], default=None, help="default: test")
    where.add_argument("--data", type=Path, help="a CSV of new images (a `path` column, optional class columns)")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--output", "-o", type=Path, required=True, help="scores file (.csv, or .parquet)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--tracking-uri", default=None, help="where to find an MLflow run id (default: mlc's store)")
    args, extra = parser.parse_known_args(argv)  # overrides may come after the options too
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides += extra
    from mlc.config import check_writable  # deferred: mlc.config loads torch and Hydra; `mlc infer --help` does not

    if args.output.is_dir():
        return _fail(f"--output={str(args.output)!r} is a directory; name a scores file (e.g. scores.csv)")
    if args.output.suffix not in (".csv", ".parquet"):
        return _fail(f"--output={str(args.output)!r}: the name must end in .csv or .parquet")
    error = check_writable(str(args.output.parent), "--output")
    if error:
        return _fail(error.removeprefix("error: "))
    try:
        checkpoint = resolve_checkpoint(args.run, args.checkpoint, args.tracking_uri)
        loaded = load_run(checkpoint, args.overrides)
        if args.output.resolve().is_relative_to(loaded.run_dir.resolve()):  # its scores, checkpoints, results
            return _fail(f"--output={str(args.output)!r} is inside the run's own folder {loaded.run_dir}, whose files "
                         "are the run's record; write the scores elsewhere")
        ids, scored, labelled, names, meta = infer(loaded, args.split or "test", args.data, args.device,
                                                   args.batch_size)
    except MlcError as err:
        return _fail(str(err))
    write_scores(args.output, ids, scored.probs, scored.targets if labelled else None, names, meta)
    what = meta["split"]
    print(f"wrote {args.output} ({len(ids)} instances x {len(names)} classes, {what}, {checkpoint})")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
