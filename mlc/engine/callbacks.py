"""Small callbacks around the training loop: checkpointing, progress lines, tracking, score files.

The loop (``mlc.engine.trainer``) only trains and evaluates; what happens around it is a list of
callbacks, each with one job. Every hook runs on every rank (a callback that writes checks
``trainer.dist.is_main`` itself; ``Checkpointer`` gathers each rank's RNG state, a collective).
The order of the list is the order of the calls: the standard list puts the checkpoint first, so
that a later callback that stops the run (pruning) loses nothing.

Hooks (all optional: subclass ``Callback`` and override what you need):
- ``on_fit_start(trainer)``;
- ``on_health_check(trainer, window)``: every ``trainer.log_every_n_steps`` optimizer steps, after
  the loss of those steps was found finite (``window``: their mean loss, a float on the host);
- ``on_epoch_end(trainer, record, improved)``: after validation; ``record`` is what gets logged;
- ``on_interrupt(trainer)``: a stop signal arrived; the loop stops after this hook;
- ``on_test_end(trainer, test)``: the best checkpoint was tested (``TestResult``);
- ``on_fit_end(trainer, result)``: training (and the test, if any) finished (``FitResult``; not called when
  the run was interrupted, pruned or failed).

A run whose best checkpoint's validation predictions are degenerate (``trainer.best_degenerate``: the same
label set on nearly every image, or every class on nearly every negative one; ``mlc.metrics.DEGENERATE_RULES``)
gets a WARNING line (``ProgressLog``) and the MLflow tag ``mlc.degenerate=<rule>`` (``TrackingCallback``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlc.engine import checkpoint as ckpt
from mlc.errors import NonFiniteLossError
from mlc.metrics import per_class_report
from mlc.scores import write_scores

if TYPE_CHECKING:
    from mlc.engine.trainer import FitResult, TestResult, Trainer

log = logging.getLogger("mlc.trainer")
DEGENERATE_TAG = "mlc.degenerate"  # MLflow tag of a run whose best checkpoint's val predictions are degenerate


class Callback:
    """No-op hooks; see the module docstring for when each runs."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_health_check(self, trainer: Trainer, window: float) -> None: ...
    def on_epoch_end(self, trainer: Trainer, record: dict[str, float], improved: bool) -> None: ...
    def on_interrupt(self, trainer: Trainer) -> None: ...
    def on_test_end(self, trainer: Trainer, test: TestResult) -> None: ...
    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None: ...


class Checkpointer(Callback):
    """``last.pt`` after every epoch, every ``every_n_steps`` optimizer steps and on a stop signal;
    ``best.pt`` when the monitored metric improved. Writes are atomic (``checkpoint.save_atomic``), and
    never from non-finite weights: the previous checkpoint stays the last good one."""

    def __init__(self, config: dict | None = None, every_n_steps: int = 0):
        self.config, self.every_n_steps = config or {}, int(every_n_steps)

    def on_health_check(self, trainer: Trainer, window: float) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer, "last")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float], improved: bool) -> None:
        self.save(trainer, "last")
        if improved:
            self.save(trainer, "best")

    def on_interrupt(self, trainer: Trainer) -> None:
        self.save(trainer, "last")

    def save(self, trainer: Trainer, name: str) -> None:
        state = trainer.state_dict()  # every rank: it gathers each rank's RNG state
        floats = {n: t for n, t in trainer.module.state_dict().items() if t.is_floating_point()}
        finite = torch.stack([t.isfinite().all() for t in floats.values()])  # one device sync below
        if not bool(finite.all()):  # (the same on every rank: DDP keeps the weights equal)
            bad = [n for n, ok in zip(floats, finite.tolist(), strict=True) if not ok]
            path = trainer.ckpt_dir / f"{name}.pt"
            kept = f"{path} is untouched" if path.exists() else f"no {name}.pt was written"
            raise NonFiniteLossError(f"the weights became non-finite ({bad[0]} first) at epoch {trainer.epoch + 1}, "
                                     f"step {trainer.step_in_epoch}: {kept}; try a lower optimizer.lr or "
                                     f"trainer.grad_clip_norm")
        if not trainer.dist.is_main:
            return
        state |= {"config": self.config, "mlflow_run_id": trainer.run_id}
        ckpt.save_atomic(state, trainer.ckpt_dir / f"{name}.pt")


