"""``make gpu-check`` (``python -m benchmarks.gpu_check``): what the CPU tests cannot run, in one go on one GPU.

Checks, each PASS / FAIL / SKIP with its time:
- bf16 AMP and fp16 AMP with the GradScaler, ``trainer.compile``, ``trainer.channels_last``: one short
  training run each through ``mlc.engine.Trainer`` on the built-in digits data;
- no host-device sync per training step (CUDA's sync debug mode counts them for 8 and for 16 steps);
- a 1-process NCCL DDP run (the model wrapped in DDP, every collective through NCCL) whose validation
  metrics must equal a plain run's;
- every loss option with ``implementation: fused`` on CUDA against its autograd form (values and
  gradients, float32), finite at ±100 logits;
- throughput (images/s) of ``tresnet_l``, ``vit_base_patch16_224`` and ``maxvit_small_tf_224`` at 224 px
  under bf16 AMP: mlc's trainer against a bare PyTorch loop on the same model and synthetic data, epochs
  alternating (target: the trainer at >= 95%).

It writes ``experiments/benchmarks/gpu.md`` (with the GPU's name) and exits 1 if a check failed.
Without a GPU it says so in one line and exits 0. ``--tiny`` runs the same code on CPU with tiny models
and images (the test suite does, so the script cannot rot where no GPU is).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS_DIR, AlternatingRates
from mlc.data import SPLITS, DigitScenes
from mlc.data.base import MultiLabelDataset
from mlc.engine import DistContext, TrainData, Trainer, TrainerSettings, optimizer_steps_per_epoch
from mlc.engine import checkpoint as ckpt
from mlc.engine.callbacks import Checkpointer
from mlc.models import create_backbone
from mlc.optim import param_groups, warmup_cosine
from mlc.provenance import machine

THROUGHPUT_MODELS = ("tresnet_l", "vit_base_patch16_224", "maxvit_small_tf_224")
TARGET = 0.95


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    seconds: float


@dataclass
class Profile:
    """What the checks run at: the real one on a GPU, a tiny one on CPU (``--tiny``)."""

    device: torch.device
    image_size: int = 224
    batch_size: int = 64
    steps: int = 30  # per timed epoch
    rounds: int = 2  # timed epochs per model, after one warm-up epoch
    workers: int = 6
    models: tuple[str, ...] = THROUGHPUT_MODELS
    train_size: int = 1024  # the digits runs of the feature checks
    enforce_target: bool = True  # fail a throughput check below TARGET (not on a loaded CPU: --tiny)

    @classmethod
    def tiny(cls) -> Profile:
        return cls(torch.device("cpu"), image_size=32, batch_size=16, steps=4, rounds=2, workers=0,
                   models=("mlc_cnn_small",), train_size=128, enforce_target=False)


class SyntheticImages(MultiLabelDataset):
    """``size`` random images drawn from a pool of ``pool`` distinct ones (memory stays small at 224 px)."""

    def __init__(self, size: int, image_size: int, num_classes: int = 20, pool: int = 256, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.pool = torch.randn(min(pool, size), 3, image_size, image_size, generator=g)
        rng = np.random.default_rng(seed)
        self.targets = (rng.random((size, num_classes)) < 0.1).astype(np.uint8)
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self._targets_t = torch.from_numpy(self.targets).float()

    def __getitem__(self, index: int) -> dict:
        return {"image": self.pool[index % len(self.pool)], "target": self._targets_t[index], "index": index}


def _trainer(profile: Profile, run_dir: str, data: TrainData | None = None, model: torch.nn.Module | None = None,
             dist: DistContext | None = None, callbacks=(), **options) -> Trainer:
    """A Trainer on the digits data (or ``data``) with AdamW and a warm-up cosine schedule."""
    torch.manual_seed(0)
    if data is None:
        source = DigitScenes(train_size=profile.train_size, val_size=128, test_size=128)
        data = TrainData({s: source.load(s) for s in SPLITS})
    classes = len(data.splits["train"].class_names)
    model = model or create_backbone("mlc_cnn_small", num_classes=classes)
    settings = TrainerSettings(**({"max_epochs": 1, "batch_size": profile.batch_size, "eval_batch_size": 128,
                                   "device": profile.device.type, "tune_thresholds": None,
                                   "log_every_n_steps": 10} | options))
    optimizer = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-3)
    scheduler = warmup_cosine(optimizer, steps_per_epoch=optimizer_steps_per_epoch(settings, data.epoch_length()),
                              max_epochs=settings.max_epochs, warmup_epochs=0.1)
    from mlc.losses import AnyClassPresenceLoss

    stats = data.splits["train"].stats()
    loss = AnyClassPresenceLoss(stats.class_counts, stats.negative_count)
    return Trainer(settings, model, loss, optimizer, scheduler, data, run_dir,
                   dist=dist or DistContext(device=profile.device), callbacks=list(callbacks))


def check_training(profile: Profile, **options) -> str:
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = _trainer(profile, run_dir, callbacks=[Checkpointer()], test_after_fit=True, **options)
        result = trainer.fit()
        record = result.history[-1]
        if not np.isfinite(record["train/loss"]) or not np.isfinite(record["val/loss"]):
            raise AssertionError(f"non-finite loss: {record['train/loss']}, {record['val/loss']}")
        state = ckpt.load(Path(run_dir) / "checkpoints" / "last.pt")
        if any("_orig_mod" in k for k in state["model"]):
            raise AssertionError("the checkpoint holds compiled-module keys (_orig_mod.)")
        detail = f"train loss {record['train/loss']:.4f}, val mAP {record['val/map']:.4f}, " \
                 f"{record['train/samples_per_s']:,.0f} img/s"
        if trainer.scaler.is_enabled():
            detail += f", GradScaler scale {trainer.scaler.get_scale():.0f}"
        return detail


def check_no_step_sync(profile: Profile) -> str:
    """Host-device syncs of a training epoch must not grow with its steps: the same count for N and 2N
    steps (CUDA's sync debug mode reports each one; validation and the end-of-epoch check sync a fixed
    number of times). bf16: fp16's GradScaler reads its inf flag every step by design."""
    import warnings

    counts = []
    for batches in (8, 16):
        source = DigitScenes(train_size=batches * profile.batch_size, val_size=128, test_size=128)
        data = TrainData({s: source.load(s) for s in SPLITS})
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = _trainer(profile, run_dir, data=data, precision="bf16-mixed", log_every_n_steps=1000,
                               test_after_fit=False)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if profile.device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    trainer.fit()
                finally:
                    if profile.device.type == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    if counts[1] != counts[0]:
        raise AssertionError(f"host syncs grow with the steps: {counts[0]} for 8 steps, {counts[1]} for 16")
    if profile.device.type != "cuda":
        return "CPU: no device syncs to count (the check ran end to end)"
    return f"{counts[0]} syncs per epoch for 8 and for 16 steps (validation and the end-of-epoch check)"


