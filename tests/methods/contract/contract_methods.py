"""Two test-only methods that exercise the method contract (registered per test only).

- ``SPEC_MULTIVIEW``: a calibrated multi-view method. Its batch is ``(B, V, ...)`` (a multi-view
  set of ``kp3d synth ... --views V``); it predicts K 3D keypoints per sample in the camera frame
  of the first view and their projections into every view; protocol ``multiview_3d``.
- ``SPEC_DEPTH``: a dense-depth method. Its batch is images; it predicts a depth map per image;
  protocol ``surface_depth``.

Both are supervised regressions (a few steps are enough to test the plumbing), written only
against :mod:`kp3d.methods.base`, :mod:`kp3d.data.inputs` and
:class:`~kp3d.methods.prediction.Prediction`: nothing in ``kp3d.commands`` or ``kp3d.engine``
knows them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kp3d.data.inputs import IMAGES, VIEWS
from kp3d.data.schema import Sample
from kp3d.methods.base import LossOutput, MethodModel, MethodSpec
from kp3d.methods.prediction import Prediction


@dataclass(frozen=True)
class MultiViewConfig:
    """Settings of :class:`MultiViewKeypoints`."""

    k: int = 4
    """Number of 3D keypoints (regressed onto the first k ground-truth joints)."""
    size: int = 32
    """Image side length of every view."""
    hidden: int = 8
    """Channels of the per-view convolution."""


class MultiViewKeypoints(MethodModel):
    """Per-view convolutional features, averaged over the views, regressed to K 3D keypoints."""

    def __init__(self, config: MultiViewConfig) -> None:
        super().__init__()
        self.config = config
        self.conv = nn.Conv2d(3, config.hidden, 3, stride=2, padding=1)
        self.head = nn.Linear(config.hidden * 16, config.k * 3)
        self.register_buffer("offset", torch.tensor([0.0, 0.0, 3.0]))

    def _kp3d(self, image: Tensor) -> Tensor:
        """(B, V, 3, H, W) views -> (B, K, 3) keypoints, first view's camera frame."""
        B, V = image.shape[:2]
        h = torch.relu(self.conv(image.flatten(0, 1)))
        h = nn.functional.adaptive_avg_pool2d(h, 4).flatten(1).view(B, V, -1).mean(1)
        return self.head(h).view(B, self.config.k, 3) + self.offset

    def losses(self, batch: Sample, step: int) -> LossOutput:
        assert batch.image is not None and batch.kp3d is not None
        gt = batch.kp3d[:, 0, : self.config.k]
        return LossOutput({"kp3d": (self._kp3d(batch.image) - gt).square().mean()}, {})

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """``kp3d`` (B, K, 3), first view's camera frame; with cameras, ``kp2d`` (B, V, K, 2)."""
        assert batch.image is not None
        kp3d = self._kp3d(batch.image)
        kp2d = None
        if batch.intrinsics is not None and batch.extrinsics is not None:
            E, K = batch.extrinsics, batch.intrinsics  # (B, V, 3, 4), (B, V, 3, 3)
            R0, t0 = E[:, 0, :, :3], E[:, 0, :, 3]
            world = (kp3d - t0[:, None]) @ R0  # R0^T (X - t0), as rows
            cam = world[:, None] @ E[..., :3].transpose(-1, -2) + E[..., None, :, 3]
            pix = cam @ K.transpose(-1, -2)
            kp2d = pix[..., :2] / pix[..., 2:].clamp_min(1e-3)
        H, W = batch.image.shape[-2:]
        return Prediction(kp3d=kp3d, kp2d=kp2d, image_size=(int(H), int(W)))


@dataclass(frozen=True)
class DepthConfig:
    """Settings of :class:`DenseDepth`."""

    size: int = 32
    """Image side length."""
    hidden: int = 8
    """Channels of the convolutions."""


class DenseDepth(MethodModel):
    """Two convolutions from the image to a positive depth map of the same size."""

    def __init__(self, config: DepthConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Conv2d(3, config.hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(config.hidden, 1, 3, padding=1),
        )

    def _depth(self, image: Tensor) -> Tensor:
        return 2.0 * torch.exp(0.1 * torch.tanh(self.net(image)))

    def losses(self, batch: Sample, step: int) -> LossOutput:
        assert batch.image is not None and batch.depth is not None and batch.mask is not None
        m = (batch.mask > 0.5) & (batch.depth > 0)
        err = (self._depth(batch.image).log() - batch.depth.clamp_min(1e-6).log()).square()
        return LossOutput({"log_depth": (err * m).sum() / m.sum().clamp_min(1)}, {})

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """``depth`` (B, 1, H, W), camera z of the input view."""
        assert batch.image is not None
        H, W = batch.image.shape[-2:]
        return Prediction(depth=self._depth(batch.image), image_size=(int(H), int(W)))


SPEC_MULTIVIEW = MethodSpec(
    config_cls=MultiViewConfig,
    build=MultiViewKeypoints,
    inputs=VIEWS,
    protocols=("multiview_3d", "pose_probe"),
    description="test-only multi-view 3D keypoints",
    train_defaults={"lr": 1e-2, "batch_size": 2, "bf16": False},
)

SPEC_DEPTH = MethodSpec(
    config_cls=DepthConfig,
    build=DenseDepth,
    inputs=IMAGES,
    protocols=("surface_depth",),
    description="test-only dense depth",
    train_defaults={"lr": 1e-2, "batch_size": 4, "bf16": False},
)
