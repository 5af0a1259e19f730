"""Losses of the 2D→3D lifters: robust reprojection, shape and camera terms.

All distances use C3DPO's pseudo-Huber on the per-point Euclidean distance ``d``::

    rho(d) = delta * (sqrt(1 + d^2 / delta^2) - 1)

which is ``d^2 / (2 delta)`` for ``d << delta`` (smooth at 0, unlike ``d``) and ``d - delta`` for
``d >> delta`` (robust, in the units of ``d``). Means are taken over the points a mask keeps,
then over the batch, so a masked point contributes neither value nor gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from kp3d.geometry.keypoints import (
    least_squares_scale,
    masked_mean,
    orthographic_translation,
)
from kp3d.geometry.keypoints import visibility_weights as visibility
from kp3d.geometry.rotations import random_rotation


def pseudo_huber(sq_dist: Tensor, delta: float) -> Tensor:
    """``rho(d)`` from a squared distance ``d^2`` (any shape, elementwise); ``delta > 0``."""
    if delta <= 0:
        raise ValueError(f"pseudo_huber: delta must be positive, got {delta}")
    return delta * (torch.sqrt(1 + sq_dist / delta**2) - 1)


def point_loss(a: Tensor, b: Tensor, mask: Tensor | None = None, *, delta: float) -> Tensor:
    """Mean pseudo-Huber distance of point sets ``a``, ``b`` (..., K, D) over ``mask`` (..., K).

    Each sample averages over its masked-in points; the result is the mean over samples (a
    sample with no point in its mask counts as 0).
    """
    per_point = pseudo_huber((a - b).square().sum(-1), delta)
    w = visibility(a, mask)
    return masked_mean(per_point, w, dim=-1).mean()


def reprojection_loss(
    shape_cam: Tensor, kp2d: Tensor, vis: Tensor | None = None, *, delta: float
) -> Tensor:
    """Orthographic reprojection error of camera-frame shapes against observed keypoints.

    Args:
        shape_cam: (B, K, 3) shapes in the camera frame; their x, y are the projection.
        kp2d: (B, K, 2) observed keypoints (same units); vis: (B, K) visibility.
        delta: pseudo-Huber scale, in the units of ``kp2d``.

    The 2D translation is the least-squares optimum over the visible points (so it is not a
    parameter); only visible points enter the loss and its gradient.
    """
    w = visibility(kp2d, vis)
    projected = shape_cam[..., :2]
    t = orthographic_translation(projected, kp2d, w)
    return point_loss(projected + t[..., None, :], kp2d, w, delta=delta)


def canonicalisation_loss(
    shapes: Tensor,
    canonicaliser: Callable[[Tensor], Tensor],
    compose: Callable[[Tensor], Tensor],
    *,
    rotations: int = 1,
    delta: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """C3DPO's canonicalisation (transversality) loss (Novotny et al., ICCV 2019, eq. 6).

    ``mean_k rho(|| compose(Psi(R~ X))_k - X_k ||)`` over the shapes and ``rotations`` uniformly
    random rotations ``R~`` each: the canonicaliser ``Psi`` must recover, from a randomly
    rotated canonical shape, coefficients whose shape is the unrotated one. That is possible
    only if no two shapes of the model are rotations of one another, which makes the canonical
    frame, and with it the depth, unique.

    Args:
        shapes: (B, K, 3) canonical shapes ``X``; gradients flow into them too, so the shape
            space itself is pushed towards being canonicalisable.
        canonicaliser: ``Psi``, (N, 3K) flattened rotated shapes -> (N, n) coefficients.
        compose: the shape model, (N, n) coefficients -> (N, K, 3) shapes.
        rotations: random rotations per shape.
        delta: pseudo-Huber scale (:func:`pseudo_huber`, as C3DPO); None = the plain Euclidean
            distance.
        generator: for the random rotations.

    Returns:
        Scalar, the mean over points, then over shapes and rotations.
    """
    X = shapes.repeat(rotations, 1, 1)
    R = random_rotation(X.shape[0], generator=generator, dtype=X.dtype, device=X.device)
    alpha = canonicaliser((X @ R.transpose(-1, -2)).flatten(-2)).to(X.dtype)
    rebuilt = compose(alpha)
    if delta is None:
        return (X - rebuilt).norm(dim=-1).mean()
    return point_loss(rebuilt, X, delta=delta)


def rotation_loss(R: Tensor, R_target: Tensor, *, delta: float) -> Tensor:
    """Mean pseudo-Huber of the Frobenius distance between rotations (..., 3, 3).

    ``||R - R'||_F = 2 sqrt(2) sin(theta / 2)`` for the relative angle theta, so this is a
    robust, monotone function of the geodesic distance that is smooth at 0.
    """
    return pseudo_huber((R - R_target).square().sum((-2, -1)), delta).mean()


def shape_prior_loss(
    shapes: Tensor, groups: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    """Gaussian shape prior: mean squared distance of shapes (B, K, 3) from their group's mean.

    Non-rigid structure from motion is ambiguous once the basis can explain the 2D views in more
    than one way; the prior picks the explanation with the least deformation, like the
    coefficient prior of probabilistic NRSfM (Torresani et al., TPAMI 2008). Each shape is
    compared with the mean ``M`` of its group in the batch at its own best scale
    ``c_i = <X_i, M> / <M, M>``, so apparent-size changes (which the orthographic camera leaves
    to the shape) cost nothing and the value does not depend on how coefficients are
    parametrised.

    Args:
        shapes: (B, K, 3).
        groups: (B,) int64 group (category) of each shape; None = one group.
        mask: (B, K) keypoints that count (a category's own keypoints); None = all.
    """
    w = visibility(shapes, mask)[..., None]
    if groups is None:
        groups = torch.zeros(shapes.shape[0], dtype=torch.long, device=shapes.device)
    n = int(groups.max()) + 1
    sums = shapes.new_zeros(n, *shapes.shape[1:]).index_add_(0, groups, shapes * w)
    counts = shapes.new_zeros(n, *w.shape[1:]).index_add_(0, groups, w)
    mean = (sums / counts.clamp_min(1))[groups] * w
    c = least_squares_scale(mean, shapes)
    sq_dist = (shapes - c[:, None, None] * mean).square().sum(-1)
    return masked_mean(sq_dist, w[..., 0], dim=-1).mean()
