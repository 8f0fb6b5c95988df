"""Backbones: every model is built by ``timm.create_model``.

mlc adds one model to timm's registry, ``mlc_cnn_small``: a BatchNorm CNN small enough to train on
the built-in 32×32 scenes in seconds per epoch on 2 CPU cores (BatchNorm is what lets a small CNN
leave the "predict nothing" plateau that abundant negatives create). The paper's backbones
(TResNet-L, ViT-B/16, MaxViT-S) are plain timm names; see ``conf/backbone/``.

Pretrained weights never come from a hub here: ``weights_file`` points at a local checkpoint and is
loaded through timm's own pretrained machinery (``pretrained_cfg_overlay=dict(file=...)``), which
drops a classifier of the wrong size. Asking for ``pretrained`` without a file is an error that says
so, instead of a network timeout.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from mlc.errors import ConfigError, require


class SmallCNN(nn.Module):
    """Three stages of two 3×3 conv-BN-ReLU blocks (max-pool between stages), global pool, linear.

    Global *max* pooling by default: the task is "is this digit anywhere in the scene", which a
    max over positions answers directly; ``global_pool='avg'`` is available for comparison.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64),
                 global_pool: str = "max", drop_rate: float = 0.0, **_: object):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for stage, width in enumerate(widths):
            if stage:
                layers.append(nn.MaxPool2d(2))
            for _block in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features * self.global_pool.feat_mult(), num_classes) \
            if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features * self.global_pool.feat_mult(), num_classes) \
            if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs({
    "mlc_cnn_small": {"url": "", "num_classes": 0, "input_size": (3, 32, 32), "pool_size": None,
                      "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "first_conv": "features.0",
                      "classifier": "head"},
})


@register_model
def mlc_cnn_small(pretrained: bool = False, **kwargs) -> SmallCNN:
    return build_model_with_cfg(SmallCNN, "mlc_cnn_small", pretrained, **kwargs)


def check_backbone(name: str, pretrained: bool = False, weights_file: str | None = None) -> None:
    """Fail fast (before any data or compute) on an unknown model name or missing weights."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models())"
        raise ConfigError("name", name, f"not a timm model{hint}")
    if pretrained:
        require(bool(weights_file), "weights_file", weights_file,
                "pretrained=true needs a local weights file: no hub downloads here (or set pretrained=false)")
        require(Path(str(weights_file)).is_file(), "weights_file", weights_file, "file not found")


def create_backbone(name: str, num_classes: int, pretrained: bool = False, weights_file: str | None = None,
                    in_chans: int = 3, **model_kwargs) -> nn.Module:
    """``timm.create_model`` with a local weights file instead of a hub download."""
    check_backbone(name, pretrained, weights_file)
    extra = {}
    if pretrained:
        extra["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                             **extra, **model_kwargs)
