"""Rotation representations, thin and batched over roma.

Matrices act on column vectors (``x' = R x``), as everywhere in kp3d. Quaternions are
``(x, y, z, w)``, scalar last, as in roma and :class:`scipy.spatial.transform.Rotation`;
pass ``order="wxyz"`` for the scalar-first order of pytorch3d and kornia. Axis-angle vectors
are ``angle * unit_axis`` (radians).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import roma
import torch
from torch import Tensor

QuaternionOrder = Literal["xyzw", "wxyz"]


def _check_last(name: str, x: Tensor, shape: tuple[int, ...], what: str) -> None:
    if x.ndim < len(shape) or tuple(x.shape[-len(shape) :]) != shape:
        raise ValueError(f"{name}: expected {what}, got shape {tuple(x.shape)}")


def _check_order(name: str, order: str) -> None:
    if order not in ("xyzw", "wxyz"):
        raise ValueError(f"{name}: order must be 'xyzw' or 'wxyz', got {order!r}")


def rotation_6d_to_matrix(x: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Continuous 6D representation to rotation matrix (Zhou et al., CVPR 2019).

    The 6 numbers are the first two *columns* of the matrix, ``x = (a1, a2)`` with
    ``a1 = x[..., 0:3]``, ``a2 = x[..., 3:6]``; Gram-Schmidt gives ``b1 = a1 / |a1|``,
    ``b2`` = the normalised part of ``a2`` orthogonal to ``b1``, ``b3 = b1 x b2``, and
    ``R = [b1 b2 b3]`` (columns). The inverse is :func:`matrix_to_rotation_6d`.

    Args:
        x: (..., 6) unconstrained.
        eps: norms are clamped to at least ``eps``, so degenerate inputs (``a1 = 0`` or ``a2``
            parallel to ``a1``) give finite, if non-orthonormal, outputs and gradients.

    Returns:
        (..., 3, 3) rotation matrices.
    """
    _check_last("rotation_6d_to_matrix", x, (6,), "(..., 6)")
    columns = x.unflatten(-1, (2, 3)).transpose(-1, -2)  # (..., 3, 2)
    return roma.special_gramschmidt(columns, epsilon=eps)


def matrix_to_rotation_6d(R: Tensor) -> Tensor:
    """Rotation matrix (..., 3, 3) to its 6D representation (..., 6): first column, then second."""
    _check_last("matrix_to_rotation_6d", R, (3, 3), "(..., 3, 3)")
    return R[..., :, :2].transpose(-1, -2).flatten(-2)


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """Axis-angle (..., 3), ``angle * unit_axis``, to rotation matrix (..., 3, 3) (Rodrigues)."""
    _check_last("axis_angle_to_matrix", rotvec, (3,), "(..., 3)")
    return roma.rotvec_to_rotmat(rotvec)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Rotation matrix (..., 3, 3) to axis-angle (..., 3) with angle in [0, pi]."""
    _check_last("matrix_to_axis_angle", R, (3, 3), "(..., 3, 3)")
    return roma.rotmat_to_rotvec(R)


def quaternion_to_matrix(q: Tensor, *, order: QuaternionOrder = "xyzw") -> Tensor:
    """Quaternion (..., 4) to rotation matrix (..., 3, 3).

    ``q`` is normalised first, so any non-zero quaternion is accepted; ``q`` and ``-q`` give the
    same matrix.
    """
    _check_last("quaternion_to_matrix", q, (4,), "(..., 4)")
    _check_order("quaternion_to_matrix", order)
    if order == "wxyz":
        q = roma.quat_wxyz_to_xyzw(q)
    return roma.unitquat_to_rotmat(roma.quat_normalize(q))


def matrix_to_quaternion(R: Tensor, *, order: QuaternionOrder = "xyzw") -> Tensor:
    """Rotation matrix (..., 3, 3) to unit quaternion (..., 4) with non-negative scalar part."""
    _check_last("matrix_to_quaternion", R, (3, 3), "(..., 3, 3)")
    _check_order("matrix_to_quaternion", order)
    q = roma.rotmat_to_unitquat(R)
    # Fix the sign (q and -q are the same rotation) so the output is a function of R.
    q = torch.where(q[..., 3:] < 0, -q, q)
    return roma.quat_xyzw_to_wxyz(q) if order == "wxyz" else q


def random_rotation(
    shape: int | Sequence[int] = (),
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Rotation matrices (*shape, 3, 3) drawn uniformly (Haar measure) on SO(3)."""
    size = (shape,) if isinstance(shape, int) else tuple(shape)
    return roma.random_rotmat(size, dtype=dtype, device=device, generator=generator)


def geodesic_distance(R1: Tensor, R2: Tensor) -> Tensor:
    """Angle in radians, in [0, pi], of the relative rotation ``R1^T R2``; shapes broadcast.

    Computed as ``atan2(sin, cos)`` of the relative rotation, which is accurate for all angles and
    has finite gradients near pi (unlike ``acos`` of the trace or roma's ``asin`` form). At
    ``R1 == R2`` the gradient is 0 (the distance has a cusp there).
    """
    _check_last("geodesic_distance", R1, (3, 3), "(..., 3, 3)")
    _check_last("geodesic_distance", R2, (3, 3), "(..., 3, 3)")
    rel = R1.transpose(-1, -2) @ R2
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    # The skew-symmetric part of rel is sin(angle) [axis]_x.
    skew = torch.stack(
        (
            rel[..., 2, 1] - rel[..., 1, 2],
            rel[..., 0, 2] - rel[..., 2, 0],
            rel[..., 1, 0] - rel[..., 0, 1],
        ),
        dim=-1,
    )
    sin = torch.linalg.vector_norm(skew, dim=-1) / 2
    return torch.atan2(sin, cos)


def rotation_spread(R: Tensor) -> Tensor:
    """Mean geodesic angle (radians, scalar) of rotations ``R`` (N, 3, 3) from their chordal
    mean, the rotation nearest (Frobenius) to the arithmetic mean of the matrices. 0 when every
    rotation is the same; about 2.2 (pi / 2 + 2 / pi) for uniformly random ones. Float64 inside."""
    _check_last("rotation_spread", R, (3, 3), "(N, 3, 3)")
    if R.ndim != 3 or R.shape[0] == 0:
        raise ValueError(f"rotation_spread: need R (N, 3, 3) with N >= 1, got {tuple(R.shape)}")
    Rd = R.double()
    mean = roma.special_procrustes(Rd.mean(0))
    return geodesic_distance(Rd, mean.expand_as(Rd)).mean().to(R.dtype)
