"""A plain PyTorch training loop: DDP, AMP, accumulation, EMA, compile, per-epoch evaluation, exact resume.

What it guarantees, and how:
- **No host sync per step.** The running loss stays on the device; every ``trainer.log_every_n_steps``
  optimizer steps (and at the end of an epoch) one *health check* reads it once, checks it is finite
  and, under DDP, ORs the stop flags of all ranks in one all-reduce. A checkpoint is only written
  right after a passing check, and never from non-finite weights (``callbacks.Checkpointer``).
- **Exact resume.** The train order is a permutation seeded by (seed, epoch), independent of the
  global RNG; a checkpoint records the epoch, the batch within it, every rank's RNG states and the
  EMA, so a run interrupted at a health check (Ctrl-C / SIGTERM / SIGUSR2 are acted on there; at once in a
  single process) or checkpointed mid-epoch (``trainer.checkpoint_every_n_steps``) and resumed ends
  with the same weights and metrics as one that never stopped. Not bit-exact under ``trainer.compile``
  (kernels may be re-generated) or ``cudnn_benchmark`` on CUDA (algorithm choice can vary per run).
- **Honest DDP metrics.** Validation shards without padding and gathers scores with their indices
  (``mlc.engine.distributed``); BatchNorm buffers are taken from rank 0 first, so every rank
  evaluates the weights that rank 0 checkpoints.

The loop below reads top to bottom; what happens around it (checkpoints, progress lines, MLflow, score
files, pruning) is a list of callbacks (``mlc.engine.callbacks``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Sequence
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
from mlc.engine.callbacks import Callback
from mlc.engine.contracts import EpochScheduledLoss, EpochSeededDataset, ExplainsNonFinite, needs_indices
from mlc.engine.distributed import DistContext, ShardSampler
from mlc.engine.ema import WeightEma
from mlc.engine.evaluation import SplitScores, score_split
from mlc.engine.settings import TUNE_BETA, TrainerSettings, batches_per_epoch
from mlc.errors import MlcError, NonFiniteLossError, TrainingInterrupted
from mlc.metrics import Degenerate, degenerate_predictions, multilabel_metrics, tune_thresholds

log = logging.getLogger("mlc.trainer")


@dataclass
class TrainData:
    """The splits a run trains and evaluates on, the training order and the dataset's class weights."""

    splits: dict[str, MultiLabelDataset]
    order: EpochOrder | None = None  # None: a seeded random permutation per epoch
    class_weights: list[float] | None = None  # class-importance weights (val/f2_ciw), if the dataset has them

    def epoch_length(self) -> int:
        """Samples in one training epoch (what ``optimizer_steps_per_epoch`` needs for the LR schedule)."""
        return len(self.order.indices(0)) if self.order is not None else len(self.splits["train"])


@dataclass
class FitResult:
    best_value: float
    best_epoch: int
    history: list[dict[str, float]]
    test_metrics: dict[str, float] = field(default_factory=dict)
    run_dir: str = ""
    degenerate: str | None = None  # the rule the best epoch's val predictions break (mlc.metrics.DEGENERATE_RULES)


@dataclass
class TestResult:
    """The best checkpoint on test (and on val, for the tuned thresholds)."""

    metrics: dict[str, float]
    test: SplitScores
    val: SplitScores | None = None
    thresholds: np.ndarray | None = None
    tuned_val: dict[str, float] | None = None


