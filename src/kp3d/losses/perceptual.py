"""Perceptual reconstruction loss over a frozen feature network."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn


class FeatureNetwork(Protocol):
    """What :class:`PerceptualLoss` needs: a module with ``features(rgb01) -> list[Tensor]``."""

    def features(self, image: Tensor) -> list[Tensor]: ...


class PerceptualLoss(nn.Module):
    """``sum_t mean |F_t(pred) - F_t(target)|`` over the tapped feature maps F_t of a frozen net.

    The network is frozen (no gradients to its weights, always in eval mode, so its
    BatchNorm statistics never change) and it is not part of the state dict: checkpoints of a
    model holding this loss stay free of the fixed ImageNet weights, which are rebuilt from
    their file when the model is made.

    Args:
        net: the feature network, e.g. :func:`kp3d.nn.perceptual.load_efficientnet_lite0`.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(net, "features", None)):
            raise TypeError(f"PerceptualLoss: {type(net).__name__} has no features(image) method")
        self.net = net.eval().requires_grad_(False)
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_pre_hook(_supply_frozen)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target: (B, 3, H, W) RGB in [0, 1] -> scalar loss (float32)."""
        with torch.no_grad():
            wanted = self.net.features(target)
        got = self.net.features(pred)
        return sum(
            ((g.float() - w.float()).abs().mean() for g, w in zip(got, wanted)),
            torch.zeros((), device=pred.device),
        )


def _drop_frozen(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
        del state_dict[key]


def _supply_frozen(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    # Loading a checkpoint written without the frozen weights: keep the ones already loaded.
    for key, value in module.net.state_dict().items():
        state_dict.setdefault(prefix + "net." + key, value)
