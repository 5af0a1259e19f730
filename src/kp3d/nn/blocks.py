"""Convolutional building blocks shared by kp3d's image models.

All blocks keep spatial shape changes explicit in their names (``Down`` halves, ``Up`` doubles)
and use BatchNorm + LeakyReLU(0.2) as AutoLink (He et al., NeurIPS 2022) does. Resampling is
bilinear with ``align_corners=False``, consistent with kp3d's normalised coordinates.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

LEAK = 0.2
"""Negative slope of every LeakyReLU in kp3d's networks (and the ``a`` of their Kaiming init)."""


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
    first one).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)
        self.bn_skip = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), LEAK)
        h = self.bn2(self.conv2(h))
        return F.leaky_relu(h + self.bn_skip(self.skip(F.avg_pool2d(x, 2))), LEAK)


class ConvBNAct(nn.Sequential):
    """3x3 convolution (optionally strided), BatchNorm, LeakyReLU.

    (B, c_in, H, W) -> (B, c_out, H / stride, W / stride).
    """

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(LEAK),
        )


class Up(nn.Module):
    """Bilinear 2x upsampling, then a :class:`ConvBNAct`: (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(double(x))
