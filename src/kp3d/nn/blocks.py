"""Convolutional building blocks shared by kp3d's image models.

All blocks keep spatial shape changes explicit in their names (``Down`` halves, ``Up`` doubles)
and use BatchNorm + LeakyReLU(0.2) as AutoLink (He et al., NeurIPS 2022) does, or GroupNorm in
its place (``norm="group"``, see :func:`norm_layer`). Resampling is bilinear with
``align_corners=False``, consistent with kp3d's normalised coordinates.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

LEAK = 0.2
"""Negative slope of every LeakyReLU in kp3d's networks (and the ``a`` of their Kaiming init)."""

NormKind = Literal["batch", "group"]
"""Normalisation of the convolutional blocks: ``batch`` (AutoLink's BatchNorm) or ``group``."""

MAX_GROUPS = 8
"""GroupNorm uses the largest divisor of the channel count that is at most this many groups."""


def norm_groups(channels: int) -> int:
    """Groups of :func:`norm_layer`'s GroupNorm: the largest divisor of ``channels`` <= 8."""
    if channels < 1:
        raise ValueError(f"norm_groups: need channels >= 1, got {channels}")
    return next(g for g in range(min(MAX_GROUPS, channels), 0, -1) if channels % g == 0)


def norm_layer(kind: NormKind, channels: int) -> nn.BatchNorm2d | nn.GroupNorm:
    """Normalisation of (B, channels, H, W) feature maps (shape unchanged).

    ``batch`` is :class:`~torch.nn.BatchNorm2d` (statistics over the batch, running averages
    for eval); ``group`` is :class:`~torch.nn.GroupNorm` with :func:`norm_groups` groups, whose
    statistics are per sample, so a sample's output does not depend on the rest of its batch
    (nor on how a global batch is split across processes) and train and eval behave alike.
    Both have a per-channel affine ``weight`` and ``bias``.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(norm_groups(channels), channels)
    raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(get_args(NormKind))}")


def conv3x3(c_in: int, c_out: int, *, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=bias)


def init_kaiming(module: nn.Module) -> None:
    """Kaiming-normal weights for the LeakyReLU slope :data:`LEAK`, zero biases (in place)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=LEAK)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def double(x: Tensor) -> Tensor:
    """Bilinear 2x upsampling: (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ResDown(nn.Module):
    """Residual block that halves the resolution: (B, c_in, H, W) -> (B, c_out, H/2, W/2).

    A strided 3x3 and a 3x3 convolution; the shortcut averages 2x2 cells and projects them with
    a 1x1 convolution (ResNet-D), so it is anti-aliased like AutoLink's bilinear downsampling
    while every convolution runs at the output resolution (a quarter of AutoLink's cost for the
    first one). ``norm`` picks the normalisation (:func:`norm_layer`); the attributes keep their
    ``bn`` names whatever it is, so BatchNorm checkpoints keep their keys.
    """

    def __init__(self, c_in: int, c_out: int, *, norm: NormKind = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(norm, c_out)
        self.conv2 = conv3x3(c_out, c_out, bias=False)
        self.bn2 = norm_layer(norm, c_out)
        self.skip = nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)
        self.bn_skip = norm_layer(norm, c_out)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), LEAK)
        h = self.bn2(self.conv2(h))
        return F.leaky_relu(h + self.bn_skip(self.skip(F.avg_pool2d(x, 2))), LEAK)


class ConvBNAct(nn.Sequential):
    """3x3 convolution (optionally strided), BatchNorm (or ``norm``: :func:`norm_layer`),
    LeakyReLU.

    (B, c_in, H, W) -> (B, c_out, H / stride, W / stride).
    """

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1, norm: NormKind = "batch") -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
            norm_layer(norm, c_out),
            nn.LeakyReLU(LEAK),
        )


class Up(nn.Module):
    """Bilinear 2x upsampling, then a :class:`ConvBNAct`: (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int, *, norm: NormKind = "batch") -> None:
        super().__init__()
        self.conv = ConvBNAct(c_in, c_out, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(double(x))
