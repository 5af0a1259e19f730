"""AutoLink's edge map: a soft drawing of the weighted skeleton through the keypoints.

For a pair of keypoints (a, c) and a pixel centre p (normalised coordinates, see
:mod:`kp3d.geometry`), let ``d(p)`` be the distance of p to the segment a-c. The pair draws
``S_ac(p) = exp(-d(p)^2 / thickness)``: squared distance, as in AutoLink's official code, so the
line profile is a Gaussian of standard deviation ``sqrt(thickness / 2)`` across the segment and
its gradient is smooth on the segment itself (``d`` alone has a kink there). The edge map keeps,
per pixel, the strongest weighted pair: ``S(p) = max_ac w_ac S_ac(p)``.

The naive rendering materialises all P = K(K-1)/2 pair maps and lets autograd keep them for the
backward of the max: with K = 16 that is 120 maps per image. :func:`render_edge_map` instead
finds the winning pair of every pixel without building a graph, then evaluates and
differentiates only the winner (:class:`_EdgeMap`). Values and gradients are those of the naive
max (the max's gradient flows to the winner only); memory is O(B H W) instead of O(B P H W).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from kp3d.geometry import pixel_centres
from kp3d.geometry.heatmaps import check_render_args

_EPS = 1e-12
"""Floor for a segment's squared length, so coincident keypoints draw a round dot."""

_CHUNK_ELEMENTS = 1 << 19
"""Pair-pixel scores evaluated at once while searching for the winners (2 MB of float32)."""


def skeleton_pairs(k: int, *, device: torch.device | str | None = None) -> Tensor:
    """(2, K(K-1)/2) the index pairs (i, j), i < j, in row-major upper-triangle order."""
    return torch.triu_indices(k, k, offset=1, device=device)


