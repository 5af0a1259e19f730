"""First-order smoothness of a map: the mean absolute difference of neighbouring pixels."""

from __future__ import annotations

from torch import Tensor


def total_variation_l1(x: Tensor) -> Tensor:
    """``mean |x[i + 1, j] - x[i, j]| + mean |x[i, j + 1] - x[i, j]|`` over the last two dims of
    ``x`` (..., H, W), H and W >= 2: anisotropic total variation per pixel. Unsup3d's depth
    smoothness term (``lam_depth_sm``) is this on the canonical depth divided by its range.
    """
    if x.ndim < 2 or min(x.shape[-2:]) < 2:
        raise ValueError(
            f"total_variation_l1: expected (..., H, W) with H, W >= 2, got {tuple(x.shape)}"
        )
    down = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    right = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return down + right
