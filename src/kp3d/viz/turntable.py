"""A turntable of a canonical depth map: the surface seen from a sweep of viewpoints.

Each frame is the canonical image (e.g. Unsup3d's shaded canonical image) warped through the
depth map to a view rotated about the vertical axis by
:func:`kp3d.nn.depth_render.warp_canonical`, the method's own renderer. A depth map has no back,
so the sweep swings to +-``max_angle_deg`` and back (a sine) instead of turning all the way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from kp3d.nn.depth_render import euler_to_matrix, warp_canonical


def turntable_angles(frames: int, *, max_angle_deg: float) -> Tensor:
    """(frames,) yaw angles in radians, ``max_angle * sin(2 pi i / frames)``: frame 0 is the
    canonical view, the sweep returns to it after the last frame."""
    if frames < 1:
        raise ValueError(f"turntable_angles: frames must be >= 1, got {frames}")
    i = torch.arange(frames, dtype=torch.float64)
    return math.radians(max_angle_deg) * torch.sin(2 * math.pi * i / frames)


@torch.no_grad()
def turntable_frames(
    depth: Tensor,
    image: Tensor,
    K: Tensor,
    *,
    frames: int = 16,
    max_angle_deg: float = 60.0,
    scale: int = 2,
    background: float = 0.5,
) -> list[Image.Image]:
    """Frames of the surface ``depth`` coloured by ``image``, rotating about the vertical axis
    through the point on the optical axis at the surface's mean depth.

    Args:
        depth: (1, H, W) canonical depth (camera z > 0).
        image: (3, H, W) colours in [0, 1] (the shaded canonical image).
        K: (3, 3) intrinsics in pixels of the maps.
        frames: number of frames (angles by :func:`turntable_angles`).
        max_angle_deg: largest yaw of the sweep.
        scale: each frame enlarged this many times (nearest neighbour).
        background: grey level of pixels the surface does not cover.

    Returns:
        ``frames`` RGB images of ``scale W x scale H`` pixels.
    """
    if depth.ndim != 3 or depth.shape[0] != 1 or image.shape != (3, *depth.shape[1:]):
        raise ValueError(
            "turntable_frames: depth must be (1, H, W) and image (3, H, W), got "
            f"{tuple(depth.shape)} and {tuple(image.shape)}"
        )
    d = depth.float().cpu()
    yaw = turntable_angles(frames, max_angle_deg=max_angle_deg).float()
    angles = torch.stack((torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)), -1)
    warp = warp_canonical(
        image.float().cpu().expand(frames, -1, -1, -1),
        d.expand(frames, -1, -1, -1),
        euler_to_matrix(angles),
        torch.zeros(frames, 3),
        K.float().cpu(),
        centre_depth=float(d.mean()),
    )
    rgb = torch.where(warp.mask, warp.image.clamp(0, 1), torch.full_like(warp.image, background))
    arr = (rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    H, W = arr.shape[1:3]
    return [Image.fromarray(a).resize((W * scale, H * scale), Image.NEAREST) for a in arr]
