"""KeypointNet (Suwajanakorn, Snavely, Tompson & Norouzi, "Discovery of Latent 3D Keypoints via
End-to-End Geometric Reasoning", NeurIPS 2018), trained on the CPU.

From one image, a fully convolutional network of 13 dilated 3x3 convolutions (dilations 1, 1,
2, 4, 8, 16, 1, 2, 4, 8, 16, 1, 1; BatchNorm and LeakyReLU after all but the last) gives 2N
maps: N logits whose spatial softmax g_i places keypoint i at its expectation (u_i, v_i)
(:func:`kp3d.geometry.soft_argmax`), and N depth maps d_i, with the keypoint's depth
``z_i = sum g_i d_i``. Unprojected with the camera's intrinsics
(:func:`kp3d.geometry.unproject_pinhole`), they are N 3D keypoints in the camera frame.

Training takes two calibrated views of one object (a pair of ``kp3d synth ... --pairs`` or two
views of a ``--rig`` moment) and the weighted sum of the losses of
:mod:`kp3d.losses.keypointnet`: multi-view consistency, relative pose (Procrustes), separation,
silhouette (object masks) and variance. The optional orientation network (half width, the same
13 layers, averaged to one logit) predicts whether the object shows its left side
(:func:`left_side_flag`); the keypoint network sees the flag as two constant input channels:
the true flag in training, the predicted one at inference. Symmetric parts can then get
distinct keypoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kp3d.data.inputs import IMAGES
from kp3d.data.schema import Sample
from kp3d.data.synth.scene import intrinsics as scene_intrinsics
from kp3d.errors import ConfigError
from kp3d.evaluation import image_frame_3d
from kp3d.geometry import (
    compose_extrinsics,
    invert_extrinsics,
    normalised_to_pixel,
    soft_argmax,
    unproject_pinhole,
)
from kp3d.losses.keypointnet import (
    consistency_loss,
    relative_pose_loss,
    separation_loss,
    silhouette_loss,
    variance_loss,
)
from kp3d.methods.base import LossOutput, MethodModel
from kp3d.methods.keypointnet.config import KeypointNetConfig
from kp3d.methods.prediction import Prediction

DILATIONS: tuple[int, ...] = (1, 1, 2, 4, 8, 16, 1, 2, 4, 8, 16, 1, 1)
"""Dilations of KeypointNet's 13 convolutions."""

LEAKY_SLOPE = 0.2
"""Negative slope of the LeakyReLUs."""


