"""A z-buffer triangle rasteriser in pure PyTorch: tile-binned, vectorised, CPU friendly.

Input vertices are in *screen space*: ``(u, v, z)`` with ``(u, v)`` continuous pixel coordinates
(:mod:`kp3d.geometry`: pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``) and ``z`` the
camera-frame depth. A pixel is covered by a triangle when its *centre* lies in the closed
triangle; the nearest covering triangle wins, and exact depth ties go to the lower face index, so
the output does not depend on the order of the work.

How it stays fast without a per-pixel or per-face Python loop: every triangle's pixel bounding
box is cut into tiles (``tile_x x tile_y`` pixels); one (triangle, tile) pair is made per
overlap (a small triangle makes one or a few pairs, a huge one many); all pixels of all pairs
are tested at once with the triangles' edge functions; and one ``scatter_reduce(amin)`` per
image pixel on a 64-bit key ``(float32 depth bits << 32) | face`` resolves visibility (the IEEE
bits of a positive float sort like the float). Barycentrics and depth of the winners are then
recomputed in the input dtype.

Watertight: an edge function is evaluated from the edge's endpoints in a canonical order (lower
vertex index first) and negated for the other orientation, so two triangles sharing an edge get
bit-identical values of opposite sign and a pixel centre on the edge is never missed by both.

Perspective: ``1 / z`` and ``barycentric / z`` are affine in screen space, so depth is
``1 / sum(l_k / z_k)`` and the returned barycentrics are perspective-correct. With
``perspective=False`` (orthographic input) both are the plain screen-space ones.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

_EMPTY = torch.iinfo(torch.int64).max


class Fragments(NamedTuple):
    """What each pixel sees. B images of H x W pixels."""

    face: Tensor
    """(B, H, W) int64 index of the visible face, -1 where the pixel is empty."""
    depth: Tensor
    """(B, H, W) camera-frame z of the visible surface, 0 where empty."""
    bary: Tensor
    """(B, H, W, 3) barycentric coordinates of the pixel centre in ``face`` (0 where empty)."""
    mask: Tensor
    """(B, H, W) bool, True where a face covers the pixel centre."""


def _coefficients(tri: Tensor, faces: Tensor, perspective: bool) -> tuple[Tensor, Tensor]:
    """Per-face, per-edge coefficients (B*F, 3, 5) and twice the signed areas (B*F,).

    For edge k (opposite vertex k) the coefficients are ``x, y`` (the canonical first endpoint),
    ``dx, dy`` (canonical direction) and ``s = +-1 / area`` (orientation over area), so that the
    screen-space barycentric of vertex k is ``s * (dx (p_y - y) - dy (p_x - x))``; the fifth
    is 1/z_k (perspective) or z_k.
    """
    x, y, z = tri.unbind(-1)  # (B*F, 3) each
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    swap = (faces.roll(-1, dims=-1) > faces.roll(-2, dims=-1)).repeat(tri.shape[0] // len(faces), 1)
    x1, x2, y1, y2 = x.roll(-1, -1), x.roll(-2, -1), y.roll(-1, -1), y.roll(-2, -1)
    xa, ya = torch.where(swap, x2, x1), torch.where(swap, y2, y1)
    dx, dy = torch.where(swap, x1, x2) - xa, torch.where(swap, y1, y2) - ya
    inv_area = torch.where(area == 0, torch.zeros_like(area), 1 / torch.where(area == 0, 1, area))
    s = torch.where(swap, -inv_area[:, None], inv_area[:, None])
    zz = z.reciprocal() if perspective else z
    return torch.stack((xa, ya, dx, dy, s, zz), -1), area


def _barycentric(coef: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Screen-space barycentrics (..., 3) from coefficients (..., 3, 6) at points (..., 1)."""
    x, y, dx, dy, s = coef[..., :5].unbind(-1)
    return (dx * (py - y) - dy * (px - x)) * s


def _tile_side(extent: float) -> int:
    """A power of two near a third of a mean pixel-box extent, 1 to 8 (measured best on this
    package's meshes)."""
    return int(min(8, max(1, 2 ** round(math.log2(max(extent / 3, 1.0))))))