def check_ddp(profile: Profile) -> str:
    """One process, the model in DDP, collectives through NCCL (gloo on CPU): metrics equal a plain run's."""
    import torch.distributed as tdist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if profile.device.type == "cuda" else "gloo"
    tdist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ddp = _trainer(profile, a, dist=DistContext(device=profile.device, ddp=True), test_after_fit=False)
            plain = _trainer(profile, b, test_after_fit=False)
            got, want = ddp.fit().history[-1], plain.fit().history[-1]
    finally:
        tdist.destroy_process_group()
    diff = max(abs(got[k] - want[k]) for k in ("val/map", "val/f1_macro", "val/loss"))
    if diff > 1e-5:
        raise AssertionError(f"DDP metrics differ from a plain run's by {diff:.2e}")
    return f"{backend}, val mAP {got['val/map']:.4f} (plain {want['val/map']:.4f}, max difference {diff:.1e})"


def check_fused_losses(profile: Profile) -> str:
    """Every fused loss option against its autograd form on the device: values, gradients, ±100 logits."""
    from mlc.config import build, compose_config

    options = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "loss").glob("*.yaml"))
    g = torch.Generator().manual_seed(0)
    b, c = 64, 20
    y = (torch.rand(b, c, generator=g) < 0.1).float()
    y[: b // 2] = 0  # half the rows negative
    stats = {"class_counts": [int(v) + 1 for v in y.sum(0).tolist()], "negative_count": b // 2, "num_samples": b}
    z0 = torch.randn(b, c, generator=g) * 3
    checked, worst = [], 0.0
    for name in options:
        node = compose_config([f"loss={name}"]).loss
        if node.get("implementation") != "fused":
            continue
        values, grads = [], []
        for implementation in ("fused", "autograd"):
            node.implementation = implementation
            loss_fn = build(node, "loss", **stats).to(profile.device)
            z = z0.clone().to(profile.device).requires_grad_(True)
            kwargs = {"indices": torch.arange(b, device=profile.device)} if getattr(loss_fn, "needs_indices",
                                                                                    False) else {}
            value = loss_fn(z, y.to(profile.device), **kwargs)
            value.backward()
            values.append(float(value.detach()))
            grads.append(z.grad.detach().cpu())
            extreme = torch.full((b, c), 100.0, device=profile.device) * torch.sign(torch.randn(b, c, generator=g)
                                                                                       ).to(profile.device)
            if not torch.isfinite(loss_fn(extreme, y.to(profile.device), **kwargs)):
                raise AssertionError(f"loss={name} ({implementation}) is not finite at ±100 logits")
        rel = abs(values[0] - values[1]) / max(abs(values[1]), 1e-12)
        grad_err = float((grads[0] - grads[1]).abs().max() / grads[1].abs().max().clamp(min=1e-12))
        if rel > 1e-4 or grad_err > 1e-4:
            raise AssertionError(f"loss={name}: fused {values[0]:.6g} vs autograd {values[1]:.6g} (relative "
                                 f"{rel:.1e}), gradient error {grad_err:.1e}")
        worst = max(worst, rel, grad_err)
        checked.append(name)
    soft = _soft_target_guard(profile, stats, z0, y)
    return f"{len(checked)} options ({', '.join(checked)}), worst relative difference {worst:.1e}; {soft}"


def _soft_target_guard(profile: Profile, stats: dict, z: torch.Tensor, y: torch.Tensor) -> str:
    """A fused kernel exact for 0/1 targets only, given 0.1/0.9 targets: on CUDA a NaN loss and the reason,
    with no host sync (sync debug mode "error"); on CPU the one-line error at once."""
    from mlc.losses import AnyClassPresenceLoss
    from mlc.losses.binary_targets import NonBinaryTargetsError

    loss_fn = AnyClassPresenceLoss(stats["class_counts"], stats["negative_count"], base="focal").to(profile.device)
    z, smooth = z.to(profile.device), (y * 0.8 + 0.1).to(profile.device)
    if profile.device.type != "cuda":
        try:
            loss_fn(z, smooth)
        except NonBinaryTargetsError:
            return "soft targets refused on CPU"
        raise AssertionError("soft targets were not refused")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        value = loss_fn(z, smooth)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    if not torch.isnan(value) or not loss_fn.nonfinite_reason():
        raise AssertionError(f"soft targets on CUDA gave {float(value)} without a reason")
    return "soft targets on CUDA: NaN + reason, no host sync"


def throughput(profile: Profile, name: str) -> dict[str, float]:
    """Trainer vs bare loop images/s on ``name`` under bf16 AMP; epochs alternate (the bare one runs
    from the trainer's epoch callback)."""
    size = profile.steps * profile.batch_size
    train = SyntheticImages(size, profile.image_size)
    data = TrainData({"train": train, "val": SyntheticImages(profile.batch_size, profile.image_size, seed=1)})
    device = profile.device
    model = create_backbone(name, num_classes=20).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-4)
    from mlc.losses import AnyClassPresenceLoss

    stats = train.stats()
    bare = {"model": model, "optimizer": optimizer,
            "scheduler": warmup_cosine(optimizer, steps_per_epoch=profile.steps, max_epochs=profile.rounds + 1,
                                       warmup_epochs=0.1),
            "loss": AnyClassPresenceLoss(stats.class_counts, stats.negative_count).to(device)}
    del model, optimizer
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def bare_epoch(epoch: int) -> float:
        """The loop a user would write by hand: forward under autocast, loss, backward, step, LR step."""
        loader = torch.utils.data.DataLoader(train, batch_size=profile.batch_size, shuffle=True,
                                             num_workers=profile.workers, pin_memory=device.type == "cuda",
                                             drop_last=True, generator=torch.Generator().manual_seed(epoch))
        bare["model"].train()
        seen, start = 0, time.perf_counter()
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["target"].to(device, non_blocking=True)
            with autocast:
                logits = bare["model"](x)
            loss = bare["loss"](logits.float(), y)
            bare["optimizer"].zero_grad(set_to_none=True)
            loss.backward()
            bare["optimizer"].step()
            bare["scheduler"].step()
            seen += len(y)
        float(loss.detach())  # wait for the device
        return seen / (time.perf_counter() - start)

    alternate = AlternatingRates(bare_epoch)
    with tempfile.TemporaryDirectory() as run_dir:
        model = create_backbone(name, num_classes=20)
        trainer = _trainer(profile, run_dir, data=data, model=model, callbacks=[alternate],
                           max_epochs=profile.rounds + 1, precision="bf16-mixed", num_workers=profile.workers,
                           channels_last=device.type == "cuda", matmul_precision="high", test_after_fit=False,
                           eval_batch_size=profile.batch_size)
        trainer.fit()
        params = sum(p.numel() for p in model.parameters()) / 1e6
    bare.clear()
    del trainer, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"model": name, "params_m": params, **alternate.summary()}


