"""Heatmaps <-> keypoints: spatial softmax, soft-argmax and Gaussian rendering.

Keypoints are in normalised image coordinates (see :mod:`kp3d.geometry`): the centre of pixel
column ``j`` of a W-wide map is at ``x = (2 j + 1) / W - 1`` (``align_corners=False``), so a
heatmap of any resolution over the same image gives keypoints in the same coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


class SoftArgmax(NamedTuple):
    """Result of :func:`soft_argmax`."""

    kp: Tensor
    """(..., K, 2) expected (x, y) in normalised [-1, 1] coordinates."""
    prob: Tensor
    """(..., K, H, W) the spatial softmax the expectation was taken under."""


def pixel_centres(
    n: int, *, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> Tensor:
    """(n,) normalised coordinates of n pixel centres along an axis: ``(2 j + 1) / n - 1``."""
    return (torch.arange(n, dtype=dtype, device=device) * 2 + 1) / n - 1


def _check_maps(name: str, x: Tensor) -> None:
    if x.ndim < 3:
        raise ValueError(f"{name}: expected (..., K, H, W), got shape {tuple(x.shape)}")


def _check_temperature(name: str, temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"{name}: temperature must be > 0, got {temperature}")


def check_render_args(name: str, kp: Tensor, size: Sequence[int]) -> None:
    """The checks of a map renderer (:func:`render_gaussian_heatmaps`, the edge maps of
    :mod:`kp3d.nn.edgemap`): keypoints ``kp`` (..., K, 2) and a map ``size`` (H, W) >= 1."""
    if kp.ndim < 2 or kp.shape[-1] != 2:
        raise ValueError(f"{name}: kp must be (..., K, 2), got {tuple(kp.shape)}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name}: size must be (H, W) >= 1, got {tuple(size)}")


def spatial_softmax(logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Softmax over the two spatial dims of each map.

    Args:
        logits: (..., K, H, W).
        temperature: > 0; logits are divided by it (smaller = peakier).

    Returns:
        (..., K, H, W) non-negative, each map summing to 1. Half-precision logits are upcast to
        float32 first (as autocast does for softmax), so the result is float32 for them.
    """
    _check_maps("spatial_softmax", logits)
    _check_temperature("spatial_softmax", temperature)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    flat = logits.flatten(-2)
    if temperature != 1.0:
        flat = flat / temperature
    return flat.softmax(dim=-1).view_as(logits)


def _expectation(prob: Tensor) -> Tensor:
    # Marginals first: two short dot products instead of a full (H, W) coordinate grid.
    H, W = prob.shape[-2:]
    xs = pixel_centres(W, dtype=prob.dtype, device=prob.device)
    ys = pixel_centres(H, dtype=prob.dtype, device=prob.device)
    x = prob.sum(dim=-2) @ xs
    y = prob.sum(dim=-1) @ ys
    return torch.stack((x, y), dim=-1)


def soft_argmax(logits: Tensor, *, temperature: float = 1.0) -> SoftArgmax:
    """Differentiable argmax: the expected pixel-centre position under the spatial softmax.

    Args:
        logits: (..., K, H, W) unnormalised scores.
        temperature: > 0; logits are divided by it before the softmax.

    Returns:
        :class:`SoftArgmax` ``(kp, prob)``: kp (..., K, 2) in normalised coordinates, (x, y),
        within the pixel-centre range ``[1/W - 1, 1 - 1/W]`` x ``[1/H - 1, 1 - 1/H]``;
        prob (..., K, H, W).
    """
    _check_maps("soft_argmax", logits)
    _check_temperature("soft_argmax", temperature)
    prob = spatial_softmax(logits, temperature=temperature)
    return SoftArgmax(_expectation(prob), prob)


def expected_variance(prob: Tensor, *, mean: Tensor | None = None) -> Tensor:
    """Per-axis spread of each heatmap: ``(Var[x], Var[y])`` under ``prob``, normalised units².

    Args:
        prob: (..., K, H, W) non-negative maps each summing to 1 (e.g. ``soft_argmax(...).prob``).
        mean: (..., K, 2) the maps' expected positions if already known (``soft_argmax(...).kp``);
            computed otherwise.

    Returns:
        (..., K, 2) variances, >= 0 up to rounding. A one-hot map has variance 0; a uniform
        W-wide map has ``Var[x] = (1 - 1/W^2) / 3``.
    """
    _check_maps("expected_variance", prob)
    if mean is None:
        mean = _expectation(prob)
    elif mean.shape != prob.shape[:-2] + (2,):
        raise ValueError(
            f"expected_variance: mean must be {tuple(prob.shape[:-2]) + (2,)}, "
            f"got {tuple(mean.shape)}"
        )
    H, W = prob.shape[-2:]
    xs = pixel_centres(W, dtype=prob.dtype, device=prob.device)
    ys = pixel_centres(H, dtype=prob.dtype, device=prob.device)
    # Centred second moments, so the result stays accurate for peaked maps far from the origin.
    var_x = (prob.sum(dim=-2) * (xs - mean[..., 0:1]).square()).sum(-1)
    var_y = (prob.sum(dim=-1) * (ys - mean[..., 1:2]).square()).sum(-1)
    return torch.stack((var_x, var_y), dim=-1)


def render_gaussian_heatmaps(
    kp: Tensor,
    size: Sequence[int],
    *,
    sigma: float,
    normalise: bool = False,
) -> Tensor:
    """Isotropic Gaussian blobs centred on keypoints, sampled at pixel centres.

    Args:
        kp: (..., K, 2) keypoints (x, y) in normalised coordinates; may lie outside [-1, 1].
        size: ``(H, W)`` of the maps.
        sigma: standard deviation in normalised units (both axes; in pixels that is
            ``sigma * W / 2`` horizontally and ``sigma * H / 2`` vertically).
        normalise: if True each map sums to 1 (a probability map); otherwise the value at the
            keypoint itself would be 1.

    Returns:
        (..., K, H, W) ``exp(-||p - kp||^2 / (2 sigma^2))`` at each pixel centre p.
    """
    check_render_args("render_gaussian_heatmaps", kp, size)
    if not sigma > 0:
        raise ValueError(f"render_gaussian_heatmaps: sigma must be > 0, got {sigma}")
    H, W = int(size[0]), int(size[1])
    xs = pixel_centres(W, dtype=kp.dtype, device=kp.device)
    ys = pixel_centres(H, dtype=kp.dtype, device=kp.device)
    # Separable: exp(-(dx^2 + dy^2)) = exp(-dy^2) exp(-dx^2) as an outer product.
    ex = -(xs - kp[..., 0:1]).square() / (2 * sigma**2)  # (..., K, W)
    ey = -(ys - kp[..., 1:2]).square() / (2 * sigma**2)  # (..., K, H)
    if normalise:
        # Per-axis softmax sums to 1 even where exp() underflows (keypoints far off the map).
        gx, gy = ex.softmax(dim=-1), ey.softmax(dim=-1)
    else:
        gx, gy = ex.exp(), ey.exp()
    return gy[..., :, None] * gx[..., None, :]
