"""KeypointNet's losses (Suwajanakorn, Snavely, Tompson & Norouzi, "Discovery of Latent 3D
Keypoints via End-to-End Geometric Reasoning", NeurIPS 2018, Sec. 3).

N keypoints per view: pixels ``uv`` (B, N, 2), depths ``z`` (B, N), their spatial-softmax
distributions ``prob`` (B, N, H, W); two views a and b of one object with intrinsics ``K_a``,
``K_b`` and the rigid transform ``(R, t)`` from camera a's frame to camera b's
(``X_b = R X_a + t``). The projection pi and its inverse are :func:`kp3d.geometry.project_pinhole`
and :func:`kp3d.geometry.unproject_pinhole`. Image coordinates in the losses are normalised to
[-1, 1] (:func:`kp3d.geometry.pixel_to_normalised`), so that their weights do not depend on
the image size. Each loss is the batch mean of the per-sample value below.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kp3d.geometry import (
    expected_variance,
    geodesic_distance,
    invert_extrinsics,
    make_extrinsics,
    pixel_to_normalised,
    procrustes,
    project_pinhole,
    transform_points,
    unproject_pinhole,
)

MIN_DEPTH = 1e-3
"""Depths are clamped to at least this (scene units) before dividing by them in pi: keypoints
mapped behind the other camera give large but finite errors."""

MASS_EPS = 1e-8
"""Added to a distribution's mass on the object before its log (a keypoint wholly off the
object gives -log(1e-8), not infinity)."""


def _check(name: str, uv: Tensor, z: Tensor) -> None:
    if uv.ndim < 2 or uv.shape[-1] != 2 or z.shape != uv.shape[:-1]:
        raise ValueError(
            f"{name}: need uv (..., N, 2) and z (..., N), got {tuple(uv.shape)} and "
            f"{tuple(z.shape)}"
        )


def consistency_loss(
    uv_a: Tensor,
    z_a: Tensor,
    uv_b: Tensor,
    z_b: Tensor,
    K_a: Tensor,
    K_b: Tensor,
    R: Tensor,
    t: Tensor,
    *,
    size: Sequence[float],
) -> Tensor:
    """Multi-view consistency ``L_con = 1/(2N) sum_i || [u_i, v_i, u'_i, v'_i] -
    [u^'_i, v^'_i, u^_i, v^_i] ||^2``: each view's keypoints against the other view's mapped by
    ``pi T pi^-1`` (a to b by ``(R, t)``, b to a by its inverse), in normalised coordinates
    (squared norm, as eq. 2 of the paper).

    Args:
        uv_a, uv_b: (B, N, 2) pixels; z_a, z_b: (B, N) camera-frame depths.
        K_a, K_b: (B, 3, 3) intrinsics; R: (B, 3, 3), t: (B, 3) camera a to camera b.
        size: (H, W) of the images (the same for both views).

    Returns:
        () the batch mean; 0 for keypoints that are exact projections of one 3D point set.
    """
    _check("consistency_loss", uv_a, z_a)
    _check("consistency_loss", uv_b, z_b)
    X_a = unproject_pinhole(uv_a, z_a, K_a)
    X_b = unproject_pinhole(uv_b, z_b, K_b)
    a_in_b = project_pinhole(transform_points(X_a, R, t), K_b, min_depth=MIN_DEPTH)
    inverse = invert_extrinsics(make_extrinsics(R, t))
    b_in_a = project_pinhole(
        transform_points(X_b, inverse[..., :3], inverse[..., 3]), K_a, min_depth=MIN_DEPTH
    )

    def sq(p: Tensor, q: Tensor) -> Tensor:
        return (pixel_to_normalised(p, size) - pixel_to_normalised(q, size)).square().sum(-1)

    err = sq(uv_b, a_in_b) + sq(uv_a, b_in_a)  # (B, N)
    return (err.sum(-1) / (2 * uv_a.shape[-2])).mean()


def relative_pose_loss(
    X_a: Tensor,
    X_b: Tensor,
    R: Tensor,
    *,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Relative pose ``L_pose = 2 arcsin(||R^ - R||_F / (2 sqrt 2))``, R^ the rotation of the
    orthogonal Procrustes alignment of the centred keypoints of view a onto view b's
    (:func:`kp3d.geometry.procrustes`, float64 SVD with a damped backward).

    ``||R^ - R||_F^2 = 4 (1 - cos theta)`` for the angle theta of ``R^T R^``, so the loss is
    that angle, computed by :func:`kp3d.geometry.geodesic_distance` (accurate at every angle).
    Gaussian noise of standard deviation ``noise`` is added to both point sets (the paper's
    trick: coincident or collinear keypoints would leave the SVD's gradient undefined).

    Args:
        X_a, X_b: (B, N, 3) the keypoints in the camera frames of views a and b.
        R: (B, 3, 3) the true rotation from camera a's frame to camera b's.
        noise: standard deviation of the added noise (scene units); 0 = none.
        generator: draws the noise.

    Returns:
        () the batch mean, radians.
    """
    if X_a.shape != X_b.shape or X_a.ndim < 2 or X_a.shape[-1] != 3:
        raise ValueError(
            f"relative_pose_loss: need X_a and X_b (..., N, 3) alike, got {tuple(X_a.shape)} "
            f"and {tuple(X_b.shape)}"
        )
    if noise < 0:
        raise ValueError(f"relative_pose_loss: noise must be >= 0, got {noise}")
    if noise > 0:
        X_a = X_a + noise * torch.randn(X_a.shape, generator=generator).to(X_a)
        X_b = X_b + noise * torch.randn(X_b.shape, generator=generator).to(X_b)
    R_hat = procrustes(X_a, X_b, mode="orthogonal").R
    return geodesic_distance(R_hat, R.to(R_hat)).mean()


