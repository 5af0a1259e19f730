"""Repulsion between keypoints, so that they spread instead of collapsing onto one place."""

from __future__ import annotations

import torch
from torch import Tensor


def nearest_neighbour_distance(kp: Tensor, *, eps: float = 1e-12) -> Tensor:
    """(..., K, 2 or 3) -> (..., K): distance from each keypoint to its nearest other keypoint.

    ``eps`` keeps the gradient finite when two keypoints coincide.
    """
    if kp.shape[-2] < 2:
        raise ValueError(
            f"nearest_neighbour_distance: need K >= 2 keypoints, got shape {tuple(kp.shape)}"
        )
    diff = kp[..., :, None, :] - kp[..., None, :, :]
    d2 = (diff * diff).sum(-1)
    self_pairs = torch.eye(kp.shape[-2], dtype=torch.bool, device=kp.device)
    return (d2.masked_fill(self_pairs, torch.inf).amin(dim=-1) + eps).sqrt()


def repulsion_loss(kp: Tensor, *, h: float) -> Tensor:
    """``-sum_i d_i exp(-d_i / h)``, d_i the distance of keypoint i to its nearest neighbour.

    Each term is lowest at ``d_i = h`` (value ``-h/e``): closer keypoints are pushed apart, and
    beyond a few h the term and its pull fade to zero, so the loss only acts on crowded keypoints.

    Args:
        kp: (..., K, D) keypoints, K >= 2.
        h: > 0, the preferred spacing, in the units of ``kp``.

    Returns:
        (...,) the loss per set of keypoints.
    """
    if not h > 0:
        raise ValueError(f"repulsion_loss: h must be > 0, got {h}")
    d = nearest_neighbour_distance(kp)
    return -(d * torch.exp(-d / h)).sum(-1)