def _pixel_grid(size: Sequence[int], like: Tensor) -> Tensor:
    """(H*W, 2) normalised (x, y) pixel centres in row-major order."""
    H, W = size
    ys = pixel_centres(H, dtype=like.dtype, device=like.device)
    xs = pixel_centres(W, dtype=like.dtype, device=like.device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(H * W, 2)


def _segment_closest(p: Tensor, a: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Closest point on each segment a-c to p: ``(t, q)`` with ``q = a + t (c - a)``, t in [0, 1].

    Shapes broadcast; coordinates last. Returns t (...,) and q (..., 2).
    """
    e = c - a
    t = (((p - a) * e).sum(-1) / (e * e).sum(-1).clamp_min(_EPS)).clamp(0.0, 1.0)
    return t, a + t[..., None] * e


def _winning_pairs(
    kp: Tensor, weights: Tensor, pairs: Tensor, grid: Tensor, thickness: float
) -> Tensor:
    """(B, H*W) int64: per pixel, the index of the pair maximising ``w exp(-d^2 / thickness)``.

    Equivalently it minimises ``d^2 - thickness * log w``. With u the unclamped projection
    parameter of p onto the segment, ``t = clamp(u, 0, 1)`` and ``e = c - a``,
    ``d^2 = |p - a|^2 + |e|^2 t (t - 2 u)``; both u and ``|p - a|^2`` are affine in
    ``(px, py, 1, |p|^2)``, so a block of pixels costs two small matmuls and a few element-wise
    passes. Blocks are (pairs, pixels): reducing over pairs then runs across contiguous rows,
    which vectorises (a min-with-index along rows does not, and is 10x slower); the index is
    recovered exactly as the smallest pair index attaining the minimum.
    """
    B, P = kp.shape[0], pairs.shape[1]
    hw = grid.shape[0]
    homog = torch.cat(
        [grid, torch.ones_like(grid[:, :1]), (grid * grid).sum(-1, keepdim=True)], dim=1
    ).T
    a = kp[:, pairs[0]]  # (B, P, 2)
    e = kp[:, pairs[1]] - a
    len2 = (e * e).sum(-1, keepdim=True).clamp_min(_EPS)  # (B, P, 1)
    coef_u = torch.cat([e, -(a * e).sum(-1, keepdim=True), torch.zeros_like(len2)], dim=-1) / len2
    # -thickness * log w is +inf where w = 0: such a pair never wins.
    offset = (a * a).sum(-1, keepdim=True) - thickness * weights.log()[:, None]
    coef_d = torch.cat([-2 * a, offset, torch.ones_like(len2)], dim=-1)
    index = torch.arange(P, dtype=kp.dtype, device=kp.device)[:, None]
    winner = torch.empty((B, hw), dtype=torch.int64, device=kp.device)
    cols = max(1, _CHUNK_ELEMENTS // P)
    for b in range(B):
        for r in range(0, hw, cols):
            block = homog[:, r : r + cols]
            u = coef_u[b] @ block  # (P, cols)
            d2 = coef_d[b] @ block
            t = u.clamp(0.0, 1.0)
            torch.add(t, u, alpha=-2.0, out=u)
            u.mul_(len2[b])
            d2.addcmul_(u, t)
            best = d2.amin(dim=0)
            first = torch.where(d2 == best, index, P).amin(dim=0)
            winner[b, r : r + cols] = first.long()
    return winner


class _EdgeMap(torch.autograd.Function):
    """Winner-only edge map; see the module docstring. Inputs kp (B, K, 2), weights (P,);
    outputs the map (B, H, W) and, for :func:`render_depth_edge_map`, each pixel's winning pair
    (B, HW) and position t along it (B, HW)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        kp: Tensor,
        weights: Tensor,
        pairs: Tensor,
        size: tuple[int, int],
        thickness: float,
    ) -> Tensor:
        with torch.autocast(kp.device.type, enabled=False):
            grid = _pixel_grid(size, kp)
            winner = _winning_pairs(kp, weights, pairs, grid, thickness)
            a = torch.gather(kp, 1, _expand2(pairs[0][winner]))  # (B, HW, 2)
            c = torch.gather(kp, 1, _expand2(pairs[1][winner]))
            t, q = _segment_closest(grid, a, c)
            offset = grid - q
            gauss = torch.exp(-(offset * offset).sum(-1) / thickness)
            value = weights[winner] * gauss
        # A few (B, HW) maps: the backward needs no second search.
        ctx.save_for_backward(kp, weights, pairs, winner, t, offset, gauss, value)
        ctx.thickness = thickness  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(winner, t)
        return value.reshape(kp.shape[0], *size), winner, t

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: Tensor, _grad_winner: Tensor | None, _grad_t: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        kp, weights, pairs, winner, t, offset, gauss, value = ctx.saved_tensors
        g = grad_out.reshape(value.shape).to(kp.dtype)
        grad_kp = grad_w = None
        if ctx.needs_input_grad[0]:
            # d^2 = min_t |p - a - t (c - a)|^2, so by the envelope theorem
            # dd^2/da = -2 (p - q)(1 - t) and dd^2/dc = -2 (p - q) t; dS/dd^2 = -S / thickness.
            pull = (g * value * (2.0 / ctx.thickness))[..., None] * offset  # (B, HW, 2)
            grad_kp = torch.zeros_like(kp)
            grad_kp.scatter_add_(1, _expand2(pairs[0][winner]), pull * (1 - t)[..., None])
            grad_kp.scatter_add_(1, _expand2(pairs[1][winner]), pull * t[..., None])
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weights)
            grad_w.index_add_(0, winner.reshape(-1), (g * gauss).reshape(-1))
        return grad_kp, grad_w, None, None, None


def _expand2(index: Tensor) -> Tensor:
    return index[..., None].expand(*index.shape, 2)


def _check(
    kp: Tensor,
    weights: Tensor,
    size: Sequence[int],
    thickness: float,
    pairs: Tensor | None,
    name: str,
) -> Tensor:
    """Validate render arguments; return ``pairs`` (default all pairs)."""
    check_render_args(name, kp, size)
    if not thickness > 0:
        raise ValueError(f"{name}: thickness must be > 0, got {thickness}")
    k = kp.shape[-2]
    if pairs is None:
        pairs = skeleton_pairs(k, device=kp.device)
    if pairs.ndim != 2 or pairs.shape[0] != 2 or pairs.shape[1] == 0:
        raise ValueError(f"{name}: pairs must be (2, P) with P >= 1, got {tuple(pairs.shape)}")
    if int(pairs.min()) < 0 or int(pairs.max()) >= k:
        raise ValueError(f"{name}: pairs index keypoints outside 0..{k - 1}")
    if weights.shape != (pairs.shape[1],):
        raise ValueError(f"{name}: weights must be ({pairs.shape[1]},), got {tuple(weights.shape)}")
    return pairs.long()


