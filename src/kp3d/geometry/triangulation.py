"""Multi-view triangulation: weighted linear (DLT) triangulation and reprojection residuals.

Each view v with camera matrix ``P_v`` (3, 4) and observation ``(u, v)`` contributes the two
linear equations ``(u P_v^3 - P_v^1) X = 0`` and ``(v P_v^3 - P_v^2) X = 0`` on the homogeneous
point ``X`` (Hartley & Zisserman, *Multiple View Geometry*, 2nd ed., sec. 12.2). With weights
(confidences) the equations of view v are multiplied by ``w_v``, as in the algebraic
triangulation of Iskakov et al., "Learnable Triangulation of Human Pose", ICCV 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kp3d.geometry.cameras import project_points

# Ridge on the normal equations, relative to their trace: keeps points seen in fewer than two
# views finite while moving well-posed solutions by ~1e-14 over their conditioning.
_RIDGE = 1e-14


def _check_views(name: str, points: Tensor, projections: Tensor) -> None:
    if points.ndim < 3 or points.shape[-1] != 2:
        raise ValueError(f"{name}: points must be (..., V, K, 2), got {tuple(points.shape)}")
    if projections.ndim < 3 or tuple(projections.shape[-2:]) != (3, 4):
        raise ValueError(
            f"{name}: projections must be (..., V, 3, 4), got {tuple(projections.shape)}"
        )
    if points.shape[-3] != projections.shape[-3]:
        raise ValueError(
            f"{name}: points have V={points.shape[-3]} views, projections V={projections.shape[-3]}"
        )


def triangulate_dlt(
    points: Tensor, projections: Tensor, *, weights: Tensor | None = None
) -> Tensor:
    """Triangulate K points seen in V views from the weighted DLT equations.

    Args:
        points: (..., V, K, 2) observations in the pixel coordinates of ``projections``.
        projections: (..., V, 3, 4) camera matrices ``K [R | t]`` (:func:`projection_matrix`).
            Each is only defined up to scale; the result does not depend on that scale.
        weights: (..., V, K) non-negative confidences; a zero weight drops that observation.
            ``None`` weighs all observations 1. Leading dims of all three broadcast.

    Returns:
        (..., K, 3) world points, in the input dtype.

    Each camera matrix is first rescaled so that its third row has a unit-norm rotation part;
    the two equations of a view, at a finite point X, then equal ``depth_v(X)`` times the pixel
    reprojection error. Affine cameras (third row ``(0, 0, 0, c)``, e.g. orthographic) work too,
    with ``depth_v = 1``. The equations are solved for ``X = (x, y, z, 1)`` in the least-squares
    sense (normal equations, float64), i.e. the result minimises

        ``sum_v w_v^2 depth_v(X)^2 || project(P_v, X) - points_v ||^2``.

    For exact observations this is the exact point, as is the homogeneous (SVD) DLT. Unlike the
    unnormalised homogeneous DLT, whose answer on noisy data shifts with the world's origin and
    units, it is invariant to similarity transforms of the world, needs no Hartley
    normalisation, and its gradient (plain ``torch.linalg.solve`` backward) has no
    eigenvalue-gap singularities.

    A point with fewer than two views of non-zero weight is not determined; a tiny ridge
    (``1e-14`` of the trace) keeps it and its gradient finite: with one view it lands on that
    view's ray (near the ray's point closest to the world origin), with none at the origin.
    Not an error, to avoid a device sync; test ``(weights > 0).sum(-2) >= 2`` if you need to.

    Raises:
        ValueError: on mismatched shapes or V < 2.
    """
    _check_views("triangulate_dlt", points, projections)
    V, K = points.shape[-3:-1]
    if V < 2:
        raise ValueError(f"triangulate_dlt: need at least 2 views, got V={V}")
    if weights is not None and (weights.ndim < 2 or tuple(weights.shape[-2:]) != (V, K)):
        raise ValueError(
            f"triangulate_dlt: weights must be (..., {V}, {K}), got {tuple(weights.shape)}"
        )
    dtype = torch.result_type(points, projections)

    P = projections.double()
    scale = torch.linalg.vector_norm(P[..., 2, :3], dim=-1)
    # Affine cameras have third row (0, 0, 0, c); their equations are already in pixel units.
    scale = torch.where(scale > 0, scale, P[..., 2, 3].abs())
    P = P / torch.where(scale > 0, scale, 1.0)[..., None, None]
    uv = points.double()
    # Rows (u P^3 - P^1, v P^3 - P^2) per view and point: (..., V, K, 2, 4).
    A = uv[..., None] * P[..., None, 2:3, :] - P[..., None, :2, :]
    if weights is not None:
        A = A * weights.double()[..., None, None]
    normal = torch.einsum("...vkri,...vkrj->...kij", A[..., :3], A[..., :3])  # (..., K, 3, 3)
    rhs = -torch.einsum("...vkri,...vkr->...ki", A[..., :3], A[..., 3])  # (..., K, 3)
    trace = normal.detach().diagonal(dim1=-2, dim2=-1).sum(-1)
    ridge = _RIDGE * trace + 1e-30
    eye = torch.eye(3, dtype=normal.dtype, device=normal.device)
    X = torch.linalg.solve(normal + ridge[..., None, None] * eye, rhs)
    return X.to(dtype)


def reprojection_residuals(X: Tensor, points: Tensor, projections: Tensor) -> Tensor:
    """Projected minus observed pixel coordinates of world points in every view.

    Args:
        X: (..., K, 3) world points.
        points: (..., V, K, 2) observations.
        projections: (..., V, 3, 4) camera matrices.

    Returns:
        (..., V, K, 2) ``project(P_v, X_k) - points[v, k]``.
    """
    _check_views("reprojection_residuals", points, projections)
    if X.ndim < 2 or X.shape[-1] != 3 or X.shape[-2] != points.shape[-2]:
        raise ValueError(
            f"reprojection_residuals: X must be (..., {points.shape[-2]}, 3), got {tuple(X.shape)}"
        )
    return project_points(X[..., None, :, :], projections) - points
