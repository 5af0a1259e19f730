"""Background estimates for static cameras: the per-pixel median over frames.

Honari & Fua (2022) reconstruct each view as foreground over a background image; in a capture
studio, where the cameras do not move, the per-pixel median over a clip in which the subject
moves gives that background (each pixel shows the empty scene in most frames). These functions
estimate it when a set has no background images.

With an even number of frames the median is the lower of the two middle values (PyTorch's
``median``), so the estimate is always one of the observed colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check_frames(name: str, images: Tensor) -> None:
    if images.ndim < 3 or images.shape[0] == 0:
        raise ValueError(
            f"{name}: images must be (N, C, H, W) with N >= 1, got {tuple(images.shape)}"
        )


def median_background(images: Tensor, *, max_frames: int | None = None) -> Tensor:
    """Per-pixel median of the frames of one static camera.

    Args:
        images: (N, C, H, W) frames of one camera (any trailing shape works).
        max_frames: use at most this many frames, evenly spaced over the N (bounds memory and
            time on long recordings); None uses all.

    Returns:
        (C, H, W) the estimated background, in the dtype of ``images``.
    """
    _check_frames("median_background", images)
    if max_frames is not None:
        if max_frames < 1:
            raise ValueError(f"median_background: max_frames must be >= 1, got {max_frames}")
        if images.shape[0] > max_frames:
            pick = torch.linspace(0, images.shape[0] - 1, max_frames).round().long()
            images = images[pick.to(images.device)]
    return images.median(dim=0).values


def clip_backgrounds(images: Tensor, clips: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
    """Per-pixel median of each clip of one static camera.

    Args:
        images: (N, C, H, W) frames.
        clips: (N,) integer clip label of each frame.

    Returns:
        ``(labels, backgrounds)``: the sorted distinct labels (M,) and (M, C, H, W) the median
        of each clip's frames; ``backgrounds[searchsorted(labels, clips)]`` gives every frame
        its clip's background.
    """
    _check_frames("clip_backgrounds", images)
    clips = torch.as_tensor(clips, device=images.device)
    if clips.shape != images.shape[:1]:
        raise ValueError(
            f"clip_backgrounds: clips must be ({images.shape[0]},), got {tuple(clips.shape)}"
        )
    labels = clips.unique(sorted=True)
    return labels, torch.stack([median_background(images[clips == c]) for c in labels])


__all__ = ["clip_backgrounds", "median_background"]
