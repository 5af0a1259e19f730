"""Unsup3d's renderer in pure PyTorch: a canonical depth map seen from another viewpoint.

Unsup3d (Wu, Rupprecht & Vedaldi, CVPR 2020) reconstructs the input image as
``Pi(Lambda(a, d, l), d, w)``: the canonical image ``J = Lambda(a, d, l)`` (albedo times
Lambertian shading, :func:`lambertian_shading`) warped to the viewpoint ``w`` through the
canonical depth map ``d`` (:func:`warp_canonical`). The official code needs neural_renderer's
CUDA kernels for the one step that is not a plain tensor expression, the z-buffer; here it is
:func:`kp3d.data.synth.raster.rasterize`, run *without gradient*. Gradients reach ``d`` and
``w`` the way pytorch3d's do: the visible face of each pixel is fixed, its barycentrics are
recomputed differentiably from the projected vertices, and the canonical image is sampled at the
interpolated canonical position with ``grid_sample``.

Camera: kp3d's convention (:mod:`kp3d.geometry`), the canonical view and the target view share
the intrinsics ``K`` (Unsup3d: fov 10 degrees, :func:`kp3d.metrics.surface.unsup3d_intrinsics`).
The viewpoint rotates the surface about the point ``(0, 0, centre_depth)`` on the optical axis
and then translates it, as Unsup3d's ``rotate_pts`` / ``translate_pts``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from kp3d.data.synth.raster import rasterize
from kp3d.geometry.cameras import project_pinhole
from kp3d.geometry.depth_mesh import depth_to_points, grid_faces


def euler_to_matrix(angles: Tensor) -> Tensor:
    """Rotation ``R = Rz(c) Ry(b) Rx(a)`` from angles ``(a, b, c)`` in radians (Unsup3d's
    ``get_rotation_matrix``: pitch about x, then yaw about y, then roll about z).

    Args:
        angles: (..., 3).

    Returns:
        (..., 3, 3) proper rotations.
    """
    if angles.shape[-1] != 3:
        raise ValueError(f"euler_to_matrix: angles must be (..., 3), got {tuple(angles.shape)}")
    c, s = angles.cos(), angles.sin()
    one, zero = torch.ones_like(angles[..., 0]), torch.zeros_like(angles[..., 0])

    def mat(*rows: Tensor) -> Tensor:
        return torch.stack(rows, -1).unflatten(-1, (3, 3))

    ca, cb, cc = c.unbind(-1)
    sa, sb, sc = s.unbind(-1)
    rx = mat(one, zero, zero, zero, ca, -sa, zero, sa, ca)
    ry = mat(cb, zero, sb, zero, one, zero, -sb, zero, cb)
    rz = mat(cc, -sc, zero, sc, cc, zero, zero, zero, one)
    return rz @ ry @ rx


def transform_about(points: Tensor, R: Tensor, t: Tensor, *, centre_depth: float) -> Tensor:
    """``(X - c) R^T + c + t`` with ``c = (0, 0, centre_depth)``: rotate about a point on the
    optical axis, then translate.

    Args:
        points: (B, N, 3); R: (B, 3, 3); t: (B, 3).
    """
    c = points.new_tensor([0.0, 0.0, centre_depth])
    return (points - c) @ R.transpose(-1, -2) + c + t[:, None, :]


class Warp(NamedTuple):
    """A canonical map seen from a viewpoint (B images of H x W pixels)."""

    image: Tensor
    """(B, C, H, W) the canonical image sampled at each pixel's surface point, 0 where empty."""
    depth: Tensor
    """(B, 1, H, W) camera z of the visible surface, ``background`` where empty."""
    mask: Tensor
    """(B, 1, H, W) bool, True where the surface covers the pixel centre."""
    grid: Tensor
    """(B, H, W, 2) where each pixel samples the canonical image, ``grid_sample``'s normalised
    coordinates (align_corners=False); outside [-1, 1] where empty."""


