"""Depth extent of lifted keypoints relative to their 2D extent: a check for a lifter that has
collapsed to (near) flat shapes.

Per sample, over the visible keypoints,
``ratio = rms_k(z_k - mean z) / rms_k(||y_k - mean y||)``: the RMS of the centred depth over the
RMS radius of the centred 2D points (the per-sample normalisation of C3DPO's protocol, so the
ratio has no units). A flat prediction gives 0; real objects seen from their usual views give a
substantial fraction of 1. The degenerate solution of non-rigid structure from motion (every view
posed alike, the views explained by deformation) shows as a small ratio over the training data.
Which ratio is right depends on the object and on the keypoints, so the check flags only a
collapse (a ratio far below any real object's), not a wrong depth.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

DEFAULT_FLAT_RATIO = 0.15
"""Median depth-to-2D ratio below which :func:`flatness` calls a lifter's output near flat."""


class Flatness(NamedTuple):
    """What :func:`flatness` measured on a batch."""

    ratio: Tensor
    """(B,) per-sample depth-to-2D RMS ratio (NaN where fewer than two keypoints are visible or
    the 2D points coincide)."""
    median_ratio: float
    """Median of the finite per-sample ratios (NaN when there is none)."""
    flat_fraction: float
    """Fraction of the finite samples whose ratio is below ``threshold``."""
    threshold: float
    """The threshold the check used."""
    near_flat: bool
    """``median_ratio < threshold``: most samples have collapsed depth."""

    def summary(self) -> dict[str, float | bool | None]:
        """The scalars by name, for a run's ``result.json`` (JSON has no NaN: None)."""

        def finite(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "median_depth_ratio": finite(self.median_ratio),
            "flat_fraction": finite(self.flat_fraction),
            "flat_threshold": self.threshold,
            "near_flat": self.near_flat,
        }


def _masked_rms(x: Tensor, w: Tensor) -> Tensor:
    """RMS over the last axis of ``x`` (B, K) centred on its ``w``-weighted mean; (B,)."""
    n = w.sum(-1)
    mean = (x * w).sum(-1) / n.clamp_min(1)
    return (((x - mean[..., None]) * w).square().sum(-1) / n.clamp_min(1)).sqrt()


def depth_ratio(kp3d: Tensor, vis: Tensor | None = None) -> Tensor:
    """Per-sample ``rms(centred z) / rms(||centred x, y||)`` over the visible keypoints.

    Args:
        kp3d: (B, K, 3) lifted keypoints, x, y the image coordinates and z the depth (any units
            shared by the three coordinates).
        vis: (B, K) visibility (bool or {0, 1}); None = all visible.

    Returns:
        (B,) float64 ratios; NaN where fewer than two keypoints are visible or their 2D points
        coincide.
    """
    if kp3d.ndim != 3 or kp3d.shape[-1] != 3:
        raise ValueError(f"depth_ratio: kp3d must be (B, K, 3), got {tuple(kp3d.shape)}")
    if vis is not None and vis.shape != kp3d.shape[:-1]:
        raise ValueError(
            f"depth_ratio: vis must be (B, K) = {tuple(kp3d.shape[:-1])}, got {tuple(vis.shape)}"
        )
    x = kp3d.double()
    w = torch.ones_like(x[..., 0]) if vis is None else vis.to(torch.float64)
    depth = _masked_rms(x[..., 2], w)
    radius = (_masked_rms(x[..., 0], w).square() + _masked_rms(x[..., 1], w).square()).sqrt()
    ok = (w.sum(-1) >= 2) & (radius > 0)
    return torch.where(ok, depth / radius.clamp_min(torch.finfo(x.dtype).tiny), torch.nan)


def flatness(
    kp3d: Tensor, vis: Tensor | None = None, *, threshold: float = DEFAULT_FLAT_RATIO
) -> Flatness:
    """Whether lifted keypoints (B, K, 3) of a batch are near flat (module doc).

    Args:
        kp3d: (B, K, 3) a lifter's predictions on (training) data: x, y the input, z the depth.
        vis: (B, K) visibility; None = all visible.
        threshold: median ratio below which the batch counts as near flat; must be positive.
    """
    if threshold <= 0:
        raise ValueError(f"flatness: threshold must be positive, got {threshold}")
    ratio = depth_ratio(kp3d, vis)
    finite = ratio[ratio.isfinite()]
    if finite.numel() == 0:
        return Flatness(ratio, float("nan"), float("nan"), threshold, False)
    median = float(finite.median())
    frac = float((finite < threshold).double().mean())
    return Flatness(ratio, median, frac, threshold, median < threshold)


def flatness_warning(result: Flatness, *, method: str) -> str | None:
    """The one-line warning for a near-flat :class:`Flatness`, None when it is not."""
    if not result.near_flat:
        return None
    return (
        f"{method}: the lifted training keypoints are near flat: median depth extent "
        f"{result.median_ratio:.3f} of the 2D extent (threshold {result.threshold:g}; "
        f"{100 * result.flat_fraction:.0f}% of samples below it): the lifter may have collapsed "
        "to the flat solution; try another seed or more steps"
    )


def flatness_check(
    kp3d: Tensor, vis: Tensor | None = None, *, method: str, threshold: float = DEFAULT_FLAT_RATIO
) -> tuple[dict[str, float | bool | None], list[str]]:
    """A lifter's end-of-training check on its predictions ``kp3d`` (B, K, 3) of training
    keypoints with visibility ``vis`` (B, K): :meth:`Flatness.summary` and the
    :func:`flatness_warning` (none when not near flat), for
    :meth:`kp3d.methods.MethodModel.diagnose`."""
    result = flatness(kp3d, vis, threshold=threshold)
    warning = flatness_warning(result, method=method)
    return result.summary(), [] if warning is None else [warning]
