"""Engine pieces: sharding, atomic checkpoints, RNG capture, schedules, resume compatibility."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mlc.data.samplers import RandomOrder
from mlc.engine import checkpoint as ckpt
from mlc.engine.distributed import ShardSampler
from mlc.errors import CheckpointError
from mlc.optim import param_groups, step_decay, warmup_cosine


@pytest.mark.parametrize("size,world", [(10, 1), (10, 3), (257, 2), (5, 4)])
def test_eval_shards_cover_every_sample_exactly_once(size, world):
    shards = [list(ShardSampler(size, r, world, pad=False)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(size))


def test_train_shards_are_equal_reproducible_and_reshuffled_per_epoch():
    order = RandomOrder(np.zeros((257, 3)), seed=7)
    samplers = [ShardSampler(257, r, 2, order=order, pad=True) for r in range(2)]
    assert len(samplers[0]) == len(samplers[1]) == 129
    first = list(samplers[0])
    samplers[0].set_epoch(0)
    assert list(samplers[0]) == first
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != first
    samplers[0].set_epoch(1, skip=10)
    assert len(samplers[0]) == 119 and list(samplers[0]) == _epoch_shard(1)[10:]


def _epoch_shard(epoch):
    s = ShardSampler(257, 0, 2, order=RandomOrder(np.zeros((257, 3)), seed=7), pad=True)
    s.set_epoch(epoch)
    return list(s)


def test_save_atomic_keeps_the_previous_checkpoint_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_atomic({"format": ckpt.FORMAT_VERSION, "value": 1}, path)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save_atomic({"format": ckpt.FORMAT_VERSION, "value": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_load_reports_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        ckpt.load(tmp_path / "missing.pt")
    (tmp_path / "torn.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ckpt.load(tmp_path / "torn.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an mlc checkpoint"):
        ckpt.load(tmp_path / "other.pt")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = ckpt.capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.save_atomic({"format": ckpt.FORMAT_VERSION, "rng": [state]}, tmp_path / "c.pt")
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.restore_rng(ckpt.load(tmp_path / "c.pt")["rng"][0])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_warmup_cosine_shape():
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    sched = warmup_cosine(opt, steps_per_epoch=10, max_epochs=5, warmup_epochs=1, warmup_start_factor=0.1,
                          min_lr_ratio=0.01)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.01, abs=2e-3)


def test_step_decay():
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    sched = step_decay(opt, steps_per_epoch=4, max_epochs=9, step_epochs=3, gamma=0.5)
    factors = [sched.lr_lambdas[0](s) for s in (0, 11, 12, 24)]
    assert factors == [1.0, 1.0, 0.5, 0.25]


def test_no_weight_decay_on_norm_and_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.ndim for p in decay["params"]] == [4] and len(no_decay["params"]) == 3
    assert no_decay["weight_decay"] == 0.0


def test_resume_refuses_a_different_setup():
    state = {"path": "ckpt.pt", "config": {"loss": {"lam": 0.02}, "trainer": {"max_epochs": 3, "batch_size": 64}}}
    ckpt.check_resumable(state, {"loss": {"lam": 0.02}, "trainer": {"max_epochs": 9, "batch_size": 64}})
    with pytest.raises(CheckpointError, match=r"loss.lam: 0.02 in the checkpoint, 0.05 now"):
        ckpt.check_resumable(state, {"loss": {"lam": 0.05}, "trainer": {"max_epochs": 3, "batch_size": 64}})