def warp_canonical(
    canonical: Tensor,
    depth: Tensor,
    R: Tensor,
    t: Tensor,
    K: Tensor,
    *,
    centre_depth: float = 1.0,
    background: float = 0.0,
) -> Warp:
    """Unsup3d's reprojection ``Pi(J, d, w)``: the canonical image seen from the viewpoint.

    The depth map is a mesh (:mod:`kp3d.geometry.depth_mesh`) moved by
    :func:`transform_about` and projected with ``K``. The z-buffer picks each pixel's face
    without gradient; the pixel centre's screen barycentrics in that face are then recomputed
    from the projected vertices, made perspective-correct (``l_k / z_k``, normalised), and
    interpolate the face's *canonical* 3D vertices; the canonical image is sampled bilinearly
    where that point projects. The result is differentiable in ``canonical``, ``depth``, ``R``
    and ``t`` (piecewise: the face choice is constant between occlusion changes).

    Back faces are culled. A ray from a camera in front of a depth map meets a front face
    before any back face, so culling changes nothing, except for rays that pass the map's edge
    and meet its back from behind: the canonical image has no back, and they see what lies
    behind it (a farther front face, or nothing). It spares the rasteriser the walls that face
    away, the slivers that make a rough depth map seen from the side slow to rasterise.

    Args:
        canonical: (B, C, H, W) canonical image (or any map: albedo, normals).
        depth: (B, 1, H, W) canonical depth, > 0 and in front of the camera after the move.
        R: (B, 3, 3) rotation; t: (B, 3) translation (see :func:`transform_about`).
        K: (3, 3) intrinsics in pixels of the maps.
        centre_depth: depth of the rotation centre on the optical axis.
        background: depth given to empty pixels.

    Returns:
        :class:`Warp`.
    """
    if canonical.ndim != 4 or depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(
            "warp_canonical: canonical must be (B, C, H, W) and depth (B, 1, H, W), got "
            f"{tuple(canonical.shape)} and {tuple(depth.shape)}"
        )
    if canonical.shape[0] != depth.shape[0] or canonical.shape[-2:] != depth.shape[-2:]:
        raise ValueError(
            "warp_canonical: canonical and depth must share B, H, W, got "
            f"{tuple(canonical.shape)} and {tuple(depth.shape)}"
        )
    if R.shape != (depth.shape[0], 3, 3) or t.shape != (depth.shape[0], 3):
        raise ValueError(
            f"warp_canonical: R must be (B, 3, 3) and t (B, 3), got {tuple(R.shape)}, "
            f"{tuple(t.shape)}"
        )
    B, _, H, W = depth.shape
    N = H * W
    K = K.to(depth)
    points = depth_to_points(depth, K)  # (B, N, 3) canonical camera frame
    moved = transform_about(points, R.to(depth), t.to(depth), centre_depth=centre_depth)
    verts = torch.cat((project_pinhole(moved, K), moved[..., 2:]), -1)  # (B, N, 3) u, v, z
    faces = grid_faces(H, W, device=depth.device)
    with torch.no_grad():
        frags = rasterize(verts.detach(), faces, (H, W), cull_backfaces=True)

    flat_face = frags.face.reshape(-1)
    hit = (flat_face >= 0).nonzero()[:, 0]  # (M,) into B*H*W
    rows = faces.index_select(0, flat_face.index_select(0, hit)) + (hit // N * N)[:, None]
    tri = verts.reshape(B * N, 3).index_select(0, rows.reshape(-1)).view(-1, 3, 3)
    pix = hit % N
    px = (pix % W).to(depth.dtype) + 0.5
    py = (pix // W).to(depth.dtype) + 0.5
    bary = _perspective_barycentrics(tri, px, py)  # (M, 3)

    src = points.reshape(B * N, 3).index_select(0, rows.reshape(-1)).view(-1, 3, 3)
    canon_point = (bary[..., None] * src).sum(1)  # (M, 3)
    uv = project_pinhole(canon_point, K)
    xy = torch.stack((2 * uv[:, 0] / W - 1, 2 * uv[:, 1] / H - 1), -1)
    grid = torch.full((B * N, 2), -2.0, dtype=depth.dtype, device=depth.device)
    grid = grid.index_put((hit,), xy).view(B, H, W, 2)
    z = (bary * tri[..., 2]).sum(-1)  # the surface point's depth, = 1 / sum(l_k / z_k)
    out_depth = torch.full((B * N,), float(background), dtype=depth.dtype, device=depth.device)
    out_depth = out_depth.index_put((hit,), z).view(B, 1, H, W)
    image = torch.nn.functional.grid_sample(
        canonical, grid.to(canonical.dtype), mode="bilinear", align_corners=False
    )
    mask = frags.mask.view(B, 1, H, W)
    return Warp(image * mask, out_depth, mask, grid)


def _perspective_barycentrics(tri: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Perspective-correct barycentrics (M, 3) of pixel centres ``(px, py)`` (M,) in screen
    triangles ``tri`` (M, 3, 3) of ``(u, v, z)``: screen ones ``l_k`` from edge functions, then
    ``(l_k / z_k) / sum_j (l_j / z_j)``, the 3D barycentrics of the surface point."""
    u, v, z = tri.unbind(-1)

    def edge(i: int, j: int) -> Tensor:
        # Twice the signed area of (vertex i, vertex j, pixel centre).
        return (u[:, j] - u[:, i]) * (py - v[:, i]) - (v[:, j] - v[:, i]) * (px - u[:, i])

    area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (v[:, 1] - v[:, 0]) * (u[:, 2] - u[:, 0])
    screen = torch.stack((edge(1, 2), edge(2, 0), edge(0, 1)), -1) / area[:, None]
    w = screen / z
    return w / w.sum(-1, keepdim=True)


def lambertian_shading(normals: Tensor, light: Tensor, ambient: Tensor, diffuse: Tensor) -> Tensor:
    """Unsup3d's shading ``k_s + k_d max(0, <n, l>)``.

    Normals follow :func:`kp3d.metrics.surface.depth_to_normals` (pointing away from the camera,
    +z, on a surface that faces it), so a light ``l = (0, 0, 1)`` lights such a surface fully,
    as Unsup3d's ``(l_x, l_y, 1) / norm``.

    Args:
        normals: (B, 3, H, W) unit normals.
        light: (B, 3) unit light direction.
        ambient, diffuse: (B,) or (B, 1) intensities.

    Returns:
        (B, 1, H, W) shading.
    """
    if normals.ndim != 4 or normals.shape[1] != 3 or light.shape != (normals.shape[0], 3):
        raise ValueError(
            "lambertian_shading: normals must be (B, 3, H, W) and light (B, 3), got "
            f"{tuple(normals.shape)} and {tuple(light.shape)}"
        )
    B = normals.shape[0]
    cos = (normals * light[:, :, None, None]).sum(1, keepdim=True).clamp_min(0)
    return ambient.reshape(B, 1, 1, 1) + diffuse.reshape(B, 1, 1, 1) * cos
