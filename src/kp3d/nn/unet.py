"""U-Net image decoder: (B, c_in, H, W) -> (B, c_out, H, W) with skip connections at every level."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kp3d.nn.blocks import LEAK, ConvBNAct, NormKind, conv3x3, double, init_kaiming


class UNet(nn.Module):
    """AutoLink's reconstruction U-Net, made lean for the CPU.

    ``widths[0]`` channels at full resolution, ``widths[i]`` at 1/2^i; the input's height and
    width must be divisible by ``2 ** (len(widths) - 1)``. Going down, each level is a strided
    3x3 convolution and a 3x3 convolution, both at the coarser resolution. Going up, each level
    maps the coarser features to the finer level's width with a 1x1 convolution (at the coarse
    resolution), upsamples bilinearly, *adds* the encoder's map of that resolution and applies
    one 3x3 convolution (LinkNet-style skips). AutoLink instead runs two 3x3 convolutions per
    level at the finer resolution both ways and concatenates the skips; at the same widths this
    network needs under a third of the multiply-adds (about 100M instead of 355M per 64x64
    image at widths 16-128), which is what a CPU budget is spent on.

    Args:
        c_in: input channels (AutoLink: 3 masked-image channels + 1 edge map).
        c_out: output channels.
        widths: channels per level, finest first, at least two levels.
        norm: normalisation of every block (:func:`~kp3d.nn.blocks.norm_layer`; AutoLink:
            ``batch``).
    """

    def __init__(
        self, c_in: int, c_out: int, widths: Sequence[int], *, norm: NormKind = "batch"
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"UNet: need at least two levels, got widths={list(widths)}")
        self.factor = 2 ** (len(widths) - 1)
        self.stem = conv3x3(c_in, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(ConvBNAct(a, b, stride=2, norm=norm), ConvBNAct(b, b, norm=norm))
            for a, b in itertools.pairwise(widths)
        )
        coarse_to_fine = list(zip(widths[:0:-1], widths[-2::-1]))
        self.lateral = nn.ModuleList(nn.Conv2d(c, f, kernel_size=1) for c, f in coarse_to_fine)
        self.ups = nn.ModuleList(ConvBNAct(f, f, norm=norm) for _, f in coarse_to_fine)
        self.head = conv3x3(widths[0], c_out)
        init_kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, H, W) -> (B, c_out, H, W)."""
        H, W = x.shape[-2:]
        if H % self.factor or W % self.factor:
            raise ValueError(f"UNet: input {H}x{W} is not divisible by {self.factor}")
        skips = [F.leaky_relu(self.stem(x), LEAK)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for lateral, up in zip(self.lateral, self.ups):
            h = up(double(lateral(h)) + skips.pop())
        return self.head(h)
