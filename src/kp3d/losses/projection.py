"""Orthographic projection of 3D keypoints and the 2D-3D consistency (projection) loss."""

from __future__ import annotations

from torch import Tensor


def orthographic_project(points: Tensor, scales: Tensor) -> Tensor:
    """``P Pi``, ``Pi = [[s1, 0], [0, s2], [0, 0]]``: (..., K, 3), scales (2,) -> (..., K, 2)."""
    if points.shape[-1] != 3:
        raise ValueError(
            f"orthographic_project: points must be (..., K, 3), got {tuple(points.shape)}"
        )
    if scales.shape != (2,):
        raise ValueError(f"orthographic_project: scales must be (2,), got {tuple(scales.shape)}")
    return points[..., :2] * scales


def projection_loss(
    points: Tensor, kp2d: Tensor, scales: Tensor, *, relative: bool = False, eps: float = 1e-12
) -> Tensor:
    """Mean over keypoints of ``||P Pi - p||``: (..., K, 3), (..., K, 2), (2,) -> (...,).

    Euclidean (not squared) per keypoint, so a few badly explained keypoints do not dominate;
    ``eps`` keeps the gradient finite at a perfect fit.

    With ``relative=True`` the result is divided by the RMS distance of ``kp2d`` from its
    centroid, which makes it invariant to the scale of the 2D configuration. When the 3D
    points' scale is itself fitted to ``kp2d`` (as in autolink3d), the absolute loss can always
    be lowered by shrinking ``kp2d`` towards its centroid, a pull towards collapsed keypoints;
    the relative loss only rewards 2D configurations that a 3D shape explains.
    """
    if kp2d.shape != points.shape[:-1] + (2,):
        raise ValueError(
            f"projection_loss: kp2d must be {tuple(points.shape[:-1]) + (2,)}, "
            f"got {tuple(kp2d.shape)}"
        )
    residual = orthographic_project(points, scales) - kp2d
    loss = ((residual * residual).sum(-1) + eps).sqrt().mean(-1)
    if relative:
        centred = kp2d - kp2d.mean(-2, keepdim=True)
        loss = loss / ((centred * centred).sum(-1).mean(-1) + eps).sqrt()
    return loss
