"""Common random numbers: for one seed, the two arms of a paired comparison (another loss, λ, sampler)
start from the same initial weights and see the same data in the same order with the same augmentation
streams, so the seed's share of the noise cancels in their difference."""

from __future__ import annotations

import os

import pytest
import torch

from mlc.config import check_config
from mlc.engine.distributed import DistContext
from mlc.train import build
from tests.conftest import compose

SMALL = ["tracking=none", "dataset.train_size=64", "dataset.val_size=32", "dataset.test_size=32",
         "trainer.batch_size=16", "trainer.device=cpu"]


def _built(tmp_path, data_cache, name: str, *overrides: str):
    run_dir = tmp_path / name
    run_dir.mkdir()
    cfg = compose([*SMALL, f"paths.cache={data_cache}", *overrides])
    checked = check_config(cfg)
    dist = DistContext.from_env("cpu")
    cwd = os.getcwd()
    try:
        os.chdir(run_dir)  # (outside Hydra, a run's folder is the working directory)
        return build(checked, dist, None)
    finally:
        os.chdir(cwd)


def _weights(run) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in run.trainer.model.state_dict().items()}


def _first_images(run, n: int = 20) -> tuple[list[int], list[torch.Tensor]]:
    """The first training items of epoch 0, in the order and with the augmentation the trainer uses."""
    trainer = run.trainer
    trainer.train_sampler.set_epoch(0, skip=0)
    train_set = trainer.data.splits["train"]
    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(0)
    order = list(trainer.train_sampler)[:n]
    return order, [torch.as_tensor(train_set[i]["image"]) for i in order]


@pytest.mark.parametrize("other", [["loss=cb_bce"], ["loss=any_focal", "loss.lam=0.2"], ["sampler=class_aware"]])
def test_one_seed_gives_every_arm_the_same_initial_weights(tmp_path, data_cache, other):
    base = _built(tmp_path, data_cache, "base", "loss=any_bce", "seed=3")
    arm = _built(tmp_path, data_cache, "arm", *other, "seed=3")
    theirs = _weights(arm)
    assert {k: torch.equal(v, theirs[k]) for k, v in _weights(base).items()} == dict.fromkeys(theirs, True)
    another_seed = _weights(_built(tmp_path, data_cache, "seed4", "loss=any_bce", "seed=4"))
    assert not all(torch.equal(v, another_seed[k]) for k, v in _weights(base).items())


def test_one_seed_gives_two_losses_the_same_data_in_the_same_order(tmp_path, data_cache):
    base = _built(tmp_path, data_cache, "base", "loss=any_bce", "seed=5")
    arm = _built(tmp_path, data_cache, "arm", "loss=cb_focal", "seed=5")
    (order, images), (their_order, their_images) = _first_images(base), _first_images(arm)
    assert order == their_order
    assert all(torch.equal(a, b) for a, b in zip(images, their_images, strict=True))