class Trainer:
    """Runs ``fit``; see the module docstring for the guarantees.

    Everything it trains is built by the caller (``mlc.config.Experiment`` for ``mlc train``): the
    model, the loss, the optimizer (with the loss's own parameters, if any, in a group of their own) and
    an LR scheduler stepped once per optimizer step (``optimizer_steps_per_epoch`` steps per epoch).
    """

    def __init__(self, settings: TrainerSettings, model: nn.Module, loss_fn: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 data: TrainData, run_dir: str | Path, *, dist: DistContext | None = None, seed: int = 0,
                 callbacks: Sequence[Callback] = (), loss_name: str | None = None):
        self.s, self.data, self.seed = settings, data, seed
        self.dist = dist or DistContext()
        self.device = self.dist.device
        self.callbacks = list(callbacks)
        self.loss_name = loss_name or type(loss_fn).__name__
        self.class_groups = class_groups(data.splits["train"].stats().class_counts)
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.run_id: str | None = None  # the MLflow run, once tracking started (TrackingCallback)
        if self.dist.distributed and (any(True for _ in loss_fn.parameters()) or loss_fn.state_dict()):
            raise MlcError(f"loss '{self.loss_name}' keeps per-instance state that DDP would not keep in sync "
                           f"across processes; run it in a single process")
        if settings.monitor == "val/f2_ciw" and data.class_weights is None:
            raise MlcError("trainer.monitor='val/f2_ciw' needs class-importance weights, which this dataset has not")
        self._configure_backends()

        self.module = model.to(self.device)  # the plain module: its state_dict is what checkpoints hold
        if settings.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.model = DistributedDataParallel(self.module, device_ids=[self.dist.local_rank]
                                             if self.device.type == "cuda" else None) \
            if self.dist.distributed else self.module
        self.forward = torch.compile(self.model) if settings.compile else self.model  # training forward only
        self.loss_fn = loss_fn.to(self.device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.precision == "16-mixed")
        self.ema = WeightEma(self.module, settings.ema_decay) if settings.ema_decay is not None else None
        self.monitors_ema = settings.monitor.startswith("val_ema/")

        order = data.order or RandomOrder(data.splits["train"].targets, seed)
        self.train_sampler = ShardSampler(len(data.splits["train"]), self.dist.rank, self.dist.world_size,
                                          order=order, pad=True)
        if len(self.train_sampler.shard()) < 2:
            raise MlcError(f"the training split has {len(data.splits['train'])} samples: too few for "
                           f"{self.dist.world_size} process(es)")
        self.batches_per_epoch = batches_per_epoch(settings, data.epoch_length(), self.dist.world_size)

        # Position and history: everything ``state_dict`` saves and ``restore`` puts back.
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0  # step_in_epoch: batches; global: optimizer
        self.best_value, self.best_epoch = None, -1
        # Whether the best epoch's validation predictions (at trainer.threshold, of the monitored weights) are
        # degenerate (``mlc.metrics.degenerate_predictions``); checkpointed with the best value.
        self.best_degenerate: Degenerate | None = None
        self.history: list[dict[str, float]] = []
        # Σ loss·B over the epoch's batches so far, on the device (read at health checks only), and Σ B.
        self.epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.epoch_seen = 0
        self._checked = (0, 0.0, 0)  # (step_in_epoch, epoch_loss, epoch_seen) at the last health check
        # Σ p over positive labels, their count, Σ p over negative labels, their count, per class, for the
        # epoch in progress: the training-probability curves (seed 002, Figure 1). Kept on the device.
        self.prob_sums = torch.zeros(4, len(data.splits["train"].class_names), dtype=torch.float64,
                                     device=self.device)
        self._stop_signal: str | None = None

    # -- public -------------------------------------------------------------------------------------

    def fit(self) -> FitResult:
        previous = self._install_signal_handlers()
        try:
            self._call("on_fit_start")
            while self.epoch < self.s.max_epochs:
                self._run_epoch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        result = FitResult(best_value=float(self.best_value), best_epoch=self.best_epoch, history=self.history,
                           run_dir=str(self.run_dir),
                           degenerate=self.best_degenerate.reason if self.best_degenerate is not None else None)
        if self.s.test_after_fit and "test" in self.data.splits:
            result.test_metrics = self.test_best().metrics
        self._call("on_fit_end", result)
        return result

    def evaluate(self, split: str, module: nn.Module | None = None) -> dict[str, float]:
        """Metrics of the current weights (or ``module``'s, e.g. the EMA) on a whole split."""
        return self.score(split, module).metrics(self.s.threshold, self.data.class_weights, self.class_groups)

    def score(self, split: str, module: nn.Module | None = None) -> SplitScores:
        """The current weights' probabilities on a whole split (every sample exactly once) and its loss."""
        return score_split(module or self.module, self.data.splits[split], self.dist, self.s.eval_batch_size,
                           loss_fn=self.loss_fn, num_workers=self.s.num_workers,
                           autocast_dtype=self.s.autocast_dtype, channels_last=self.s.channels_last)

    def test_best(self) -> TestResult:
        """Test metrics of the best checkpoint (its EMA weights when the monitor is ``val_ema/*``): at
        ``trainer.threshold``, and (``trainer.tune_thresholds``) at per-class thresholds tuned on the
        validation split and applied unchanged to test (``tuned/<m>``)."""
        best_path = self.ckpt_dir / "best.pt"
        if best_path.exists():
            self.module.load_state_dict(ckpt.eval_weights(ckpt.load(best_path)))
        elif self.monitors_ema:
            self.module.load_state_dict(self.ema.module.state_dict())
        test = self.score("test")
        result = TestResult(test.metrics(self.s.threshold, self.data.class_weights, self.class_groups), test)
        if self.s.tune_thresholds and "val" in self.data.splits:
            val = self.score("val")
            result.val = val
            result.thresholds = tune_thresholds(val.probs, val.targets, beta=TUNE_BETA[self.s.tune_thresholds],
                                                default=self.s.threshold)
            result.tuned_val = multilabel_metrics(val.probs, val.targets, result.thresholds,
                                                  self.data.class_weights, self.class_groups)
            result.metrics |= {f"tuned/{k}": v for k, v in multilabel_metrics(
                test.probs, test.targets, result.thresholds, self.data.class_weights, self.class_groups).items()}
        self._call("on_test_end", result)
        return result

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (called on every rank: it gathers each rank's RNG)."""
        gathered = self.dist.all_gather_objects((ckpt.capture_rng(), self.prob_sums.cpu()))
        state = {"format": ckpt.FORMAT_VERSION, "model": self.module.state_dict(), "loss": self.loss_fn.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                 "global_step": self.global_step, "epoch_loss_sum": float(self.epoch_loss),
                 "epoch_seen": self.epoch_seen, "prob_sums": [g[1] for g in gathered], "best_value": self.best_value,
                 "best_epoch": self.best_epoch, "monitor": self.s.monitor, "history": self.history,
                 "best_degenerate": self.best_degenerate.to_dict() if self.best_degenerate is not None else None,
                 "rng": [g[0] for g in gathered], "world_size": self.dist.world_size,
                 "eval_weights": "ema" if self.monitors_ema else "model"}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint (``trainer.resume``): weights, optimizer, position, RNG, EMA, best."""
        self.module.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema" not in state:
                raise MlcError(f"cannot resume {state['path']} with trainer.ema_decay: it was trained without EMA")
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.best_value, self.best_epoch = state["best_value"], int(state["best_epoch"])
        flag = state.get("best_degenerate")  # (checkpoints before the check existed: not known, None)
        self.best_degenerate = Degenerate(**flag) if flag else None
        self.history = list(state["history"])
        self.epoch_loss.fill_(float(state["epoch_loss_sum"]))
        self.epoch_seen = int(state["epoch_seen"])
        self._checked = (self.step_in_epoch, float(state["epoch_loss_sum"]), self.epoch_seen)
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

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the LR schedule's unit)."""
        return -(-self.batches_per_epoch // self.s.accumulate_grad_batches)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- one epoch ----------------------------------------------------------------------------------

    def _run_epoch(self) -> None:
        epoch, skip = self.epoch, self.step_in_epoch
        if isinstance(self.loss_fn, EpochScheduledLoss):
            self.loss_fn.set_epoch(epoch, self.s.max_epochs)
        self.train_sampler.set_epoch(epoch, skip=skip * self.s.batch_size)
        train_set = self.data.splits["train"]
        if isinstance(train_set, EpochSeededDataset):  # per-epoch augmentation seeds (exact resume)
            train_set.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=self.s.batch_size, sampler=self.train_sampler,
                            num_workers=self.s.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.seed + epoch), persistent_workers=False)
        self.model.train()
        self.loss_fn.train()
        started, seen_before = time.perf_counter(), self.epoch_seen
        with_indices, k = needs_indices(self.loss_fn), self.s.accumulate_grad_batches
        for step, batch in enumerate(loader, start=skip):
            if step >= self.batches_per_epoch:
                break  # a trailing batch of one sample: BatchNorm cannot train on it
            group_start = step - step % k
            group = min(k, self.batches_per_epoch - group_start)  # batches in this optimizer step
            steps_now = step + 1 == group_start + group
            x = batch["image"].to(self.device, non_blocking=True)
            if self.s.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["target"].to(self.device, non_blocking=True)
            extra = {"indices": torch.as_tensor(batch["index"], device=self.device)} if with_indices else {}
            # DDP: gradients are all-reduced on the last batch of an accumulation group only.
            no_sync = self.model.no_sync() if self.dist.distributed and not steps_now else contextlib.nullcontext()
            with no_sync:
                with self._autocast():
                    logits = self.forward(x)
                loss = self.loss_fn(logits.float(), y, **extra)
                self.scaler.scale(loss / group if group > 1 else loss).backward()
            with torch.no_grad():
                self.epoch_loss += loss.detach() * len(y)
                probs = torch.sigmoid(logits.detach().float())
                self.prob_sums += torch.stack([(probs * y).sum(0), y.sum(0), (probs * (1 - y)).sum(0),
                                               (1 - y).sum(0)]).double()
            self.epoch_seen += len(y)
            self.step_in_epoch = step + 1
            if not steps_now:
                continue
            self._optimizer_step()
            every = self.s.checkpoint_every_n_steps
            at_interval = self.global_step % self.s.log_every_n_steps == 0 or (every and self.global_step % every == 0)
            stop_here = self._stop_signal is not None and not self.dist.distributed  # (DDP: at the next check)
            if at_interval or stop_here:
                stop = self._health_check()
                if stop:
                    self._interrupt()
        if self.step_in_epoch > self._checked[0]:
            if self._health_check():  # the end-of-epoch check: the epoch's loss is complete on the host
                self._interrupt()
        train_seconds = time.perf_counter() - started
        self._end_epoch(epoch, train_seconds, self.epoch_seen - seen_before)

    def _optimizer_step(self) -> None:
        if self.s.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.s.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        self.global_step += 1

    def _health_check(self) -> bool:
        """The one host sync of a window of steps: is their loss finite, and did any rank get a stop
        signal? Raises ``NonFiniteLossError`` before anything could checkpoint broken weights."""
        total = float(self.epoch_loss)  # any non-finite step loss makes the running sum non-finite
        nonfinite, stop = self.dist.any_flags(not math.isfinite(total), self._stop_signal is not None)
        first, last = self._checked[0] + 1, self.step_in_epoch
        if nonfinite:
            where = f"step {last}" if first >= last else f"step {first}-{last} (checked every " \
                f"{self.s.log_every_n_steps} optimizer steps)"
            kept = f"the last good checkpoint {self.ckpt_dir / 'last.pt'} is untouched" \
                if (self.ckpt_dir / "last.pt").exists() else "no checkpoint was written"
            value = total if not math.isfinite(total) else "non-finite on another rank"
            reason = self.loss_fn.nonfinite_reason() if isinstance(self.loss_fn, ExplainsNonFinite) else None
            raise NonFiniteLossError(
                f"loss '{self.loss_name}' became {value} at epoch {self.epoch + 1}, {where}: {kept}; " +
                (reason or f"try a lower optimizer.lr or trainer.grad_clip_norm (lr={self.lr():.3g}, "
                           f"precision={self.s.precision})"))
        window = (total - self._checked[1]) / max(self.epoch_seen - self._checked[2], 1)
        self._checked = (last, total, self.epoch_seen)
        if last < self.batches_per_epoch:
            self._call("on_health_check", window)
        return stop

    def _interrupt(self) -> None:
        self._call("on_interrupt")
        last = self.ckpt_dir / "last.pt"
        raise TrainingInterrupted(
            f"interrupted ({self._stop_signal or 'signal on another rank'}) at epoch {self.epoch + 1}, step "
            f"{self.step_in_epoch}; resume with trainer.resume={last}", signal=self._stop_signal, checkpoint=str(last))

    def _end_epoch(self, epoch: int, train_seconds: float, seen_now: int) -> None:
        scored = self.score("val")
        val = scored.metrics(self.s.threshold, self.data.class_weights, self.class_groups)
        loss_sum, seen_total, seen_now = self.dist.sum_over_ranks(self._checked[1], self.epoch_seen, seen_now)
        record = {"epoch": epoch + 1, "train/loss": loss_sum / max(seen_total, 1), "lr": self.lr(),
                  "train/seconds": train_seconds, "train/samples_per_s": seen_now / train_seconds,
                  **self._train_probabilities(), **{f"val/{k}": v for k, v in val.items()}}
        if self.ema is not None:
            ema_scored = self.score("val", self.ema.module)
            record |= {f"val_ema/{k}": v for k, v in ema_scored.metrics(self.s.threshold, self.data.class_weights,
                                                                        self.class_groups).items()}
            if self.monitors_ema:
                scored = ema_scored  # the weights the monitor judged are the ones checked below
        value = record[self.s.monitor]
        improved = self.best_value is None or (value > self.best_value if self.s.monitor_mode == "max"
                                               else value < self.best_value)
        if improved:
            self.best_value, self.best_epoch = value, epoch + 1
            self.best_degenerate = degenerate_predictions(scored.probs, scored.targets, self.s.threshold,
                                                          self.data.splits["val"].class_names)
        self.history.append(record)
        self.epoch, self.step_in_epoch = epoch + 1, 0
        self.epoch_loss.zero_()
        self.epoch_seen, self._checked = 0, (0, 0.0, 0)
        self.prob_sums.zero_()
        self._call("on_epoch_end", record, improved)

    # -- helpers ------------------------------------------------------------------------------------

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

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

    def _configure_backends(self) -> None:
        """Process-wide switches: fp32 matmul precision (TF32 on Ampere+ at ``high``), cuDNN autotuning."""
        torch.set_float32_matmul_precision(self.s.matmul_precision)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.s.cudnn_benchmark

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.s.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.s.autocast_dtype)

    def _install_signal_handlers(self) -> dict:
        """First Ctrl-C/SIGTERM/SIGUSR2: stop at the next health check (single process: after this step), save
        ``last``. A second one: stop at once. SIGUSR2 is SLURM's warning before a job's time limit or its
        preemption (``sbatch --signal=USR2@<s>``: submitit's ``signal_delay_s``); its default action would kill
        the process without a checkpoint, and a trial stopped by it is requeued from ``last``."""
        def request_stop(signum, _frame):
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name
            if self.dist.is_main:
                log.warning("%s received: stopping after this step (again to abort at once)", self._stop_signal)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                previous[sig] = signal.signal(sig, request_stop)
        return previous
