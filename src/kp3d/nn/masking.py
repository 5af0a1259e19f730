"""Random block dropout of images (AutoLink's masked input)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def random_block_mask(
    batch: int,
    size: Sequence[int],
    *,
    grid: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A mask that drops each cell of a ``grid x grid`` partition of the image independently.

    Args:
        batch: number of masks B.
        size: ``(H, W)``, each divisible by ``grid``.
        grid: cells per side.
        ratio: probability in [0, 1] that a cell is dropped (AutoLink: 0.8).
        generator: random source (default: torch's global generator).
        device, dtype: of the result.

    Returns:
        (B, 1, H, W) with 1 where the image is kept and 0 where it is dropped.
    """
    H, W = int(size[0]), int(size[1])
    if grid < 1 or H % grid or W % grid:
        raise ValueError(f"random_block_mask: size {H}x{W} is not divisible by grid {grid}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"random_block_mask: ratio must be in [0, 1], got {ratio}")
    u = torch.rand((batch, 1, grid, grid), generator=generator, device=device)
    keep = (u >= ratio).to(dtype)
    return F.interpolate(keep, size=(H, W), mode="nearest")
