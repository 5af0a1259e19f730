"""Mesh primitives and per-vertex quantities for the synthetic generators."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class CapsuleTemplate(NamedTuple):
    """A unit capsule template: ``p = radii * unit + side * half_length * e_y`` gives a capsule
    along y (an ellipsoid when ``half_length = 0``), with outward (right-hand) triangle winding."""

    unit: Tensor
    """(N, 3) points on the unit sphere."""
    side: Tensor
    """(N,) +1 for the upper hemisphere (and its equator copy), -1 for the lower one."""
    faces: Tensor
    """(F, 3) int64."""


def capsule_template(rings: int = 6, segments: int = 8) -> CapsuleTemplate:
    """A UV-sphere split at the equator into two hemispheres joined by a cylinder band.

    Args:
        rings: latitude bands of the sphere (even, >= 2); the equator ring is doubled.
        segments: longitude segments (>= 3).
    """
    if rings < 2 or rings % 2:
        raise ValueError(f"capsule_template: rings must be even and >= 2, got {rings}")
    if segments < 3:
        raise ValueError(f"capsule_template: segments must be >= 3, got {segments}")
    # Polar angles from +y: interior latitudes, with the equator (pi/2) listed twice.
    lats = [math.pi * k / rings for k in range(1, rings)]
    half = rings // 2
    lats = lats[:half] + [math.pi / 2] + lats[half:]
    theta = torch.tensor(lats, dtype=torch.float64)
    phi = torch.arange(segments, dtype=torch.float64) * (2 * math.pi / segments)
    st, ct = theta.sin()[:, None], theta.cos()[:, None]
    ring_pts = torch.stack(
        (st * phi.sin()[None], ct.expand(-1, segments), st * phi.cos()[None]), -1
    ).reshape(-1, 3)
    unit = torch.cat(
        (
            torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64),
            ring_pts,
            torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64),
        )
    )
    n_rings = len(lats)
    side = torch.ones(len(unit))
    side[1 + half * segments :] = -1.0

    def ring(r: int, s: Tensor) -> Tensor:
        return 1 + r * segments + s % segments

    s = torch.arange(segments)
    top = torch.stack((torch.zeros_like(s), ring(0, s), ring(0, s + 1)), -1)
    bottom_pole = len(unit) - 1
    bottom = torch.stack(
        (torch.full_like(s, bottom_pole), ring(n_rings - 1, s + 1), ring(n_rings - 1, s)), -1
    )
    quads = []
    for r in range(n_rings - 1):
        a, b, c, d = ring(r, s), ring(r, s + 1), ring(r + 1, s + 1), ring(r + 1, s)
        quads += [torch.stack((a, d, c), -1), torch.stack((a, c, b), -1)]
    faces = torch.cat([top, *quads, bottom]).long()
    return CapsuleTemplate(unit=unit.float(), side=side, faces=faces)


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals, outward for right-hand winding.

    Args:
        verts: (B, N, 3).
        faces: (F, 3) int64.

    Returns:
        (B, N, 3); a vertex in no (non-degenerate) face gets a zero normal.
    """
    B, N, _ = verts.shape
    tri = verts[:, faces]  # (B, F, 3, 3)
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    acc = verts.new_zeros(B, N, 3)
    for k in range(3):
        acc.index_add_(1, faces[:, k], fn)
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-12)