def rasterize(
    verts: Tensor,
    faces: Tensor,
    size: tuple[int, int],
    *,
    tile: int | tuple[int, int] | None = None,
    cull_backfaces: bool = False,
    perspective: bool = True,
    znear: float = 1e-6,
) -> Fragments:
    """Rasterise B meshes that share one triangle list.

    Args:
        verts: (B, N, 3) screen-space vertices ``(u, v, z)``: continuous pixel coordinates and
            camera depth (must be > ``znear``; triangles with a vertex nearer are dropped, not
            clipped).
        faces: (F, 3) int64 vertex indices, shared by all B meshes.
        size: ``(H, W)`` of the images.
        tile: tile side in pixels for the binning, or ``(x, y)`` sides, a speed knob (the
            result does not depend on it): 1 suits triangles a few pixels across, larger tiles
            larger ones. By default, square tiles of a power of two near a third of the mean
            side of the triangles' pixel boxes (1 to 8), which measured best on this package's
            meshes, made no longer along an axis than the same rule gives for the boxes' extent
            along it: slivers (a rough depth map seen from the side) get thin tiles.
        cull_backfaces: drop triangles whose outward side faces away from the camera. A face
            ``(i, j, k)`` is outward on the side of ``(v_j - v_i) x (v_k - v_i)`` in the camera
            frame (x right, y down, z forward), which is clockwise on the screen.
        perspective: perspective-correct interpolation of depth and barycentrics (False for
            orthographic screen coordinates).
        znear: smallest accepted depth.

    Returns:
        :class:`Fragments`.
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"rasterize: verts must be (B, N, 3), got {tuple(verts.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3 or faces.dtype != torch.int64:
        raise ValueError(
            f"rasterize: faces must be (F, 3) int64, got {tuple(faces.shape)} {faces.dtype}"
        )
    tiles = (tile, tile) if isinstance(tile, int) else tile
    if tiles is not None and (len(tiles) != 2 or min(tiles) < 1):
        raise ValueError(f"rasterize: tile must be >= 1 (or two of them), got {tile}")
    H, W = int(size[0]), int(size[1])
    B, F = verts.shape[0], faces.shape[0]
    device, dtype = verts.device, verts.dtype

    tri = verts.index_select(1, faces.reshape(-1)).view(B * F, 3, 3)
    coef, area = _coefficients(tri, faces, perspective)
    u, v, z = tri.unbind(-1)
    ok = torch.isfinite(area) & (area != 0) & (z.amin(-1) > znear) & (z.amax(-1) < torch.inf)
    if cull_backfaces:
        # A camera-frame outward normal towards the viewer is counter-clockwise seen from the
        # camera, which with y down is a negative signed area on the screen.
        ok &= area < 0

    # Pixel columns i whose centre i + 0.5 lies in [u_min, u_max], clamped to the image.
    big = float(max(H, W) + 1)
    lo = torch.stack((u.amin(-1), v.amin(-1)), -1).clamp(-1.0, big)
    hi = torch.stack((u.amax(-1), v.amax(-1)), -1).clamp(-1.0, big)
    first = torch.ceil(lo - 0.5).long().clamp_min(0)
    last = torch.floor(hi - 0.5).long().minimum(torch.tensor([W - 1, H - 1], device=device))
    ok &= (last >= first).all(-1)
    if tiles is None:
        w, h = (last - first + 1)[ok].float().mean(0).tolist() if ok.any() else (1.0, 1.0)
        square = _tile_side((w + h) / 2)
        tiles = (min(square, _tile_side(w)), min(square, _tile_side(h)))
    tw, th = tiles
    size_t = torch.tensor([tw, th], device=device)

    # One (face, tile) pair per tile the face's pixel box overlaps.
    face_idx = ok.nonzero()[:, 0]  # into B*F
    t0 = first.index_select(0, face_idx) // size_t  # (Fv, 2) first tile (x, y)
    span = last.index_select(0, face_idx) // size_t - t0 + 1
    count = span[:, 0] * span[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(face_idx), device=device), count)
    start = (torch.cumsum(count, 0) - count).index_select(0, owner)
    k = torch.arange(len(owner), device=device) - start  # pair index within its face
    ntx = span[:, 0].index_select(0, owner)
    t0 = t0.index_select(0, owner)
    pair_face = face_idx.index_select(0, owner)  # (P,)
    tx, ty = t0[:, 0] + k % ntx, t0[:, 1] + k // ntx

    # Every pixel of every pair, tested at once.
    offs = torch.arange(tw * th, device=device)
    col = (tx * tw)[:, None] + offs % tw  # (P, tw * th)
    row = (ty * th)[:, None] + offs // tw
    c = coef.index_select(0, pair_face)[:, None]  # (P, 1, 3, 6)
    lam = _barycentric(c, (col.to(dtype) + 0.5)[..., None], (row.to(dtype) + 0.5)[..., None])
    covered = lam.amin(-1) >= 0
    if tw > 1 or th > 1:
        covered &= (col < W) & (row < H)
    inv_depth = (lam * c[..., 5]).sum(-1)
    depth = inv_depth.reciprocal() if perspective else inv_depth
    # Covered pixels compete in one amin per pixel; the rest go to a spare slot at the end.
    key = (depth.float().view(torch.int32).long() << 32) | (pair_face % F)[:, None]
    slot = torch.where(covered, ((pair_face // F)[:, None] * H + row) * W + col, B * H * W)
    zbuf = torch.full((B * H * W + 1,), _EMPTY, dtype=torch.int64, device=device)
    zbuf.scatter_reduce_(0, slot.reshape(-1), key.reshape(-1), reduce="amin")

    # Recompute the winners' barycentrics and depth in the input dtype.
    hit = (zbuf[:-1] != _EMPTY).nonzero()[:, 0]
    win = zbuf.index_select(0, hit) & 0xFFFFFFFF
    face = torch.full((B * H * W,), -1, dtype=torch.int64, device=device)
    face[hit] = win
    pix = hit % (H * W)
    c = coef.index_select(0, (hit // (H * W)) * F + win)  # (M, 3, 6)
    lam = _barycentric(c, (pix % W).to(dtype)[:, None] + 0.5, (pix // W).to(dtype)[:, None] + 0.5)
    lam = lam.clamp_min(0)
    bary = torch.zeros(B * H * W, 3, dtype=dtype, device=device)
    depth_map = torch.zeros(B * H * W, dtype=dtype, device=device)
    if perspective:
        weighted = lam * c[..., 5]
        total = weighted.sum(-1, keepdim=True)
        bary[hit] = weighted / total
        depth_map[hit] = total[:, 0].reciprocal()
    else:
        lam = lam / lam.sum(-1, keepdim=True)
        bary[hit] = lam
        depth_map[hit] = (lam * c[..., 5]).sum(-1)
    return Fragments(
        face=face.view(B, H, W),
        depth=depth_map.view(B, H, W),
        bary=bary.view(B, H, W, 3),
        mask=(face >= 0).view(B, H, W),
    )


def fragment_values(frags: Fragments, faces: Tensor, attrs: Tensor) -> tuple[Tensor, Tensor]:
    """Per-vertex attributes interpolated at the covered pixels only.

    Args:
        frags: from :func:`rasterize` (B images).
        faces: (F, 3) the triangle list given to :func:`rasterize`.
        attrs: (B, N, C) per-vertex values.

    Returns:
        ``hit`` (M,) flat indices of the covered pixels into (B, H, W), ascending, and their
        values (M, C).
    """
    B, H, W = frags.face.shape
    N, C = attrs.shape[1:]
    flat_face = frags.face.reshape(-1)
    hit = (flat_face >= 0).nonzero()[:, 0]
    corner = faces.index_select(0, flat_face.index_select(0, hit))  # (M, 3)
    rows = (corner + (hit // (H * W) * N)[:, None]).reshape(-1)
    vals = attrs.reshape(B * N, C).index_select(0, rows).view(-1, 3, C)
    bary = frags.bary.reshape(-1, 3).index_select(0, hit).to(attrs.dtype)
    return hit, (bary[..., None] * vals).sum(1)


def interpolate(frags: Fragments, faces: Tensor, attrs: Tensor) -> Tensor:
    """Interpolate per-vertex attributes at every covered pixel.

    Args:
        frags: from :func:`rasterize` (B images).
        faces: (F, 3) the triangle list given to :func:`rasterize`.
        attrs: (B, N, C) per-vertex values.

    Returns:
        (B, H, W, C), zero where the pixel is empty.
    """
    B, H, W = frags.face.shape
    hit, vals = fragment_values(frags, faces, attrs)
    out = attrs.new_zeros(B * H * W, attrs.shape[-1])
    out[hit] = vals
    return out.view(B, H, W, -1)
