"""Multi-label losses. Each is a ``torch.nn.Module``; see ``mlc.losses.base`` for the contract."""

from mlc.losses.any_class import AnyClassPresenceLoss
from mlc.losses.base import MultiLabelLoss
from mlc.losses.elementwise import bce_with_logits, focal_with_logits
from mlc.losses.weights import class_balanced_weights

__all__ = ["AnyClassPresenceLoss", "MultiLabelLoss", "bce_with_logits", "class_balanced_weights",
           "focal_with_logits"]