def run(profile: Profile, out: Path | None, skip: tuple[str, ...] = ()) -> tuple[list[Check], list[dict]]:
    checks: list[Check] = []

    def attempt(name: str, fn: Callable[[], str], reason: str | None = None) -> None:
        why = reason or next((f"--skip {s}" for s in skip if name.startswith(s)), None)
        if why:
            checks.append(Check(name, "SKIP", why, 0.0))
            print(f"gpu-check: {name}: SKIP ({why})", flush=True)
            return
        start = time.perf_counter()
        try:
            status, detail = "PASS", fn()
        except Exception as err:  # a failed check is reported, and the others still run
            status, detail = "FAIL", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            traceback.print_exc(file=sys.stderr)
        checks.append(Check(name, status, detail, time.perf_counter() - start))
        print(f"gpu-check: {name}: {status} ({detail}) in {checks[-1].seconds:.1f}s", flush=True)

    cuda = profile.device.type == "cuda"
    bf16_ok = not cuda or torch.cuda.is_bf16_supported()
    attempt("bf16 AMP", lambda: check_training(profile, precision="bf16-mixed"),
            None if bf16_ok else "this GPU has no bf16")
    attempt("fp16 AMP + GradScaler", lambda: check_training(profile, precision="16-mixed"),
            None if cuda else "fp16 AMP needs CUDA")
    attempt("compile", lambda: check_training(profile, compile=True, precision="bf16-mixed" if bf16_ok else "32"))
    attempt("channels_last", lambda: check_training(profile, channels_last=True,
                                                     precision="bf16-mixed" if bf16_ok else "32"))
    attempt("no per-step host sync", lambda: check_no_step_sync(profile),
            None if bf16_ok else "needs bf16 (fp16's GradScaler syncs every step)")
    attempt("1-process DDP" + (" (NCCL)" if cuda else " (gloo)"), lambda: check_ddp(profile))
    attempt("fused losses vs autograd", lambda: check_fused_losses(profile))
    rows: list[dict] = []
    for name in profile.models:
        def measure(name=name) -> str:
            row = throughput(profile, name)
            rows.append(row)
            if row["ratio"] < TARGET and profile.enforce_target:
                raise AssertionError(f"trainer at {row['ratio']:.1%} of the bare loop (target {TARGET:.0%})")
            return f"trainer {row['trainer']:,.0f} img/s, bare {row['bare']:,.0f} img/s, {row['ratio']:.3f}×"
        attempt(f"throughput {name}", measure)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report(profile, checks, rows))
        print(f"gpu-check: wrote {out}")
    return checks, rows


