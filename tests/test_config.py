"""Config groups compose and instantiate; bad values fail before compute with one line naming the key."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from mlc.config import check_command_line, check_config
from mlc.errors import ConfigError
from tests.conftest import ROOT, compose

OPTIONS = {group: sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
           for group in ("dataset", "sampler", "backbone", "loss", "optimizer", "scheduler", "trainer", "tracking")}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in OPTIONS.items() for o in opts])
def test_every_option_composes_and_passes_the_checks(group, option):
    cfg = compose([f"{group}={option}"])
    if group == "dataset" and "root" in cfg.dataset:  # file-backed: loading from fixtures is in tests/test_data_*
        with pytest.raises(ConfigError, match=r"^dataset\.root=None: is required"):
            check_config(cfg)
    else:
        check_config(cfg)


@pytest.mark.parametrize("option", OPTIONS["loss"])
def test_every_loss_option_builds_a_module_with_training_stats(option):
    cfg = compose([f"loss={option}"])
    loss = instantiate(cfg.loss, class_counts=[10, 5, 1], negative_count=20, num_samples=34)
    logits = torch.randn(4, 3, requires_grad=True)
    extra = {"indices": torch.arange(4)} if loss.needs_indices else {}
    value = loss(logits, torch.tensor([[1.0, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1]]), **extra)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("option,expected", [
    ("bce", dict(base="bce", alpha=0.0, beta=None)),
    ("focal", dict(base="focal", alpha=0.0, beta=None, gamma=2.0)),
    ("cb_bce", dict(base="bce", alpha=0.0, beta=0.9999)),
    ("cb_focal", dict(base="focal", alpha=0.0, beta=0.9999, gamma=2.0)),
    ("any_bce", dict(base="bce", alpha=1.0, beta=0.9999, lam=0.02)),
    ("any_focal", dict(base="focal", alpha=1.0, beta=0.9999, lam=0.02, gamma=2.0)),
])
def test_loss_defaults_are_the_reference_values(option, expected):
    cfg = compose([f"loss={option}"])
    assert cfg.loss.reduction == "labels"
    for key, value in expected.items():
        assert cfg.loss[key] == value, key


def test_presets_compose():
    cfg = compose(["hparams_search=lambda_vs_negative_ratio"])
    assert cfg.tracking.experiment == "lambda_vs_negative_ratio"
    demo = compose(["experiment=demo"])
    assert demo.trainer.max_epochs == 5 and demo.loss._target_.endswith("AnyClassPresenceLoss")


@pytest.mark.parametrize("override,key", [
    ("loss.lam=-0.1", "loss.lam"), ("loss.beta=1.0", "loss.beta"), (["loss=any_focal", "loss.gamma=-1"], "loss.gamma"),
    ("dataset.negative_ratio=1.2", "dataset.negative_ratio"), ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("dataset.negative_ratio=1.0", "dataset.negative_ratio"),  # no positive to learn from or to evaluate
    ("trainer.monitor=val/acc", "trainer.monitor"), ("optimizer.lr=-1", "optimizer.lr"),
    ("backbone.name=resnet5O", "backbone.name"), ("trainer.precision=16-mixed", "trainer.precision"),
    ("scheduler.min_lr_ratio=2", "scheduler.min_lr_ratio"),
    (["sampler=class_aware", "sampler.per_class=0"], "sampler.per_class"),
])
def test_check_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        check_config(compose(override if isinstance(override, list) else [override]))
    assert err.value.key == key


@pytest.mark.parametrize("argv,expected", [
    (["loss=any_focal", "loss.lam=0.05", "seed=0,1,2"], None),
    (["-m", "loss.lam=interval(0.01,0.1)", "hparams_search=lambda_vs_negative_ratio"], None),
    (["dataset.negative_ratoi=0.5"], "error: dataset.negative_ratoi: no such key"),
    (["optimizer=adam"], "error: optimizer=adam: no such option in conf/optimizer/ (available: adamw, sgd)"),
    (["hydra.run.dir=/tmp/x", "+extra_key=1"], None),
    (["--cfg", "job", "loss=any_focal"], None),
    (["loss.lam=["], "error: override 'loss.lam=[': not a valid Hydra override (no viable alternative at input '[')"),
    (["seed=0", "=3"], "error: override '=3': no key before '=' (key=value)"),
    (["--config-dir", "/no/such/dir"], "error: --config-dir='/no/such/dir': no such directory"),
])
def test_check_command_line(argv, expected):
    error = check_command_line(argv)
    assert error == expected if expected is None else error.startswith(expected)


def test_a_config_dir_adds_options_and_its_broken_yaml_is_one_line(tmp_path):
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "mine.yaml").write_text((ROOT / "conf" / "loss" / "bce.yaml").read_text())
    (tmp_path / "loss" / "broken.yaml").write_text("lam: [0.1\nbeta: 0.9\n")
    assert check_command_line(["--config-dir", str(tmp_path), "loss=mine"]) is None
    assert check_command_line(["loss=mine"]).startswith("error: loss=mine: no such option in conf/loss/")
    assert check_command_line([f"--config-dir={tmp_path}", "loss=broken"]) == (
        f"error: {tmp_path}/loss/broken.yaml, line 2: not valid YAML (expected ',' or ']', but got ':')")