class DilatedFCN(nn.Module):
    """KeypointNet's fully convolutional network: (B, c_in, H, W) -> (B, c_out, H, W) through
    13 3x3 convolutions of :data:`DILATIONS` (``width`` channels; BatchNorm and LeakyReLU after
    all but the last)."""

    def __init__(self, c_in: int, c_out: int, *, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = c_in
        for i, d in enumerate(DILATIONS):
            last = i == len(DILATIONS) - 1
            layers.append(nn.Conv2d(c, c_out if last else width, 3, padding=d, dilation=d))
            if not last:
                layers += [nn.BatchNorm2d(width), nn.LeakyReLU(LEAKY_SLOPE)]
            c = width
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def left_side_flag(kp3d: Tensor, left: Sequence[int], right: Sequence[int]) -> Tensor:
    """Whether the camera sees the object's left side: the direction from the right-side
    keypoints' mean to the left-side ones' points towards the camera, i.e. its dot product with
    the vector from the keypoints' centroid to the camera centre (the origin) is positive. For
    an upright object this is the sign of its yaw: facing the image's right (left side in
    view) or its left.

    Args:
        kp3d: (..., K, 3) 3D keypoints in the camera frame.
        left, right: indices of corresponding left and right keypoints (same length, >= 1).

    Returns:
        (...) bool.
    """
    if len(left) != len(right) or not left:
        raise ValueError(
            f"left_side_flag: need as many left as right keypoints (>= 1), got {len(left)} "
            f"and {len(right)}"
        )
    if kp3d.ndim < 2 or kp3d.shape[-1] != 3:
        raise ValueError(f"left_side_flag: kp3d must be (..., K, 3), got {tuple(kp3d.shape)}")
    lateral = kp3d[..., list(left), :].mean(-2) - kp3d[..., list(right), :].mean(-2)
    return (lateral * -kp3d.mean(-2)).sum(-1) > 0


def view_pairs(batch: int, views: int, step: int) -> tuple[Tensor, Tensor]:
    """The two views (a, b) that each sample of a batch trains on at ``step``: ``a`` cycles
    over the views with the step and the sample's index, ``b`` is a different view whose
    offset from ``a`` cycles too, so that every ordered pair comes up (V = 2: 0-1 and 1-0).

    Returns:
        (B,) int64 twice.
    """
    if views < 2:
        raise ValueError(f"view_pairs: need at least 2 views, got {views}")
    a = (step + torch.arange(batch)) % views
    b = (a + 1 + (step // views) % (views - 1)) % views
    return a, b


class KeypointOutput(NamedTuple):
    """The keypoint network's outputs for a batch of B images of H x W."""

    uv: Tensor
    """(B, N, 2) keypoints in pixels."""
    xy: Tensor
    """(B, N, 2) the same in normalised coordinates."""
    z: Tensor
    """(B, N) keypoint depths ``sum g_i d_i``."""
    prob: Tensor
    """(B, N, H, W) the distributions g_i."""
    orientation: Tensor | None
    """(B,) the orientation network's logit of the left-side flag (None without it)."""


class KeypointNet(MethodModel):
    """The keypoint network and the optional orientation network (see the module doc)."""

    def __init__(self, config: KeypointNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.use_orientation = c.orientation == "on"
        if self.use_orientation and not c.left_keypoints:
            raise ConfigError(
                "orientation: on, but no left_keypoints/right_keypoints define the flag (train "
                "on data with 3D keypoints named left_* and right_*, or set --orientation off)"
            )
        c_in = 3 + (2 if self.use_orientation else 0)
        self.net = DilatedFCN(c_in, 2 * c.n_keypoints, width=c.width)
        self.orientation_net = (
            DilatedFCN(3, 1, width=c.width // 2) if self.use_orientation else None
        )

    # ----------------------------------------------------------------------------------------

    def keypoints(self, image: Tensor, *, flag: Tensor | None = None) -> KeypointOutput:
        """The networks on images (B, 3, H, W) in [0, 1]; ``flag`` (B,) bool is the left-side
        flag given to the keypoint network (default: the orientation network's prediction)."""
        c = self.config
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"keypointnet: images must be (B, 3, H, W), got {tuple(image.shape)}")
        H, W = image.shape[-2:]
        x = image * 2 - 1
        logit = None
        if self.orientation_net is not None:
            logit = self.orientation_net(x).float().mean((-2, -1))[:, 0]
            if flag is None:
                flag = logit.detach() > 0
            onehot = torch.stack((flag, ~flag), 1).to(x)
            x = torch.cat((x, onehot[:, :, None, None].expand(-1, -1, H, W)), 1)
        out = self.net(x).float()
        n = c.n_keypoints
        sm = soft_argmax(out[:, :n])
        depth = out[:, n:] + c.depth_offset
        z = (sm.prob * depth).sum((-2, -1))
        uv = normalised_to_pixel(sm.kp, (int(H), int(W)))
        return KeypointOutput(uv, sm.kp, z, sm.prob, logit)

    def intrinsics(self, batch: Sample) -> Tensor:
        """The batch's intrinsics (B, 3, 3), else the camera of :attr:`config` ``fov_deg``."""
        if batch.intrinsics is not None:
            return batch.intrinsics.float()
        assert batch.image is not None
        B, _, H, W = batch.image.shape
        if self.config.fov_deg == 0:
            raise ValueError(
                "keypointnet: images without intrinsics, and the run records no fov_deg"
            )
        if H != W:
            raise ValueError(f"keypointnet: images must be square, got {int(H)} x {int(W)}")
        # The synthetic sets' camera: square pixels, principal point at the centre.
        K = scene_intrinsics(torch.tensor(math.radians(self.config.fov_deg)), int(W))
        return K.to(batch.image.device).expand(B, 3, 3)

    # ----------------------------------------------------------------------------------------

    def losses(self, batch: Sample, step: int) -> LossOutput:
        c = self.config
        image, E, K = batch.image, batch.extrinsics, batch.intrinsics
        if image is None or image.ndim != 5 or E is None or K is None:
            raise ValueError(
                "keypointnet: training batches must be calibrated views (B, V, 3, H, W) with "
                "intrinsics and extrinsics"
            )
        B, V, _, H, W = image.shape
        a, b = view_pairs(B, V, step)
        a, b = a.to(image.device), b.to(image.device)
        rows = torch.arange(B, device=image.device)
        flag = None
        if self.use_orientation:
            if batch.kp3d is None:
                raise ValueError("keypointnet: the orientation network needs 3D keypoints (kp3d)")
            kp3d = batch.kp3d.float()
            flag = torch.cat(
                (
                    left_side_flag(kp3d[rows, a], c.left_keypoints, c.right_keypoints),
                    left_side_flag(kp3d[rows, b], c.left_keypoints, c.right_keypoints),
                )
            )
        out = self.keypoints(torch.cat((image[rows, a], image[rows, b])), flag=flag)
        with torch.autocast(image.device.type, enabled=False):
            E, K = E.float(), K.float()
            E_a, E_b, K_a, K_b = E[rows, a], E[rows, b], K[rows, a], K[rows, b]
            T = compose_extrinsics(E_b, invert_extrinsics(E_a))  # camera a -> camera b
            R, t = T[..., :3], T[..., 3]
            uv_a, uv_b = out.uv[:B], out.uv[B:]
            z_a, z_b = out.z[:B], out.z[B:]
            X_a = unproject_pinhole(uv_a, z_a, K_a)
            X_b = unproject_pinhole(uv_b, z_b, K_b)
            losses = {
                "consistency": consistency_loss(
                    uv_a, z_a, uv_b, z_b, K_a, K_b, R, t, size=(int(H), int(W))
                ),
                "pose": relative_pose_loss(X_a, X_b, R, noise=c.pose_noise),
                "separation": (
                    separation_loss(X_a, c.separation) + separation_loss(X_b, c.separation)
                )
                / 2,
                "variance": variance_loss(out.prob, out.xy),
            }
            if c.lambda_obj is None or c.lambda_obj > 0:
                if batch.mask is not None:
                    mask = torch.cat((batch.mask[rows, a], batch.mask[rows, b])).float()
                    losses["silhouette"] = silhouette_loss(out.prob, mask)
                elif c.lambda_obj is not None:
                    raise ValueError("keypointnet: lambda_obj > 0, but the batch has no masks")
            logs: dict[str, Tensor] = {}
            if out.orientation is not None and flag is not None:
                target = flag.float()
                losses["orientation"] = F.binary_cross_entropy_with_logits(out.orientation, target)
                logs["orientation_accuracy"] = ((out.orientation > 0) == flag).float().mean()
        return LossOutput(losses, logs)

    def loss_weights(self) -> Mapping[str, float]:
        c = self.config
        return {
            "consistency": c.lambda_con,
            "pose": c.lambda_pose,
            "separation": c.lambda_sep,
            "silhouette": 1.0 if c.lambda_obj is None else c.lambda_obj,
            "variance": c.lambda_var,
            "orientation": c.lambda_orient,
        }

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """From each image alone: ``kp2d`` (B, N, 2) pixels, ``kp3d`` (B, N, 3) in the camera
        frame (the batch's intrinsics, else the camera of ``fov_deg``), ``kp3d_image`` (B, N,
        3) the same in the image frame (:func:`kp3d.evaluation.image_frame_3d`), ``heatmaps`` (B, N, H,
        W) the distributions; extras ``keypoint_depth`` (B, N) and, with the orientation
        network, ``left_side`` (B,) its probability. Multi-view batches (B, V, ...) are
        predicted view by view, every field then (B, V, ...)."""
        assert batch.image is not None
        if batch.image.ndim == 5:
            return IMAGES.predict(self, batch)
        H, W = batch.image.shape[-2:]
        out = self.keypoints(batch.image)
        K = self.intrinsics(batch)
        with torch.autocast(batch.image.device.type, enabled=False):
            kp3d = unproject_pinhole(out.uv, out.z, K)
            # The weak-perspective image frame the keypoint-discovery protocol scores in.
            kp3d_image = image_frame_3d(kp3d, out.uv)
        extras = {"keypoint_depth": out.z}
        if out.orientation is not None:
            extras["left_side"] = torch.sigmoid(out.orientation)
        return Prediction(
            kp2d=out.uv,
            kp3d=kp3d,
            kp3d_image=kp3d_image,
            heatmaps=out.prob,
            extras=extras,
            image_size=(int(H), int(W)),
        )


def build(config: KeypointNetConfig) -> KeypointNet:
    return KeypointNet(config)
