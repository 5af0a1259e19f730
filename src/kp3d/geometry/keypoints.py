"""Keypoint statistics shared by the lifters, the 3D heads and the evaluation: one home each.

Masks (visibility) are weights ``w_k`` in {0, 1} (bool, int or float tensors of shape (..., K));
``None`` means every point counts. All functions are differentiable and batched over any number
of leading dims, and keep the dtype and device of their inputs.

Formulas (``<a, b>_w = sum_k w_k a_k . b_k``):

- masked mean ``mean_w(x) = sum_k w_k x_k / sum_k w_k`` (0 where no point counts);
- per-sample normalisation ``c = mean_w(y)``, ``s = sqrt(mean_w ||y_k - c||^2)`` and
  ``(y - c) / s`` (Novotny et al., "C3DPO", ICCV 2019, and the lifting protocol of
  :mod:`kp3d.evaluation`);
- least-squares scale ``argmin_s sum_k w_k ||s x_k - y_k||^2 = <x, y>_w / <x, x>_w``, the
  denominator clamped at :data:`LS_SCALE_EPS` (the one clamp of kp3d's scale fits);
- orthographic translation ``argmin_t sum_k w_k ||p_k + t - y_k||^2 = mean_w(y - p)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

MEAN_EPS = 1e-8
"""Lower bound of a masked mean's total weight: an empty mask gives 0, not 0 / 0."""
LS_SCALE_EPS = 1e-12
"""Lower bound of ``<x, x>_w`` in :func:`least_squares_scale`: a collapsed ``x`` gives s = 0
(its numerator vanishes with it), never 0 / 0. Far below any real point set's spread, so
non-degenerate fits are exact."""


def check_shape(
    x: Tensor, pattern: str, *, name: str, dims: dict[str, int] | None = None
) -> dict[str, int]:
    """Check that ``x`` has the shape ``pattern`` (as kornia's ``KORNIA_CHECK_SHAPE``).

    ``pattern`` is space-separated: integers must match exactly, letters name a size that must
    be the same wherever the name recurs (in this call and in ``dims``, the sizes bound by
    earlier calls), and a leading ``...`` allows any number of leading dims. Examples:
    ``"B K 2"``, ``"... K 3"``, ``"... 3 3"``.

    Returns:
        ``dims`` updated with the sizes this call bound (a new dict when ``dims`` is None), to
        pass to the next call so that, e.g., kp2d and vis must agree on K.

    Raises:
        ValueError: one line naming ``name``, the expected and the actual shape.
    """
    tokens = pattern.split()
    bound = {} if dims is None else dims
    leading = bool(tokens) and tokens[0] == "..."
    fixed = tokens[1:] if leading else tokens
    shape = tuple(x.shape)
    want = "(" + ", ".join(tokens) + ")"
    ok = len(shape) >= len(fixed) if leading else len(shape) == len(fixed)
    if ok:
        tail = shape[len(shape) - len(fixed) :]
        new: dict[str, int] = {}
        for token, size in zip(fixed, tail, strict=True):
            if token.isdigit():
                ok = ok and size == int(token)
            else:
                known = bound.get(token, new.get(token))
                ok = ok and (known is None or known == size)
                new[token] = size
        if ok:
            bound.update(new)
            return bound
    detail = ", ".join(f"{k}={v}" for k, v in bound.items())
    raise ValueError(
        f"{name}: expected shape {want}{f' with {detail}' if detail else ''}, got {shape}"
    )


def visibility_weights(points: Tensor, vis: Tensor | None) -> Tensor:
    """``vis`` (..., K) as weights of the dtype of ``points`` (..., K, D); ones when None."""
    if vis is None:
        return torch.ones_like(points[..., 0])
    return vis.to(points.dtype)


def masked_mean(
    x: Tensor, mask: Tensor, dim: int | tuple[int, ...], *, keepdim: bool = False
) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only entries where ``mask`` is nonzero.

    ``sum(w x) / max(sum w, MEAN_EPS)`` with ``mask`` broadcast to ``x``: with weights in {0, 1}
    an empty mask gives 0 (not NaN), so samples with nothing visible contribute nothing.
    Entries of ``x`` under a zero weight must be finite (``0 * nan`` is nan).
    """
    mask = mask.expand_as(x)
    return (x * mask).sum(dim, keepdim=keepdim) / mask.sum(dim, keepdim=keepdim).clamp_min(MEAN_EPS)


def rms_radius(points: Tensor, vis: Tensor | None = None) -> Tensor:
    """RMS distance of the points from the origin, ``sqrt(mean_w ||x_k||^2)``: (..., K, D) -> (...).

    Pass centred points for the spread about the centroid (the scale of
    :func:`normalise_keypoints`). ``vis`` (..., K) restricts the mean to the visible points
    (0 where none is); entries under a zero weight must be finite.
    """
    dims = check_shape(points, "... K D", name="rms_radius: points")
    sq = points.square().sum(-1)
    if vis is None:
        return sq.mean(-1).sqrt()
    check_shape(vis, "... K", name="rms_radius: vis", dims=dims)
    return masked_mean(sq, vis.to(points.dtype), dim=-1).sqrt()


class Normalised(NamedTuple):
    """Keypoints centred and scaled per sample, with the statistics that map them back."""

    kp2d: Tensor
    """(..., K, D) ``(y - centre) / scale`` at visible points, 0 at invisible ones."""
    centre: Tensor
    """(..., D) the visible points' mean."""
    scale: Tensor
    """(...) the RMS distance of the visible points from ``centre``, in input units."""