class ProgressLog(Callback):
    """One line per health check (when it falls inside an epoch), per epoch and for the test."""

    def on_health_check(self, trainer: Trainer, window: float) -> None:
        if trainer.dist.is_main and trainer.step_in_epoch < trainer.batches_per_epoch:
            log.info("epoch %d step %d/%d  loss %.4f  lr %.3g", trainer.epoch + 1, trainer.step_in_epoch,
                     trainer.batches_per_epoch, window, trainer.lr())

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float], improved: bool) -> None:
        if not trainer.dist.is_main:
            return
        ema = f"  ema: f1 {record['val_ema/f1_macro']:.4f}  mAP {record['val_ema/map']:.4f}" \
            if "val_ema/map" in record else ""
        log.info("epoch %d/%d  train_loss %.4f  val: f1 %.4f  f2 %.4f  mAP %.4f  f1_neg %.4f  loss %.4f%s  "
                 "| %.1fs, %.0f img/s%s", record["epoch"], trainer.s.max_epochs, record["train/loss"],
                 record["val/f1_macro"], record["val/f2_macro"], record["val/map"], record["val/f1_neg"],
                 record["val/loss"], ema, record["train/seconds"], record["train/samples_per_s"],
                 f"  * best {trainer.s.monitor} {record[trainer.s.monitor]:.4f}" if improved else "")

    def on_test_end(self, trainer: Trainer, test: TestResult) -> None:
        if not trainer.dist.is_main:
            return
        m = test.metrics
        log.info("test (best epoch %d): f1 %.4f  f2 %.4f  mAP %.4f  f1_neg %.4f", trainer.best_epoch,
                 m["f1_macro"], m["f2_macro"], m["map"], m["f1_neg"])
        if test.thresholds is not None:
            log.info("test at per-class thresholds tuned for %s on val: f1 %.4f  f2 %.4f  f1_neg %.4f",
                     trainer.s.tune_thresholds, m["tuned/f1_macro"], m["tuned/f2_macro"], m["tuned/f1_neg"])

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        flag = trainer.best_degenerate
        if trainer.dist.is_main and flag is not None:
            log.warning("the best checkpoint (epoch %d, %s = %.4f) is degenerate, rule %s (share %.1f%%): on val at "
                        "threshold %s, %s; the model barely tells images apart, yet %s picked it (%s=%s)",
                        result.best_epoch, trainer.s.monitor, result.best_value, flag.reason, 100 * flag.share,
                        trainer.s.threshold, flag.detail, trainer.s.monitor, DEGENERATE_TAG, flag.reason)


class TrackingCallback(Callback):
    """Epoch and test metrics to the tracker (MLflow), from rank 0; the run id goes into checkpoints."""

    def __init__(self, tracker: Any):
        self.tracker = tracker

    def on_fit_start(self, trainer: Trainer) -> None:
        trainer.run_id = getattr(self.tracker, "run_id", None)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float], improved: bool) -> None:
        if trainer.dist.is_main:
            self.tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))

    def on_test_end(self, trainer: Trainer, test: TestResult) -> None:
        if trainer.dist.is_main:
            self.tracker.log_metrics({f"test/{k}": v for k, v in test.metrics.items()}, step=trainer.best_epoch)
            if test.tuned_val is not None:
                self.tracker.log_metrics({f"val/tuned/{k}": v for k, v in test.tuned_val.items()},
                                         step=trainer.best_epoch)

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        if trainer.dist.is_main and trainer.best_degenerate is not None:
            self.tracker.set_tags({DEGENERATE_TAG: trainer.best_degenerate.reason})


class ScoresWriter(Callback):
    """``thresholds.json``, ``per_class_test.json`` (AP, F1, ... with support per class) and, with
    ``save_scores``, the best checkpoint's ``scores/{val,test}.csv`` beside the run."""

    def __init__(self, save_scores: bool = True):
        self.save_scores = save_scores

    def on_test_end(self, trainer: Trainer, test: TestResult) -> None:
        if not trainer.dist.is_main:
            return
        s, names = trainer.s, list(trainer.data.splits["train"].class_names)
        meta = {"threshold": s.threshold, "class_groups": trainer.class_groups,
                "class_weights": trainer.data.class_weights, "run_dir": str(trainer.run_dir.resolve()),
                "checkpoint": str((trainer.ckpt_dir / "best.pt").resolve()), "epoch": trainer.best_epoch,
                "weights": "ema" if trainer.monitors_ema else "model",
                "mlflow_run_id": trainer.run_id, "created_by": "mlc trainer"}
        thresholds = test.thresholds
        if thresholds is not None:
            meta |= {"thresholds": thresholds.tolist(), "thresholds_tuned_for": s.tune_thresholds,
                     "thresholds_tuned_on": "val"}
            tuned = {k: meta[k] for k in ("thresholds_tuned_for", "thresholds_tuned_on")}
            write_json(trainer.run_dir / "thresholds.json", {"class_names": names, **tuned,
                                                              "thresholds": thresholds.tolist()})
        rows = per_class_report(test.test.probs, test.test.targets, names, s.threshold, thresholds,
                                trainer.class_groups)
        write_json(trainer.run_dir / "per_class_test.json", {"split": "test", "epoch": trainer.best_epoch,
                                                              "classes": rows})
        if self.save_scores:
            for split, scored in (("test", test.test), ("val", test.val)):
                if scored is not None:
                    write_scores(trainer.run_dir / "scores" / f"{split}.csv",
                                 trainer.data.splits[split].instance_ids(), scored.probs, scored.targets, names,
                                 meta | {"split": split})


def standard_callbacks(settings: Any, tracker: Any = None, config: dict | None = None) -> list[Callback]:
    """What ``mlc train`` runs with: checkpoints, score files, tracking and progress lines."""
    callbacks: list[Callback] = [Checkpointer(config, settings.checkpoint_every_n_steps),
                                 ScoresWriter(settings.save_scores)]
    if tracker is not None:
        callbacks.append(TrackingCallback(tracker))
    return [*callbacks, ProgressLog()]


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_plain))
    os.replace(tmp, path)


def _plain(x: object) -> object:
    if isinstance(x, (np.generic, torch.Tensor)):
        return x.item() if x.ndim == 0 else x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")
