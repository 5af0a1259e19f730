"""A depth map as a triangle mesh: one vertex per pixel centre, two triangles per 2x2 block.

This is the surface Unsup3d (Wu, Rupprecht & Vedaldi, CVPR 2020) renders: every pixel centre
``(i + 0.5, j + 0.5)`` is unprojected to ``z K^{-1} (u, v, 1)`` (:func:`depth_to_points`) and
neighbouring centres are joined by :func:`grid_faces`. :func:`save_depth_mesh` writes it, with
per-vertex colours, as Wavefront OBJ or ASCII PLY. The other way, :func:`lift_points` reads a
depth map at 2D points and returns their 3D points in the camera frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from kp3d.geometry.cameras import unproject_pinhole


def pixel_grid(height: int, width: int, *, like: Tensor) -> Tensor:
    """(H, W, 2) pixel centres ``(u, v) = (i + 0.5, j + 0.5)``, dtype and device of ``like``."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=like.dtype, device=like.device) + 0.5,
        torch.arange(width, dtype=like.dtype, device=like.device) + 0.5,
        indexing="ij",
    )
    return torch.stack((u, v), -1)


def depth_to_points(depth: Tensor, K: Tensor) -> Tensor:
    """Camera-frame points of every pixel centre of a depth map.

    Args:
        depth: (B, 1, H, W) camera-frame z > 0.
        K: (3, 3) or (B, 3, 3) pinhole intrinsics in pixels of the map.

    Returns:
        (B, H*W, 3) points, row-major pixel order (vertex ``j * W + i`` is pixel (i, j)).
    """
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth_to_points: depth must be (B, 1, H, W), got {tuple(depth.shape)}")
    B, _, H, W = depth.shape
    uv = pixel_grid(H, W, like=depth).reshape(1, H * W, 2).expand(B, -1, -1)
    K = K.to(depth.dtype)
    if K.ndim == 2:
        K = K.expand(B, 3, 3)
    return unproject_pinhole(uv, depth.reshape(B, H * W), K)


def grid_faces(height: int, width: int, *, device: torch.device | str | None = None) -> Tensor:
    """(2 (H-1)(W-1), 3) int64 triangles over an H x W vertex grid (row-major vertex ids).

    Each 2x2 block ``a b / c d`` gives ``(a, c, b)`` and ``(b, c, d)``, whose outward side
    (:func:`kp3d.data.synth.raster.rasterize`'s convention) faces the camera for a map seen from
    its own view.
    """
    if height < 2 or width < 2:
        raise ValueError(f"grid_faces: need at least 2 x 2 vertices, got {height} x {width}")
    idx = torch.arange(height * width, device=device).view(height, width)
    a, b = idx[:-1, :-1], idx[:-1, 1:]
    c, d = idx[1:, :-1], idx[1:, 1:]
    first = torch.stack((a, c, b), -1).reshape(-1, 3)
    second = torch.stack((b, c, d), -1).reshape(-1, 3)
    return torch.cat((first, second))


