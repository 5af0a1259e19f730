"""Camera models, rigid transforms and image-coordinate conversions (see :mod:`kp3d.geometry`).

Points are row-stacked ``(..., K, 3)``; rotations act on column vectors (``X_cam = R X + t``).
Extrinsics are world-to-camera ``[R | t]`` (..., 3, 4); intrinsics ``K`` (..., 3, 3) are in
continuous pixel coordinates. Pixel <-> normalised conversions use ``align_corners=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check_points(name: str, X: Tensor, d: int = 3) -> None:
    if X.ndim < 2 or X.shape[-1] != d:
        raise ValueError(f"{name}: points must be (..., K, {d}), got shape {tuple(X.shape)}")


def _check_matrix(name: str, what: str, M: Tensor, shape: tuple[int, int]) -> None:
    if M.ndim < 2 or tuple(M.shape[-2:]) != shape:
        raise ValueError(
            f"{name}: {what} must be (..., {shape[0]}, {shape[1]}), got {tuple(M.shape)}"
        )


def project_orthographic(X: Tensor) -> Tensor:
    """Orthographic projection: drop z. X (..., K, 3) -> (..., K, 2)."""
    _check_points("project_orthographic", X)
    return X[..., :2]


def project_weak_perspective(X: Tensor, scale: Tensor, translation: Tensor) -> Tensor:
    """Weak perspective ``uv = scale * X[..., :2] + translation``.

    Args:
        X: (..., K, 3) camera-frame points.
        scale: (...) one scale per point set (a Python float or 0-dim tensor broadcasts).
        translation: (..., 2) image-plane translation (tx, ty).

    Returns:
        (..., K, 2) in whatever image units scale and translation map to.
    """
    _check_points("project_weak_perspective", X)
    scale = torch.as_tensor(scale, dtype=X.dtype, device=X.device)
    if translation.ndim < 1 or translation.shape[-1] != 2:
        raise ValueError(
            "project_weak_perspective: translation must be (..., 2), "
            f"got {tuple(translation.shape)}"
        )
    return scale[..., None, None] * X[..., :2] + translation[..., None, :]


def project_pinhole(X: Tensor, K: Tensor, *, min_depth: float | None = None) -> Tensor:
    """Pinhole projection ``uv = (K X)[:2] / (K X)[2]`` (i.e. ``u = fx X/Z + cx`` for zero skew).

    Computed as ``K (X / Z)``: the point is divided by its depth first, then mapped by the
    intrinsics, so with the usual last row (0, 0, 1) the pixel is ``fx (X / Z) + cx`` to the last
    bit (the order in which the synthetic renderer has always projected).

    Args:
        X: (..., K, 3) camera-frame points, z forward.
        K: (..., 3, 3) intrinsics.
        min_depth: if given, the depth is clamped to at least this value, so points at or behind
            the camera give large but finite coordinates (useful inside training losses).
            Otherwise points with z <= 0 project to meaningless (or infinite) coordinates.

    Returns:
        (..., K, 2) pixel coordinates.
    """
    _check_points("project_pinhole", X)
    _check_matrix("project_pinhole", "K", K, (3, 3))
    z = X[..., 2:]
    if min_depth is not None:
        z = z.clamp_min(min_depth)
    xy1 = torch.cat((X[..., :2] / z, torch.ones_like(z)), dim=-1)
    p = xy1 @ K.transpose(-1, -2)
    return p[..., :2] / p[..., 2:]


def unproject_pinhole(uv: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Inverse of :func:`project_pinhole`: the camera-frame point at ``depth`` along each pixel ray.

    Args:
        uv: (..., K, 2) pixel coordinates.
        depth: (..., K) camera-frame z (not the distance along the ray).
        K: (..., 3, 3) intrinsics (upper triangular, as every pinhole K is).

    Returns:
        (..., K, 3) points with ``X[..., 2] == depth``.
    """
    _check_points("unproject_pinhole", uv, 2)
    _check_matrix("unproject_pinhole", "K", K, (3, 3))
    if depth.shape != uv.shape[:-1]:
        raise ValueError(
            f"unproject_pinhole: depth must be {tuple(uv.shape[:-1])} to match uv, "
            f"got {tuple(depth.shape)}"
        )
    dtype = torch.result_type(uv, K)
    # K is upper triangular: back-substitution of K r = (u, v, 1) in plain arithmetic (no
    # linalg.solve, which ONNX lacks), then r scaled so that its z is the depth.
    k = K.double()[..., None, :, :]  # (..., 1, 3, 3) against (..., K, 2)
    u, v = uv.double().unbind(-1)
    z = depth.double()
    r2 = 1.0 / k[..., 2, 2]
    y = (v - k[..., 1, 2] * r2) / k[..., 1, 1]
    x = (u - k[..., 0, 1] * y - k[..., 0, 2] * r2) / k[..., 0, 0]
    return (torch.stack((x, y, torch.ones_like(x) * r2), dim=-1) * (z / r2)[..., None]).to(dtype)