def _render(
    kp: Tensor, weights: Tensor, size: Sequence[int], thickness: float, pairs: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(B, H, W) map, (B, HW) winners, (B, HW) t of keypoints flattened to (B, K, 2)."""
    dtype = torch.float64 if kp.dtype == torch.float64 else torch.float32
    flat = kp.reshape(-1, kp.shape[-2], 2).to(dtype)
    return _EdgeMap.apply(
        flat, weights.to(dtype), pairs, (int(size[0]), int(size[1])), float(thickness)
    )


def render_edge_map(
    kp: Tensor,
    weights: Tensor,
    size: Sequence[int],
    *,
    thickness: float,
    pairs: Tensor | None = None,
) -> Tensor:
    """Draw the weighted skeleton: ``S(p) = max_ij w_ij exp(-d_ij(p)^2 / thickness)``.

    Args:
        kp: (..., K, 2) keypoints (x, y), normalised coordinates (``align_corners=False``).
        weights: (P,) non-negative weight of each pair in ``pairs``.
        size: ``(H, W)`` of the map.
        thickness: > 0, in squared normalised units (AutoLink: 2.5e-3 at 128 px).
        pairs: (2, P) keypoint index pairs; default all pairs i < j (:func:`skeleton_pairs`).

    Returns:
        (..., H, W) the edge map, float32 (float64 for float64 keypoints), differentiable with
        respect to ``kp`` and ``weights``; gradients flow through each pixel's winning pair only.
    """
    pairs = _check(kp, weights, size, thickness, pairs, "render_edge_map")
    value, _, _ = _render(kp, weights, size, thickness, pairs)
    return value.reshape(*kp.shape[:-2], int(size[0]), int(size[1]))


class DepthEdgeMap(NamedTuple):
    """Output of :func:`render_depth_edge_map`."""

    edges: Tensor
    """(..., H, W) the edge map S of :func:`render_edge_map`."""
    depth: Tensor
    """(..., H, W) ``S(p) z(p)``: the depth of the winning segment at its point closest to p,
    interpolated between its end points' depths, faded like the edge (0 off the skeleton)."""


def render_depth_edge_map(
    kp: Tensor,
    depth: Tensor,
    weights: Tensor,
    size: Sequence[int],
    *,
    thickness: float,
    pairs: Tensor | None = None,
) -> DepthEdgeMap:
    """The edge map and the depth of the skeleton drawn in it.

    Where one limb crosses another in the image, the picture shows the nearer one; a decoder
    that knows the depth of each drawn segment can tell which, so its reconstruction loss gives
    the keypoints' depths a signal that orthographic projection cannot.

    Args:
        kp: (..., K, 2) keypoints, as in :func:`render_edge_map`.
        depth: (..., K) depth of each keypoint (any offset and units).
        weights, size, thickness, pairs: as in :func:`render_edge_map`.

    Returns:
        :class:`DepthEdgeMap`. Gradients reach ``depth`` and, through S, ``kp`` and ``weights``;
        the position along the segment is held fixed (a segment's depth gradient does not move
        its end points sideways).
    """
    pairs = _check(kp, weights, size, thickness, pairs, "render_depth_edge_map")
    if depth.shape != kp.shape[:-1]:
        raise ValueError(
            f"render_depth_edge_map: depth must be {tuple(kp.shape[:-1])}, got {tuple(depth.shape)}"
        )
    value, winner, t = _render(kp, weights, size, thickness, pairs)
    z = depth.reshape(value.shape[0], -1).to(value.dtype)
    z_a = torch.gather(z, 1, pairs[0][winner])
    z_c = torch.gather(z, 1, pairs[1][winner])
    along = value.reshape(winner.shape) * ((1 - t) * z_a + t * z_c)
    shape = (*kp.shape[:-2], int(size[0]), int(size[1]))
    return DepthEdgeMap(value.reshape(shape), along.reshape(shape))