def separation_loss(X: Tensor, delta: float) -> Tensor:
    """Separation ``L_sep = 1/N^2 sum_{i != j} max(0, delta^2 - ||X_i - X_j||^2)``: keypoints
    closer than ``delta`` in 3D push apart.

    Args:
        X: (B, N, 3) keypoints (scene units); delta: the margin, > 0.

    Returns:
        () the batch mean.
    """
    if X.ndim < 2:
        raise ValueError(f"separation_loss: need X (..., N, D), got {tuple(X.shape)}")
    if not delta > 0:
        raise ValueError(f"separation_loss: delta must be > 0, got {delta}")
    n = X.shape[-2]
    d2 = (X[..., :, None, :] - X[..., None, :, :]).square().sum(-1)  # (B, N, N)
    off = ~torch.eye(n, dtype=torch.bool, device=X.device)
    hinge = (delta**2 - d2).clamp_min(0) * off
    return (hinge.sum((-2, -1)) / n**2).mean()


def silhouette_loss(prob: Tensor, mask: Tensor) -> Tensor:
    """Silhouette ``L_obj = 1/N sum_i -log sum_{u, v} b(u, v) g_i(u, v)``: each distribution's
    mass on the object mask b.

    Args:
        prob: (B, N, H, W) distributions (each summing to 1).
        mask: (B, 1, H, W) object mask in [0, 1]; resized (area average) to (H, W) if it
            differs.

    Returns:
        () the batch mean; 0 when every distribution lies on the object.
    """
    if prob.ndim != 4 or mask.ndim != 4 or mask.shape[:2] != (prob.shape[0], 1):
        raise ValueError(
            f"silhouette_loss: need prob (B, N, H, W) and mask (B, 1, h, w), got "
            f"{tuple(prob.shape)} and {tuple(mask.shape)}"
        )
    if mask.shape[-2:] != prob.shape[-2:]:
        mask = torch.nn.functional.adaptive_avg_pool2d(mask, prob.shape[-2:])
    mass = (prob * mask.to(prob)).sum((-2, -1))  # (B, N)
    return -(mass + MASS_EPS).log().mean()


def variance_loss(prob: Tensor, uv: Tensor) -> Tensor:
    """Variance ``L_var = 1/N sum_i sum_{u, v} g_i(u, v) ||[u, v] - [u_i, v_i]||^2`` in
    normalised coordinates (:func:`kp3d.geometry.expected_variance`, both axes summed):
    peaked distributions.

    Args:
        prob: (B, N, H, W) distributions; uv: (B, N, 2) their means in normalised coordinates.

    Returns:
        () the batch mean.
    """
    return expected_variance(prob, mean=uv).sum(-1).mean()


__all__ = [
    "consistency_loss",
    "relative_pose_loss",
    "separation_loss",
    "silhouette_loss",
    "variance_loss",
]