def transform_points(X: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """``R X + t`` on row-stacked points X (..., K, 3); R (..., 3, 3), t (..., 3) -> (..., K, 3)."""
    _check_points("transform_points", X)
    _check_matrix("transform_points", "R", R, (3, 3))
    if t.ndim < 1 or t.shape[-1] != 3:
        raise ValueError(f"transform_points: t must be (..., 3), got {tuple(t.shape)}")
    return X @ R.transpose(-1, -2) + t[..., None, :]


def make_extrinsics(R: Tensor, t: Tensor) -> Tensor:
    """Stack R (..., 3, 3) and t (..., 3) into ``[R | t]`` (..., 3, 4); leading dims broadcast."""
    _check_matrix("make_extrinsics", "R", R, (3, 3))
    if t.ndim < 1 or t.shape[-1] != 3:
        raise ValueError(f"make_extrinsics: t must be (..., 3), got {tuple(t.shape)}")
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    return torch.cat((R.expand(*batch, 3, 3), t.expand(*batch, 3)[..., None]), dim=-1)


def compose_extrinsics(second: Tensor, first: Tensor) -> Tensor:
    """The transform applying ``first`` then ``second``, like the matrix product ``second @ first``.

    ``[R2 | t2] o [R1 | t1] = [R2 R1 | R2 t1 + t2]``; both (..., 3, 4), leading dims broadcast.
    """
    _check_matrix("compose_extrinsics", "second", second, (3, 4))
    _check_matrix("compose_extrinsics", "first", first, (3, 4))
    R2, t2 = second[..., :3], second[..., 3]
    return torch.cat((R2 @ first[..., :3], (R2 @ first[..., 3:]) + t2[..., None]), dim=-1)


def invert_extrinsics(E: Tensor) -> Tensor:
    """Inverse of a rigid ``[R | t]`` (..., 3, 4): ``[R^T | -R^T t]``; R must be orthonormal."""
    _check_matrix("invert_extrinsics", "extrinsics", E, (3, 4))
    Rt = E[..., :3].transpose(-1, -2)
    return torch.cat((Rt, -(Rt @ E[..., 3:])), dim=-1)


def projection_matrix(K: Tensor, extrinsics: Tensor) -> Tensor:
    """Camera matrix ``P = K [R | t]`` (..., 3, 4), mapping homogeneous world points to pixels."""
    _check_matrix("projection_matrix", "K", K, (3, 3))
    _check_matrix("projection_matrix", "extrinsics", extrinsics, (3, 4))
    return K @ extrinsics


def crop_intrinsics(K: Tensor, scale: Tensor, corner: Tensor) -> Tensor:
    """Intrinsics of a crop of the image, resampled: the patch's pixels ``u_p = s (u - b)``.

    A box whose top-left corner is ``b = (b_x, b_y)`` (pixels of the image) resampled by
    factors ``s = (s_x, s_y)`` (patch pixels per image pixel) sees a point through

        ``K_p = [[s_x f_x, 0, s_x (c_x - b_x)], [0, s_y f_y, s_y (c_y - b_y)], [0, 0, 1]]``

    (Honari & Fua 2022, the detector's patch), i.e. ``K_p = A K`` with
    ``A = [[s_x, 0, -s_x b_x], [0, s_y, -s_y b_y], [0, 0, 1]]`` (skew is scaled like f_x).

    Args:
        K: (..., 3, 3) intrinsics of the image.
        scale: (..., 2) ``(s_x, s_y)``.
        corner: (..., 2) ``(b_x, b_y)``. Leading dims of the three broadcast.

    Returns:
        (..., 3, 3) the patch's intrinsics.
    """
    _check_matrix("crop_intrinsics", "K", K, (3, 3))
    for name, x in (("scale", scale), ("corner", corner)):
        if x.ndim < 1 or x.shape[-1] != 2:
            raise ValueError(f"crop_intrinsics: {name} must be (..., 2), got {tuple(x.shape)}")
    s, b = scale[..., :, None], corner[..., :, None]  # (..., 2, 1)
    rows = s * (K[..., :2, :] - b * K[..., 2:, :])  # (..., 2, 3)
    last = K[..., 2:, :].expand(*rows.shape[:-2], 1, 3)
    return torch.cat((rows, last), dim=-2)


def project_points(X: Tensor, P: Tensor) -> Tensor:
    """Project world points X (..., K, 3) with camera matrices P (..., 3, 4) to pixels (..., K, 2).

    Unlike :func:`project_pinhole` there is no depth clamp: points on the camera plane give inf.
    """
    _check_points("project_points", X)
    _check_matrix("project_points", "P", P, (3, 4))
    p = X @ P[..., :3].transpose(-1, -2) + P[..., None, :, 3]
    return p[..., :2] / p[..., 2:]


def _size(name: str, xy: Tensor, size: Sequence[float]) -> tuple[float, float]:
    if xy.ndim < 1 or xy.shape[-1] != 2:
        raise ValueError(f"{name}: coordinates must be (..., 2), got shape {tuple(xy.shape)}")
    if len(size) != 2 or not (size[0] > 0 and size[1] > 0):
        raise ValueError(f"{name}: size must be (H, W) with H, W > 0, got {tuple(size)}")
    return float(size[0]), float(size[1])


def pixel_to_normalised(uv: Tensor, size: Sequence[float]) -> Tensor:
    """Pixel (u, v) (..., 2) to normalised [-1, 1] (align_corners=False); ``size = (H, W)``."""
    H, W = _size("pixel_to_normalised", uv, size)
    return uv * uv.new_tensor((2 / W, 2 / H)) - 1


def normalised_to_pixel(xy: Tensor, size: Sequence[float]) -> Tensor:
    """Normalised (x, y) (..., 2) to pixel (u, v) for an image of ``size = (H, W)``."""
    H, W = _size("normalised_to_pixel", xy, size)
    return (xy + 1) * xy.new_tensor((W / 2, H / 2))


def pixel_to_unit(uv: Tensor, size: Sequence[float]) -> Tensor:
    """Pixel (u, v) (..., 2) to unit [0, 1] coordinates ``(u / W, v / H)``; ``size = (H, W)``."""
    H, W = _size("pixel_to_unit", uv, size)
    return uv / uv.new_tensor((W, H))


def unit_to_pixel(xy: Tensor, size: Sequence[float]) -> Tensor:
    """Unit [0, 1] coordinates (..., 2) to pixel (u, v) ``(x W, y H)``; ``size = (H, W)``."""
    H, W = _size("unit_to_pixel", xy, size)
    return xy * xy.new_tensor((W, H))
