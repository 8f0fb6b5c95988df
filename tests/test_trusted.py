"""A crafted checkpoint cannot make evaluate or resume run code; every genuine config still loads.

Each crafted checkpoint is a real composed config with one malicious change. Where the change names
a callable, its call would create a sentinel file: ``test_the_payloads_are_live`` shows that Hydra
would indeed run it (where the installed Hydra does not block it itself), the other tests that the
file never appears once the config sits in a checkpoint.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mlc.cli.evaluate import evaluate_checkpoint
from mlc.engine import checkpoint as ckpt
from mlc.errors import CheckpointError
from mlc.trusted import check_stored_config, conf_targets, is_allowed_target
from tests.conftest import ROOT, compose

GROUPS = ("dataset", "sampler", "backbone", "loss", "optimizer", "scheduler", "trainer", "tracking")
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((ROOT / "conf" / group).glob("*.yaml"))]


def _config(*overrides: str) -> dict[str, Any]:
    """A resolved task config, exactly as the trainer stores it in a checkpoint."""
    return OmegaConf.to_container(compose(["trainer.max_epochs=1", *overrides]), resolve=True)


def _os_system(sentinel: Path) -> dict:
    return {"_target_": "os.system", "_args_": [f"touch {sentinel}"]}


def _subprocess_run(sentinel: Path) -> dict:  # mlc.provenance imports subprocess: Hydra finds it as an attribute
    return {"_target_": "mlc.provenance.subprocess.run", "_args_": [["touch", str(sentinel)]]}


def _eval(sentinel: Path) -> dict:
    return {"_target_": "builtins.eval", "_args_": [f"open({str(sentinel)!r}, 'w').close()"]}


def _albumentations_save(target: str) -> Callable[[Path], dict]:
    """albumentations' serialiser: a public attribute, not a transform; it writes any file it is given."""
    return lambda sentinel: {"_target_": target,
                             "_args_": [{"_target_": "albumentations.Compose", "transforms": []}, str(sentinel)]}


def _put(config: dict, path: tuple, value: Any) -> None:
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


# name -> (dataset option, where the change goes, payload(sentinel) or a plain value, key path the error names)
CASES: dict[str, tuple[str, tuple, Any, str]] = {
    "loss=os.system": ("digits", ("loss",), _os_system, "loss._target_"),
    "backbone=mlc.provenance.subprocess.run": ("digits", ("backbone",), _subprocess_run, "backbone._target_"),
    "pipeline-list-item=os.system": ("csv", ("dataset", "train_transform", "transforms", 0), _os_system,
                                     "dataset.train_transform.transforms[0]._target_"),
    "added-list-of-dicts": ("digits", ("sampler", "hooks"), lambda s: [{"keep": 1}, _eval(s)],
                            "sampler.hooks[1]._target_"),
    "scheduler=builtins.eval": ("digits", ("scheduler",), _eval, "scheduler._target_"),
    "albumentations.save": ("csv", ("dataset", "eval_transform"), _albumentations_save("albumentations.save"),
                            "dataset.eval_transform._target_"),
    "albumentations.core.serialization.save": (
        "csv", ("dataset", "eval_transform"), _albumentations_save("albumentations.core.serialization.save"),
        "dataset.eval_transform._target_"),
    "albumentations-long-form": ("csv", ("dataset", "eval_transform", "_target_"),
                                 "albumentations.core.composition.Compose", "dataset.eval_transform._target_"),
    "interpolation": ("digits", ("dataset", "cache_dir"), "${oc.env:HOME}", "dataset.cache_dir"),
    "unknown-hydra-key": ("digits", ("loss", "_foo_"), 1, "loss._foo_"),
}
LIVE = [name for name, case in CASES.items() if callable(case[2])]


def _crafted(name: str, tmp_path: Path) -> tuple[Path, Path, str]:
    """Write the crafted checkpoint of case ``name``; return it, its sentinel and the key path to expect."""
    option, where, change, key = CASES[name]
    sentinel = tmp_path / "pwned"
    config = _config(f"dataset={option}")
    _put(config, where, change(sentinel) if callable(change) else change)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt.save_atomic({"format": ckpt.FORMAT_VERSION, "model": {}, "epoch": 1, "config": config}, path)
    return path, sentinel, key


@pytest.mark.parametrize("name", LIVE)
def test_the_payloads_are_live(name, tmp_path):
    """The control: built directly by Hydra, each payload does create its sentinel.

    Hydra 1.3.8 blocks shell and ``eval`` targets itself; 1.3.2 to 1.3.7 (which pyproject allows) run
    them, and no Hydra blocks ``albumentations.save``, which writes any file: mlc's guard covers both.
    """
    sentinel = tmp_path / "pwned"
    payload = CASES[name][2](sentinel)
    try:
        for node in payload if isinstance(payload, list) else [payload]:
            instantiate(OmegaConf.create(node))
    except InstantiationException as err:
        if "blocklisted" not in str(err):
            raise
        pytest.skip(f"the installed Hydra blocks it itself ({str(err).splitlines()[0]}...)")
    assert sentinel.exists()


