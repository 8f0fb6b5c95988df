"""A plain PyTorch training loop: DDP, AMP, gradient clipping, per-epoch evaluation, checkpoints, resume.

What it guarantees, and how:
- **Exact resume.** The train order is a permutation seeded by (seed, epoch), independent of the
  global RNG; a checkpoint records the epoch, the step within it and every rank's RNG states, so a
  run interrupted anywhere (Ctrl-C / SIGTERM stop at the next step boundary and save ``last``) and
  resumed ends with the same weights and metrics as one that never stopped.
- **Honest DDP metrics.** Validation shards without padding and gathers scores with their indices
  (``mlc.engine.distributed``); BatchNorm buffers are taken from rank 0 first, so every rank
  evaluates the weights that rank 0 checkpoints.
- **Nothing written is lost.** Checkpoints are replaced atomically; a NaN loss stops the run with
  one line naming loss, epoch and step, before the next checkpoint could capture broken weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mlc.data.base import MultiLabelDataset
from mlc.data.groups import class_groups
from mlc.data.samplers import EpochOrder, RandomOrder
from mlc.engine import checkpoint as ckpt
from mlc.engine.distributed import DistContext, ShardSampler
from mlc.engine.evaluation import SplitScores, evaluate, score_split
from mlc.errors import MlcError, NonFiniteLossError, require
from mlc.metrics import METRIC_NAMES, multilabel_metrics, per_class_report, tune_thresholds
from mlc.scores import write_scores

log = logging.getLogger("mlc.trainer")

PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
TUNE_BETA = {"f1": 1.0, "f2": 2.0}  # trainer.tune_thresholds: which F-beta the per-class thresholds maximise
MONITORABLE = tuple(f"val/{m}" for m in (*METRIC_NAMES, "loss", "f2_ciw"))


class TrainingInterrupted(MlcError):
    """SIGINT/SIGTERM arrived; ``last`` was saved and the run can be resumed."""


@dataclass
class TrainerSettings:
    """The ``trainer/`` config group. Validated on construction, before any data or compute."""

    max_epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    device: str = "auto"
    precision: str = "32"
    grad_clip_norm: float | None = None
    monitor: str = "val/f1_macro"
    monitor_mode: str = "max"
    threshold: float = 0.5
    resume: str | None = None
    test_after_fit: bool = True
    log_every_n_steps: int = 0
    tune_thresholds: str | None = "f1"
    save_scores: bool = True
    nproc: int = 1

    def __post_init__(self) -> None:
        require(_int(self.max_epochs) and self.max_epochs >= 1, "max_epochs", self.max_epochs,
                "must be an integer >= 1")
        require(_int(self.batch_size) and self.batch_size >= 2, "batch_size", self.batch_size,
                "must be an integer >= 2 (BatchNorm needs two samples)")
        require(_int(self.eval_batch_size) and self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size,
                "must be an integer >= 1")
        require(_int(self.num_workers) and self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        require(self.device in ("auto", "cpu", "cuda"), "device", self.device, "must be auto, cpu or cuda")
        require(str(self.precision) in PRECISIONS, "precision", self.precision,
                f"must be one of {', '.join(PRECISIONS)}")
        self.precision = str(self.precision)
        require(self.precision != "16-mixed" or (self.device != "cpu" and torch.cuda.is_available()), "precision",
                self.precision, "fp16 AMP needs CUDA (no GPU here); use '32' or 'bf16-mixed' on CPU")
        require(self.grad_clip_norm is None or (isinstance(self.grad_clip_norm, (int, float))
                                                and self.grad_clip_norm > 0),
                "grad_clip_norm", self.grad_clip_norm, "must be > 0, or null for no clipping")
        require(self.monitor in MONITORABLE, "monitor", self.monitor, f"must be one of {', '.join(MONITORABLE)}")
        require(self.monitor_mode in ("max", "min"), "monitor_mode", self.monitor_mode, "must be max or min")
        require(isinstance(self.threshold, (int, float)) and 0 < self.threshold < 1, "threshold", self.threshold,
                "must be in (0, 1)")
        require(_int(self.log_every_n_steps) and self.log_every_n_steps >= 0, "log_every_n_steps",
                self.log_every_n_steps, "must be >= 0")
        require(self.tune_thresholds in (None, *TUNE_BETA), "tune_thresholds", self.tune_thresholds,
                f"must be one of {', '.join(TUNE_BETA)}, or null")
        require(isinstance(self.save_scores, bool), "save_scores", self.save_scores, "must be true or false")
        require(_int(self.nproc) and self.nproc >= 1, "nproc", self.nproc, "must be an integer >= 1")
        require(self.nproc == 1 or self.device != "cuda" or torch.cuda.device_count() >= self.nproc, "nproc",
                self.nproc, f"needs that many GPUs ({torch.cuda.device_count()} visible)")


@dataclass
class FitResult:
    best_value: float
    best_epoch: int
    history: list[dict[str, float]]
    test_metrics: dict[str, float] = field(default_factory=dict)
    run_dir: str = ""


class Trainer:
    """Runs ``fit``; see the module docstring for the guarantees."""

    def __init__(self, settings: TrainerSettings, model: nn.Module, loss_fn: nn.Module,
                 optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer],
                 scheduler_factory: Callable[..., torch.optim.lr_scheduler.LRScheduler],
                 datasets: dict[str, MultiLabelDataset], run_dir: Path, dist: DistContext, seed: int,
                 tracker: Any, config: dict | None = None, loss_name: str = "loss",
                 class_weights: list[float] | None = None, epoch_order: EpochOrder | None = None,
                 callbacks: list[Any] | None = None):
        self.s, self.dist, self.seed, self.tracker = settings, dist, seed, tracker
        self.datasets, self.config, self.loss_name = datasets, config or {}, loss_name
        self.class_weights = class_weights
        self.callbacks = list(callbacks or [])  # objects with on_epoch_end(trainer, record), e.g. pruning
        self.class_groups = class_groups(datasets["train"].stats().class_counts)
        self.device = dist.device
        self.autocast_dtype = PRECISIONS[settings.precision]
        if dist.distributed and (any(True for _ in loss_fn.parameters()) or loss_fn.state_dict()):
            raise MlcError(f"loss '{loss_name}' keeps per-instance state that DDP would not keep in sync across "
                           f"processes; run it in a single process")
        self.module = model.to(self.device)
        self.model = DistributedDataParallel(self.module, device_ids=[dist.local_rank] if self.device.type == "cuda"
                                             else None) if dist.distributed else self.module
        self.loss_fn = loss_fn.to(self.device)
        if settings.monitor == "val/f2_ciw" and class_weights is None:
            raise MlcError("trainer.monitor='val/f2_ciw' needs class-importance weights, which this dataset has not")
        self.epoch_order = epoch_order or RandomOrder(datasets["train"].targets, seed)
        self.train_sampler = ShardSampler(len(datasets["train"]), dist.rank, dist.world_size, order=self.epoch_order,
                                          pad=True)
        per_rank = len(self.train_sampler.shard())
        if per_rank < 2:
            raise MlcError(f"the training split has {len(datasets['train'])} samples: too few for "
                           f"{dist.world_size} process(es)")
        self.steps_per_epoch = per_rank // settings.batch_size + (1 if per_rank % settings.batch_size >= 2 else 0)
        self.optimizer = optimizer_factory(self.module)
        loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if loss_params:  # e.g. ROLE's per-image label estimates, learned with the network
            self.optimizer.add_param_group({"params": loss_params, "weight_decay": 0.0,
                                            **getattr(self.loss_fn, "optimizer_options", {})})
        self.scheduler = scheduler_factory(self.optimizer, steps_per_epoch=self.steps_per_epoch,
                                           max_epochs=settings.max_epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.precision == "16-mixed")
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_value, self.best_epoch = None, -1
        self.history: list[dict[str, float]] = []
        self.epoch_loss_sum, self.epoch_seen = 0.0, 0  # running train loss of the epoch in progress
        # Σ p over positive labels, their count, Σ p over negative labels, their count, per class, for the
        # epoch in progress: the training-probability curves (seed 002, Figure 1). Kept on the device.
        self.prob_sums = torch.zeros(4, len(datasets["train"].class_names), dtype=torch.float64, device=self.device)
        self._stop_signal: str | None = None

    # -- public -------------------------------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint (``trainer.resume``): weights, optimizer, position, RNG, best."""
        self.module.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.best_value, self.best_epoch = state["best_value"], int(state["best_epoch"])
        self.history = list(state["history"])
        self.epoch_loss_sum, self.epoch_seen = float(state["epoch_loss_sum"]), int(state["epoch_seen"])
        sums = state.get("prob_sums")  # per rank (checkpoints before it was recorded start the curves at zero)
        if sums is not None and len(sums) == self.dist.world_size:
            self.prob_sums = sums[self.dist.rank].to(self.device, torch.float64)
        rng = state["rng"]
        if len(rng) != self.dist.world_size:
            log.warning("resuming with %d process(es) from a checkpoint written by %d: the data order "
                        "differs from the original run, so results will not be bit-identical",
                        self.dist.world_size, len(rng))
        ckpt.restore_rng(rng[min(self.dist.rank, len(rng) - 1)])
        self.ckpt_dir = Path(state["path"]).parent
        self.run_dir = self.ckpt_dir.parent
        log.info("resumed from %s at epoch %d, step %d", state["path"], self.epoch + 1, self.step_in_epoch)

    def fit(self) -> FitResult:
        previous = self._install_signal_handlers()
        try:
            while self.epoch < self.s.max_epochs:
                self._run_epoch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        result = FitResult(best_value=float(self.best_value), best_epoch=self.best_epoch, history=self.history,
                           run_dir=str(self.run_dir))
        if self.s.test_after_fit and "test" in self.datasets:
            result.test_metrics = self._test_best()
        return result

    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of the current weights on a whole split (every sample exactly once, any world size)."""
        return evaluate(self.module, self.datasets[split], self.dist, self.s.eval_batch_size, loss_fn=self.loss_fn,
                        threshold=self.s.threshold, class_weights=self.class_weights,
                        num_workers=self.s.num_workers, autocast_dtype=self.autocast_dtype,
                        class_groups=self.class_groups)

    # -- one epoch ----------------------------------------------------------------------------------

    def _run_epoch(self) -> None:
        epoch, skip_steps = self.epoch, self.step_in_epoch
        if hasattr(self.loss_fn, "set_epoch"):
            self.loss_fn.set_epoch(epoch, self.s.max_epochs)
        self.train_sampler.set_epoch(epoch, skip=skip_steps * self.s.batch_size)
        if hasattr(self.datasets["train"], "set_epoch"):  # per-epoch augmentation seeds (exact resume)
            self.datasets["train"].set_epoch(epoch)
        loader = DataLoader(self.datasets["train"], batch_size=self.s.batch_size, sampler=self.train_sampler,
                            num_workers=self.s.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.seed + epoch),
                            persistent_workers=False)
        self.model.train()
        self.loss_fn.train()
        started = time.perf_counter()
        seen_before = self.epoch_seen
        needs_indices = getattr(self.loss_fn, "needs_indices", False)
        for step, batch in enumerate(loader, start=skip_steps):
            if step >= self.steps_per_epoch:
                break  # a trailing batch of one sample: BatchNorm cannot train on it
            x = batch["image"].to(self.device, non_blocking=True)
            y = batch["target"].to(self.device, non_blocking=True)
            with self._autocast():
                logits = self.model(x)
            extra = {"indices": torch.as_tensor(batch["index"], device=self.device)} if needs_indices else {}
            loss = self.loss_fn(logits.float(), y, **extra)
            with torch.no_grad():
                probs = torch.sigmoid(logits.detach().float())
                self.prob_sums += torch.stack([(probs * y).sum(0), y.sum(0), (probs * (1 - y)).sum(0),
                                               (1 - y).sum(0)]).double()
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.s.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.module.parameters(), self.s.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            value = float(loss.detach())
            self.global_step += 1
            self.step_in_epoch = step + 1
            nonfinite, stop = self.dist.any_flags(not math.isfinite(value), self._stop_signal is not None)
            if nonfinite:
                last = self.ckpt_dir / "last.pt"
                kept = f"the last good checkpoint {last} is untouched" if last.exists() else "no checkpoint was written"
                raise NonFiniteLossError(
                    f"loss '{self.loss_name}' became {value} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr={self._lr():.3g}, precision={self.s.precision}): {kept}; try a lower optimizer.lr "
                    f"or trainer.grad_clip_norm")
            self.epoch_loss_sum += value * len(y)
            self.epoch_seen += len(y)
            if stop:
                self._save("last")
                raise TrainingInterrupted(
                    f"interrupted ({self._stop_signal or 'signal on another rank'}) at epoch {epoch + 1}, step "
                    f"{step + 1}; resume with trainer.resume={self.ckpt_dir / 'last.pt'}")
            if self.s.log_every_n_steps and self.global_step % self.s.log_every_n_steps == 0 and self.dist.is_main:
                log.info("epoch %d step %d/%d  loss %.4f  lr %.3g", epoch + 1, step + 1, self.steps_per_epoch,
                         value, self._lr())
        train_seconds = time.perf_counter() - started
        val = self.evaluate("val")
        loss_sum, seen_total, seen_now = self.dist.sum_over_ranks(self.epoch_loss_sum, self.epoch_seen,
                                                                  self.epoch_seen - seen_before)
        record = {"epoch": epoch + 1, "train/loss": loss_sum / max(seen_total, 1), "lr": self._lr(),
                  "train/seconds": train_seconds, "train/samples_per_s": seen_now / train_seconds,
                  **self._train_probabilities(), **{f"val/{k}": v for k, v in val.items()}}
        value = record[self.s.monitor]
        improved = self.best_value is None or (value > self.best_value if self.s.monitor_mode == "max"
                                               else value < self.best_value)
        if improved:
            self.best_value, self.best_epoch = value, epoch + 1
        self.history.append(record)
        self.epoch, self.step_in_epoch = epoch + 1, 0
        self.epoch_loss_sum, self.epoch_seen = 0.0, 0
        self.prob_sums.zero_()
        self._save("last")
        if improved:
            self._save("best")
        if self.dist.is_main:
            self.tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
            log.info("epoch %d/%d  train_loss %.4f  val: f1 %.4f  f2 %.4f  mAP %.4f  f1_neg %.4f  loss %.4f  "
                     "| %.1fs, %.0f img/s%s", epoch + 1, self.s.max_epochs, record["train/loss"],
                     val["f1_macro"], val["f2_macro"], val["map"], val["f1_neg"], val["loss"], train_seconds,
                     record["train/samples_per_s"], f"  * best {self.s.monitor}" if improved else "")
        for callback in self.callbacks:  # after the checkpoints: a callback that stops the run loses nothing
            callback.on_epoch_end(self, record)

    def _test_best(self) -> dict[str, float]:
        """Test metrics of the best checkpoint: at ``trainer.threshold``, and (``trainer.tune_thresholds``)
        at per-class thresholds tuned on the validation split and applied unchanged to test, logged as
        ``val/tuned/<m>`` and ``test/tuned/<m>``; the scores go to ``scores/{val,test}.csv``."""
        best_path = self.ckpt_dir / "best.pt"
        if best_path.exists():
            self.module.load_state_dict(ckpt.load(best_path)["model"])
        test = self.score("test")
        metrics = test.metrics(self.s.threshold, self.class_weights, self.class_groups)
        thresholds, val = None, None
        if self.s.tune_thresholds and "val" in self.datasets:
            val = self.score("val")
            thresholds = tune_thresholds(val.probs, val.targets, beta=TUNE_BETA[self.s.tune_thresholds],
                                         default=self.s.threshold)
            tuned_val = multilabel_metrics(val.probs, val.targets, thresholds, self.class_weights, self.class_groups)
            metrics |= {f"tuned/{k}": v for k, v in multilabel_metrics(
                test.probs, test.targets, thresholds, self.class_weights, self.class_groups).items()}
        if self.dist.is_main:
            self.tracker.log_metrics({f"test/{k}": v for k, v in metrics.items()}, step=self.best_epoch)
            if thresholds is not None:
                self.tracker.log_metrics({f"val/tuned/{k}": v for k, v in tuned_val.items()}, step=self.best_epoch)
            self._write_scores(test, val, thresholds)
            log.info("test (best epoch %d): f1 %.4f  f2 %.4f  mAP %.4f  f1_neg %.4f", self.best_epoch,
                     metrics["f1_macro"], metrics["f2_macro"], metrics["map"], metrics["f1_neg"])
            if thresholds is not None:
                log.info("test at per-class thresholds tuned for %s on val: f1 %.4f  f2 %.4f  f1_neg %.4f",
                         self.s.tune_thresholds, metrics["tuned/f1_macro"], metrics["tuned/f2_macro"],
                         metrics["tuned/f1_neg"])
        return metrics

    def score(self, split: str) -> SplitScores:
        """The current weights' probabilities on a whole split (every sample exactly once) and its loss."""
        return score_split(self.module, self.datasets[split], self.dist, self.s.eval_batch_size,
                           loss_fn=self.loss_fn, num_workers=self.s.num_workers, autocast_dtype=self.autocast_dtype)

    def _write_scores(self, test: SplitScores, val: SplitScores | None, thresholds: np.ndarray | None) -> None:
        """``thresholds.json``, ``per_class_test.json`` (AP, F1, ... with support per class) and, with
        ``trainer.save_scores``, the scores files of the best checkpoint."""
        names = list(self.datasets["train"].class_names)
        meta = {"threshold": self.s.threshold, "class_groups": self.class_groups, "class_weights": self.class_weights,
                "run_dir": str(self.run_dir.resolve()), "checkpoint": str((self.ckpt_dir / "best.pt").resolve()),
                "epoch": self.best_epoch, "mlflow_run_id": getattr(self.tracker, "run_id", None),
                "created_by": "mlc trainer"}
        if thresholds is not None:
            meta |= {"thresholds": thresholds.tolist(), "thresholds_tuned_for": self.s.tune_thresholds,
                     "thresholds_tuned_on": "val"}
            tuned = {k: meta[k] for k in ("thresholds_tuned_for", "thresholds_tuned_on")}
            _write_json(self.run_dir / "thresholds.json", {"class_names": names, **tuned,
                                                            "thresholds": thresholds.tolist()})
        rows = per_class_report(test.probs, test.targets, names, self.s.threshold, thresholds, self.class_groups)
        _write_json(self.run_dir / "per_class_test.json", {"split": "test", "epoch": self.best_epoch, "classes": rows})
        if self.s.save_scores:
            for split, scored in (("test", test), ("val", val)):
                if scored is not None:
                    write_scores(self.run_dir / "scores" / f"{split}.csv", self.datasets[split].instance_ids(),
                                 scored.probs, scored.targets, names, meta | {"split": split})

    # -- helpers ------------------------------------------------------------------------------------

    def _save(self, name: str) -> None:
        gathered = self.dist.all_gather_objects((ckpt.capture_rng(), self.prob_sums.cpu()))  # every rank's own
        if not self.dist.is_main:
            return
        rng_states, prob_sums = [g[0] for g in gathered], [g[1] for g in gathered]
        state = {"format": ckpt.FORMAT_VERSION, "model": self.module.state_dict(), "loss": self.loss_fn.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                 "global_step": self.global_step, "epoch_loss_sum": self.epoch_loss_sum,
                 "epoch_seen": self.epoch_seen, "prob_sums": prob_sums, "best_value": self.best_value,
                 "best_epoch": self.best_epoch,
                 "monitor": self.s.monitor, "history": self.history, "rng": rng_states, "config": self.config,
                 "world_size": self.dist.world_size, "mlflow_run_id": getattr(self.tracker, "run_id", None)}
        ckpt.save_atomic(state, self.ckpt_dir / f"{name}.pt")

    def _train_probabilities(self) -> dict[str, float]:
        """Mean predicted probability of the positive and of the negative labels seen in training this
        epoch, pooled over the head, medium and tail classes (``train_prob/pos_head`` ...): how a loss
        moves the probabilities (seed 002, Figure 1). One reduction over ranks per epoch."""
        sums = np.array(self.dist.sum_over_ranks(*self.prob_sums.flatten().tolist())).reshape(self.prob_sums.shape)
        groups = np.asarray(self.class_groups)
        out = {}
        for group in dict.fromkeys(self.class_groups):
            pos_p, pos_n, neg_p, neg_n = sums[:, groups == group].sum(axis=1)
            if pos_n > 0:
                out[f"train_prob/pos_{group}"] = float(pos_p / pos_n)
            if neg_n > 0:
                out[f"train_prob/neg_{group}"] = float(neg_p / neg_n)
        return out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _install_signal_handlers(self) -> dict:
        """First Ctrl-C/SIGTERM: finish the step, save ``last``, stop. A second one: stop at once."""
        def request_stop(signum, _frame):
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name
            if self.dist.is_main:
                log.warning("%s received: stopping after this step (again to abort at once)", self._stop_signal)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                previous[sig] = signal.signal(sig, request_stop)
        return previous


def _int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _write_json(path: Path, payload: dict) -> None:
    import json
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
