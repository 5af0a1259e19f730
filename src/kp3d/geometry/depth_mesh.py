"""A depth map as a triangle mesh: one vertex per pixel centre, two triangles per 2x2 block.

This is the surface Unsup3d (Wu, Rupprecht & Vedaldi, CVPR 2020) renders: every pixel centre
``(i + 0.5, j + 0.5)`` is unprojected to ``z K^{-1} (u, v, 1)`` (:func:`depth_to_points`) and
neighbouring centres are joined by :func:`grid_faces`. :func:`save_depth_mesh` writes it, with
per-vertex colours, as Wavefront OBJ or ASCII PLY.
"""

from __future__ import annotations

from pathlib import Path

import torch
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
