"""Keypoint detector: convolutional encoder -> K heatmaps -> spatial softmax -> soft-argmax."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from kp3d.geometry import soft_argmax
from kp3d.nn.blocks import NormKind, ResDown, Up, conv3x3, init_kaiming

ENCODER_STRIDE = 16
"""The encoder halves the resolution four times: inputs must be divisible by this."""


class Detection(NamedTuple):
    """Output of :class:`Detector`."""

    kp: Tensor
    """(B, K, 2) float32 expected keypoint positions, normalised [-1, 1] (align_corners=False)."""
    prob: Tensor
    """(B, K, h, w) float32 spatial softmax of each heatmap."""
    features: Tensor
    """(B, C, H/16, W/16) the encoder's bottleneck features."""


class Detector(nn.Module):
    """AutoLink's detector with configurable width and heatmap resolution.

    Four :class:`~kp3d.nn.blocks.ResDown` blocks take the image to 1/16 resolution with widths
    ``w, 2w, 4w, 8w``; ``n_up`` bilinear-upsampling blocks (halving the width each time, at
    least ``w``) bring it to the heatmap resolution ``1/16 * 2**n_up`` of the input; a 3x3
    convolution gives one logit map per keypoint. As in AutoLink there are no skip connections:
    every heatmap is computed from the bottleneck, which sees the whole object (U-Net skips:
    docs/results.md).

    Args:
        k: number of keypoints.
        width: channels of the first block.
        n_up: number of 2x upsampling steps after the encoder (AutoLink: 2, i.e. 1/4 resolution).
        c_in: image channels.
        norm: normalisation of every block (:func:`~kp3d.nn.blocks.norm_layer`; AutoLink:
            ``batch``).
    """

    def __init__(
        self, k: int, *, width: int, n_up: int, c_in: int = 3, norm: NormKind = "batch"
    ) -> None:
        super().__init__()
        if k < 1 or width < 1 or n_up < 0:
            raise ValueError(
                f"Detector: need k >= 1, width >= 1, n_up >= 0; got {k}, {width}, {n_up}"
            )
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.encoder = nn.Sequential(
            *(ResDown(a, b, norm=norm) for a, b in zip([c_in, *widths[:-1]], widths))
        )
        self.feature_channels = widths[-1]
        ups = []
        c = widths[-1]
        for _ in range(n_up):
            ups.append(Up(c, max(c // 2, width), norm=norm))
            c = max(c // 2, width)
        self.ups = nn.Sequential(*ups)
        self.head = conv3x3(c, k)
        init_kaiming(self)

    def forward(self, image: Tensor) -> Detection:
        """image (B, c_in, H, W), H and W divisible by 16 -> :class:`Detection`."""
        H, W = image.shape[-2:]
        if H % ENCODER_STRIDE or W % ENCODER_STRIDE:
            raise ValueError(f"Detector: image {H}x{W} is not divisible by {ENCODER_STRIDE}")
        features = self.encoder(image)
        logits = self.head(self.ups(features))
        # Softmax and expectation in float32 even under bf16 autocast (whose 8-bit mantissa
        # would quantise keypoints to 1/256 of the image).
        with torch.autocast(image.device.type, enabled=False):
            kp, prob = soft_argmax(logits.float())
        return Detection(kp, prob, features)