def save_depth_mesh(
    path: str | Path, depth: Tensor, K: Tensor, *, colors: Tensor | None = None
) -> Path:
    """Write one depth map as a mesh: OBJ (``.obj``, ``v x y z r g b`` lines) or ASCII PLY
    (``.ply``, uchar colours), chosen by the suffix.

    Args:
        path: output file.
        depth: (1, H, W) or (H, W) camera-frame depth.
        K: (3, 3) intrinsics in pixels of the map.
        colors: optional (3, H, W) RGB in [0, 1] per vertex (e.g. the shaded canonical image).

    Returns:
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".obj", ".ply"):
        raise ValueError(f"save_depth_mesh: {path}: the suffix must be .obj or .ply")
    d = depth.detach().reshape(1, 1, *depth.shape[-2:]).double().cpu()
    H, W = d.shape[-2:]
    if colors is not None and tuple(colors.shape) != (3, H, W):
        raise ValueError(
            f"save_depth_mesh: colors must be (3, {H}, {W}), got {tuple(colors.shape)}"
        )
    pts = depth_to_points(d, K.detach().double().cpu())[0].tolist()
    faces = grid_faces(H, W).tolist()
    rgb = (
        None
        if colors is None
        else colors.detach().double().cpu().clamp(0, 1).reshape(3, -1).T.tolist()
    )
    lines: list[str] = []
    if suffix == ".obj":
        for i, p in enumerate(pts):
            c = "" if rgb is None else " " + " ".join(f"{x:.4f}" for x in rgb[i])
            lines.append(f"v {p[0]:.7g} {p[1]:.7g} {p[2]:.7g}{c}")
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    else:
        lines += ["ply", "format ascii 1.0", f"element vertex {len(pts)}"]
        lines += [f"property float {n}" for n in "xyz"]
        if rgb is not None:
            lines += [f"property uchar {n}" for n in ("red", "green", "blue")]
        lines += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        lines.append("end_header")
        for i, p in enumerate(pts):
            c = "" if rgb is None else " " + " ".join(str(round(255 * x)) for x in rgb[i])
            lines.append(f"{p[0]:.7g} {p[1]:.7g} {p[2]:.7g}{c}")
        lines += [f"3 {a} {b} {c}" for a, b, c in faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class LiftedPoints(NamedTuple):
    """2D points lifted to 3D through a depth map (:func:`lift_points`)."""

    points: Tensor
    """(B, K, 3) camera-frame points; NaN where not ``valid``."""
    depth: Tensor
    """(B, K) the interpolated camera z; NaN where not ``valid``."""
    valid: Tensor
    """(B, K) bool: the point is finite, inside the map and (with a mask) on the foreground."""


def sample_depth(depth: Tensor, uv: Tensor, *, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bilinear depth at continuous pixel coordinates, foreground pixels only.

    With a mask ``m``, the four neighbours are weighted by their bilinear weight times ``m``,
    ``z = sum(w m z) / sum(w m)``, so that the background's depth never leaks into the
    surface's edge; the point is valid where the interpolated ``sum(w m)`` is at least 0.5 (the
    point is on the foreground) and ``uv`` lies inside ``[0, W] x [0, H]``. Beyond the outer
    pixel centres the border pixels are repeated.

    Args:
        depth: (B, 1, H, W) depth map.
        uv: (B, K, 2) pixel coordinates of the map (:mod:`kp3d.geometry` convention).
        mask: optional (B, 1, H, W) foreground probability in [0, 1].

    Returns:
        ``(z, valid)``: (B, K) depth (NaN where not valid) and (B, K) bool.
    """
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"sample_depth: depth must be (B, 1, H, W), got {tuple(depth.shape)}")
    B, _, H, W = depth.shape
    if uv.ndim != 3 or uv.shape[0] != B or uv.shape[-1] != 2:
        raise ValueError(f"sample_depth: uv must be ({B}, K, 2), got {tuple(uv.shape)}")
    if mask is not None and mask.shape != depth.shape:
        raise ValueError(
            f"sample_depth: mask must be {tuple(depth.shape)} like depth, got {tuple(mask.shape)}"
        )
    uv = uv.to(depth.dtype)
    finite = uv.isfinite().all(-1)
    inside = finite & (uv[..., 0] >= 0) & (uv[..., 0] <= W) & (uv[..., 1] >= 0)
    inside = inside & (uv[..., 1] <= H)
    safe = torch.where(finite[..., None], uv, torch.zeros_like(uv))
    grid = torch.stack((2 * safe[..., 0] / W - 1, 2 * safe[..., 1] / H - 1), -1)[:, :, None]
    m = torch.ones_like(depth) if mask is None else mask.to(depth.dtype)
    both = torch.cat((depth * m, m), 1)
    sampled = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
    num, weight = sampled[:, 0, :, 0], sampled[:, 1, :, 0]  # (B, K)
    valid = inside & (weight >= 0.5)
    z = num / torch.where(valid, weight, torch.ones_like(weight))
    return torch.where(valid, z, torch.full_like(z, float("nan"))), valid


def lift_points(
    uv: Tensor, depth: Tensor, K: Tensor, *, mask: Tensor | None = None
) -> LiftedPoints:
    """Lift 2D points to the camera frame with a depth map: ``X = z(u, v) K^{-1} (u, v, 1)``.

    The depth is read by :func:`sample_depth` (bilinear, foreground only) and the point
    unprojected by :func:`kp3d.geometry.cameras.unproject_pinhole`. This is how 2D keypoints of
    any method are lifted with a depth-predicting method (e.g. ``unsup3d``: its
    ``Prediction.depth``, ``mask`` and ``extras["intrinsics"]``), the "2D keypoints + Unsup3d"
    baseline of 3D keypoint discovery papers.

    Args:
        uv: (B, K, 2) pixel coordinates of the depth map.
        depth: (B, 1, H, W) camera-frame z.
        K: (3, 3) or (B, 3, 3) pinhole intrinsics in pixels of the map.
        mask: optional (B, 1, H, W) foreground probability.

    Returns:
        :class:`LiftedPoints`.
    """
    z, valid = sample_depth(depth, uv, mask=mask)
    K = K.to(depth.dtype)
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3):
        raise ValueError(f"lift_points: K must be (3, 3) or (B, 3, 3), got {tuple(K.shape)}")
    K = K.expand(uv.shape[0], 3, 3)
    uv = uv.to(depth.dtype)
    safe_uv = torch.where(valid[..., None], uv, torch.zeros_like(uv))
    safe_z = torch.where(valid, z, torch.ones_like(z))
    points = unproject_pinhole(safe_uv, safe_z, K)
    points = torch.where(valid[..., None], points, torch.full_like(points, float("nan")))
    return LiftedPoints(points, z, valid)