@pytest.mark.parametrize("name", list(CASES))
def test_evaluate_refuses_a_crafted_checkpoint_before_building_anything(name, tmp_path):
    path, sentinel, key = _crafted(name, tmp_path)
    with pytest.raises(CheckpointError) as err:
        evaluate_checkpoint(str(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {path}: refusing to build {key}"), message
    assert "crafted or foreign checkpoint" in message
    assert not sentinel.exists()


def test_a_target_is_judged_before_its_module_is_imported(tmp_path, monkeypatch):
    """Importing a module can run code: a foreign target is refused by its name alone."""
    sentinel = tmp_path / "imported"
    (tmp_path / "mlc_crafted_payload.py").write_text(f"open({str(sentinel)!r}, 'w').close()\ndef run(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _config()
    config["loss"]["_target_"] = "mlc_crafted_payload.run"
    with pytest.raises(CheckpointError, match=r"^checkpoint x: refusing to build loss\._target_='mlc_crafted_payload"):
        check_stored_config(config, "checkpoint x")
    assert not sentinel.exists() and "mlc_crafted_payload" not in sys.modules


@pytest.mark.parametrize("target,allowed", [
    ("albumentations.Compose", True), ("albumentations.HorizontalFlip", True), ("albumentations.ToGray", True),
    ("albumentations.OneOf", True), ("torch.optim.AdamW", True), ("torch.optim.Adam", True),
    ("mlc.losses.AnyClassPresenceLoss", True), ("mlc.models.create_backbone", True),
    ("albumentations.save", False), ("albumentations.load", False), ("albumentations.Compose.from_dict", False),
    ("albumentations.core.composition.Compose", False), ("albumentations._compose", False),
    ("torch.optim.lr_scheduler", False), ("torch.optim.Optimizer.zero_grad", False), ("torch.load", False),
    ("mlc.provenance.subprocess.run", False), ("mlc.trusted.check_stored_config", False), ("os.system", False),
    ("builtins.eval", False), ("mlc.losses.AnyClassPresenceLoss ", False), ("", False),
])
def test_allowed_targets_are_exact_strings(target, allowed):
    assert is_allowed_target(target) is allowed


def test_the_allow_list_holds_the_config_groups_targets():
    assert {"mlc.data.DigitScenes", "albumentations.Compose", "torch.optim.SGD", "mlc.optim.warmup_cosine",
            "mlc.engine.TrainerSettings"} <= conf_targets()
    assert not any(t.endswith(".") or "${" in t for t in conf_targets())


@pytest.mark.parametrize("change,key,reason", [
    (lambda c: c["loss"].update(_partial_="yes"), "loss._partial_='yes'", "must be true or false"),
    (lambda c: c["optimizer"].update(_recursive_=1), "optimizer._recursive_=1", "must be true or false"),
    (lambda c: c["loss"].update(_convert_="everything"), "loss._convert_='everything'", "must be one of"),
    (lambda c: c["loss"].update(_args_="rm -rf"), "loss._args_='rm -rf'", "must be a list"),
    (lambda c: c["loss"].update(_target_=["os.system"]), "loss._target_=['os.system']", "not one of mlc's"),
    (lambda c: c["loss"].update({1: "x"}), "loss key 1", "keys must be strings"),
    (lambda c: c["loss"].update(extra=({"_target_": "os.system"},)), "loss.extra", "a tuple, not a plain"),
    (lambda c: c["paths"].update(log="\\${oc.env:HOME}"), "paths.log='\\\\${oc.env:HOME}'", "an interpolation"),
    (lambda c: c.update({"odd key\n": {"a": {"_target_": "os.system"}}}), "['odd key\\n'].a._target_='os.system'",
     "not one of mlc's"),
])
def test_each_rule_names_the_key(change, key, reason):
    config = _config()
    change(config)
    with pytest.raises(CheckpointError) as err:
        check_stored_config(config, "checkpoint x")
    assert str(err.value).startswith(f"checkpoint x: refusing to build {key}: {reason}"), str(err.value)
    assert "\n" not in str(err.value)


def test_a_config_that_is_not_a_mapping_is_refused():
    with pytest.raises(CheckpointError, match=r"^checkpoint x: refusing to build its config: a list, not a mapping"):
        check_stored_config([{"_target_": "os.system"}], "checkpoint x")


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_genuine_option_passes(group, option):
    check_stored_config(_config(f"{group}={option}"), f"{group}={option}")


@pytest.mark.parametrize("preset", ["experiment=demo", "hparams_search=lambda_vs_negative_ratio"])
def test_presets_pass(preset):
    check_stored_config(_config(preset), preset)


def test_a_genuine_checkpoint_loads_with_its_config_unchanged(tmp_path):
    """(A checkpoint of a real training run is loaded and evaluated in tests/test_train_e2e.py.)"""
    config = _config("dataset=csv", "loss=db", "optimizer=sgd")
    path = tmp_path / "last.pt"
    ckpt.save_atomic({"format": ckpt.FORMAT_VERSION, "model": {}, "config": copy.deepcopy(config)}, path)
    assert ckpt.load(path)["config"] == config