def normalise_keypoints(
    kp2d: Tensor, vis: Tensor | None = None, *, eps: float = 1e-8
) -> Normalised:
    """Centre the visible keypoints on their mean and divide by their RMS distance from it.

    ``c = mean_w(y)``, ``s = max(sqrt(mean_w ||y_k - c||^2), eps)``, ``y' = w (y - c) / s``: the
    per-sample normalisation of C3DPO (Novotny et al., ICCV 2019) and of kp3d's lifting
    protocol. Invariant to translating and scaling the input.

    Args:
        kp2d: (..., K, D) keypoints in any units (usually D = 2, pixels).
        vis: (..., K) visibility (bool or {0, 1}); None = all visible.
        eps: lower bound of the scale, so a sample whose visible points coincide (or with none
            visible) is not divided by 0; ``eps=0`` returns the exact statistics.

    Returns:
        :class:`Normalised` ``(kp2d, centre, scale)``.
    """
    dims = check_shape(kp2d, "... K D", name="normalise_keypoints: kp2d")
    if vis is not None:
        check_shape(vis, "... K", name="normalise_keypoints: vis", dims=dims)
    w = visibility_weights(kp2d, vis)
    centre = masked_mean(kp2d, w[..., None], dim=-2)
    centred = (kp2d - centre[..., None, :]) * w[..., None]
    scale = rms_radius(centred, w).clamp_min(eps)
    return Normalised(centred / scale[..., None, None], centre, scale)


def least_squares_scale(
    x: Tensor, y: Tensor, weights: Tensor | None = None, *, eps: float = LS_SCALE_EPS
) -> Tensor:
    """The scale ``s`` (...) minimising ``sum_k w_k ||s x_k - y_k||^2``: ``<x, y>_w / <x, x>_w``.

    No centring and no translation: pass centred points to fit ``s`` together with a
    translation (Umeyama's scale with ``R = I``). The denominator is clamped at ``eps``
    (:data:`LS_SCALE_EPS`), so a collapsed ``x`` gives ``s = 0``. The sign is free: a negative
    ``s`` is a half-turn of the image plane, which callers that need ``s > 0`` fold into a
    rotation or clamp (see :func:`weak_perspective_scale`).

    Args:
        x: (..., K, D) points to scale.
        y: (..., K, D) target points.
        weights: (..., K) non-negative weights, None = all 1.
    """
    dims = check_shape(x, "... K D", name="least_squares_scale: x")
    check_shape(y, "... K D", name="least_squares_scale: y", dims=dims)
    if weights is None:
        num, den = (x * y).sum((-2, -1)), x.square().sum((-2, -1))
    else:
        check_shape(weights, "... K", name="least_squares_scale: weights", dims=dims)
        w = weights.to(x.dtype)[..., None]
        num, den = (w * x * y).sum((-2, -1)), (w * x.square()).sum((-2, -1))
    return num / den.clamp_min(eps)


def orthographic_translation(projected: Tensor, kp2d: Tensor, vis: Tensor | None = None) -> Tensor:
    """The 2D translation ``t`` (..., 2) minimising ``sum_visible ||projected_k + t - kp2d_k||^2``.

    ``t = mean_w(kp2d - projected)`` (0 where nothing is visible).

    Args:
        projected: (..., K, 2) the x, y of camera-frame points.
        kp2d: (..., K, 2) observed keypoints.
        vis: (..., K) visibility, None = all visible.
    """
    dims = check_shape(projected, "... K 2", name="orthographic_translation: projected")
    check_shape(kp2d, "... K 2", name="orthographic_translation: kp2d", dims=dims)
    w = visibility_weights(kp2d, vis)[..., None]
    return masked_mean(kp2d - projected, w, dim=-2)


def weak_perspective_scale(
    projected: Tensor, kp2d: Tensor, vis: Tensor | None = None, *, min_scale: float = 1e-8
) -> Tensor:
    """The scale ``s`` (...) minimising ``sum_visible ||s p_k + t - y_k||^2`` over ``s`` and ``t``.

    :func:`least_squares_scale` of the visible points centred on their means, clamped to at
    least ``min_scale``: ``s < 0`` would mirror the depth as well (an improper motion).

    Args:
        projected: (..., K, 2) the x, y of camera-frame points ``p``.
        kp2d: (..., K, 2) observed keypoints ``y``.
        vis: (..., K) visibility, None = all visible.
    """
    dims = check_shape(projected, "... K 2", name="weak_perspective_scale: projected")
    check_shape(kp2d, "... K 2", name="weak_perspective_scale: kp2d", dims=dims)
    w = visibility_weights(kp2d, vis)[..., None]
    p = (projected - masked_mean(projected, w, dim=-2)[..., None, :]) * w
    y = (kp2d - masked_mean(kp2d, w, dim=-2)[..., None, :]) * w
    return least_squares_scale(p, y).clamp_min(min_scale)
