"""Foreground masks: intersection over union against ground-truth masks."""

from __future__ import annotations

import torch
from torch import Tensor

from kp3d.metrics._utils import (
    ArrayLike,
    Reduction,
    as_tensor,
    check_reduction,
    float_dtype,
    reduce,
)


def mask_iou(
    pred: ArrayLike, gt: ArrayLike, *, threshold: float = 0.5, reduction: Reduction = "mean"
) -> Tensor:
    """Intersection over union of binarised masks, per map.

    ``IoU = |P & G| / |P | G|`` with ``P = pred > threshold`` and ``G = gt > threshold`` over
    the last two (spatial) dims; a map where both are empty scores 1 (they agree).

    Args:
        pred: (..., H, W) predicted foreground (probabilities or {0, 1}).
        gt: (..., H, W) ground-truth foreground, the same shape.
        threshold: both masks are foreground above it.
        reduction: ``mean`` over every map, or ``none``: (...) one IoU per map.

    Returns:
        The IoU in [0, 1] (float64 inputs stay float64, others in the default float dtype).
    """
    fn = "mask_iou"
    p, g = as_tensor(pred, "pred", fn), as_tensor(gt, "gt", fn)
    check_reduction(reduction, fn)
    if p.ndim < 2 or p.shape != g.shape:
        raise ValueError(
            f"{fn}: pred and gt must be (..., H, W) of one shape, got {tuple(p.shape)} and "
            f"{tuple(g.shape)}"
        )
    dtype = float_dtype(p, g)
    pb, gb = p > threshold, g > threshold
    inter = (pb & gb).sum((-2, -1)).double()
    union = (pb | gb).sum((-2, -1)).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), 1.0)
    return reduce(iou, reduction).to(dtype)
