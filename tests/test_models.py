"""Backbones through timm: the registered small CNN, local pretrained weights, the paper's backbones."""

from __future__ import annotations

import pytest
import timm
import torch
from hydra.utils import instantiate

from mlc.errors import ConfigError
from mlc.models import SmallCNN, create_backbone
from tests.conftest import compose


def test_small_cnn_is_a_timm_model_with_batchnorm():
    model = timm.create_model("mlc_cnn_small", num_classes=6)
    assert isinstance(model, SmallCNN)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 6)
    model.reset_classifier(3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_pretrained_weights_from_a_local_file_keep_features_and_drop_the_head(tmp_path):
    source = timm.create_model("mlc_cnn_small", num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("mlc_cnn_small", num_classes=6, pretrained=True, weights_file=str(path))
    torch.testing.assert_close(model.features[0].weight, source.features[0].weight)
    assert model.head.out_features == 6


def test_missing_weights_are_a_clear_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no hub downloads") as err:
        create_backbone("mlc_cnn_small", num_classes=6, pretrained=True)
    assert err.value.key == "weights_file"
    with pytest.raises(ConfigError, match="file not found"):
        create_backbone("mlc_cnn_small", num_classes=6, pretrained=True, weights_file=str(tmp_path / "nope.pth"))


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean.*resnet50") as err:
        create_backbone("resnet5O", num_classes=6)
    assert err.value.key == "name"



def test_the_models_the_config_check_knows_without_timm_are_the_ones_mlc_registers():
    from mlc.config import OWN_MODELS

    assert sorted(OWN_MODELS) == timm.list_models("mlc_*"), "keep mlc.config.OWN_MODELS in step with mlc.models"
    assert all(timm.is_model(name) for name in OWN_MODELS)


def test_a_config_mistake_in_a_run_of_mlcs_own_model_is_found_before_timm_is_imported():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys\nfrom mlc.config import check_config\nfrom mlc.errors import ConfigError\n"
            "from tests.conftest import compose\ntry:\n    check_config(compose(['loss.lam=-0.1']))\n"
            "except ConfigError as err:\n    print(err.key, 'timm' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["loss.lam", "False"], out.stderr[-2000:]

@pytest.mark.slow
@pytest.mark.parametrize("option,size", [("cnn_wide", 32), ("resnet18", 64), ("tresnet_l", 224), ("vit_b16", 224),
                                         ("maxvit_s", 224)])
def test_paper_backbone_configs_build_and_run(option, size):
    cfg = compose([f"backbone={option}"])
    model = instantiate(cfg.backbone, num_classes=6).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 6)