def report(profile: Profile, checks: list[Check], rows: list[dict]) -> str:
    gpu = torch.cuda.get_device_name(profile.device) if profile.device.type == "cuda" else "CPU (--tiny)"
    lines = ["# GPU check", "", f"Measured by `make gpu-check` (`python -m benchmarks.gpu_check`) on **{gpu}** "
             f"({machine()}).", "", "| check | result | detail | seconds |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.status} | {c.detail} | {c.seconds:.1f} |" for c in checks]
    lines += ["", f"## Throughput: mlc's trainer against a bare loop ({profile.image_size} px, batch "
              f"{profile.batch_size}, bf16 AMP, AdamW, channels_last, {profile.workers} loader workers)", "",
              f"Synthetic data; {profile.steps} steps per epoch; epochs alternate between the two, {profile.rounds} "
              "timed rounds after a warm-up round; medians.", "",
              "| model | params (M) | bare loop img/s | trainer img/s | trainer / bare |", "|---|---|---|---|---|"]
    lines += [f"| `{r['model']}` | {r['params_m']:.1f} | {r['bare']:,.0f} | {r['trainer']:,.0f} | {r['ratio']:.3f}× |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="run the same checks on CPU with tiny models")
    parser.add_argument("--skip", action="append", default=[], metavar="CHECK",
                        help="leave out the checks whose name starts with CHECK (e.g. compile, throughput); repeatable")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the table (default: experiments/benchmarks/gpu.md on a GPU)")
    args = parser.parse_args(argv)
    if args.tiny:
        profile = Profile.tiny()
    elif not torch.cuda.is_available():
        print("gpu-check: skipped: no CUDA GPU visible (torch.cuda.is_available() is False); nothing was run")
        return 0
    else:
        profile = Profile(torch.device("cuda", 0))
    out = args.out if args.out is not None else (None if args.tiny else RESULTS_DIR / "gpu.md")
    checks, _ = run(profile, out, tuple(args.skip))
    failed = [c.name for c in checks if c.status == "FAIL"]
    if failed:
        print(f"error: gpu-check: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"gpu-check: all {len(checks)} checks passed or were skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
