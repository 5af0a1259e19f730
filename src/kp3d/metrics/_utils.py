"""Input handling shared by the metrics: tensor conversion, masks, reductions."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

Reduction = Literal["mean", "none"]

ArrayLike = Tensor | np.ndarray


def as_tensor(x: ArrayLike, name: str, fn: str) -> Tensor:
    """A tensor view of ``x`` (numpy arrays are wrapped without copying)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{fn}: {name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def float_dtype(*xs: Tensor) -> torch.dtype:
    """The floating dtype results are returned in: the promoted input dtype, or the default."""
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def as_mask(mask: ArrayLike | None, shape: tuple[int, ...], name: str, fn: str) -> Tensor | None:
    """``mask`` as a bool tensor of exactly ``shape``; numeric masks must hold only 0 and 1."""
    if mask is None:
        return None
    m = as_tensor(mask, name, fn)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(m.shape)}")
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"{fn}: {name} must be boolean or hold only 0 and 1")
        m = m != 0
    return m


def check_reduction(reduction: str, fn: str) -> None:
    if reduction not in get_args(Reduction):
        raise ValueError(f"{fn}: reduction must be one of {get_args(Reduction)}, got {reduction!r}")


def reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    """Mean over all samples (every leading dim), or the per-sample values unchanged."""
    return per_sample.mean() if reduction == "mean" else per_sample
