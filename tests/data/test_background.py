"""Per-pixel median background estimates."""

from __future__ import annotations

import pytest
import torch

from kp3d.data.background import clip_backgrounds, median_background


def _moving_square(bg: torch.Tensor, n: int, colour: float) -> torch.Tensor:
    """Frames of ``bg`` with an 8 x 8 square moving over it (no pixel covered twice)."""
    frames = bg.expand(n, *bg.shape).clone()
    for i in range(n):
        x = 8 * (i % 4)
        frames[i, :, 2 * i : 2 * i + 8, x : x + 8] = colour
    return frames


def test_a_moving_object_over_a_static_background_is_removed() -> None:
    g = torch.Generator().manual_seed(0)
    bg = torch.rand(3, 32, 32, generator=g)
    frames = _moving_square(bg, 9, 1.0)
    assert torch.equal(median_background(frames), bg)
    # Naive twin: the median of each pixel's values, one pixel at a time.
    est = median_background(frames)
    for y, x in [(0, 0), (5, 7), (20, 30)]:
        assert torch.equal(est[:, y, x], frames[:, :, y, x].sort(0).values[4])


def test_max_frames_subsamples_evenly() -> None:
    frames = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 2, 2)
    # Frames 0, 4.5->4 or 5, 9: evenly spaced, median the middle one.
    assert median_background(frames, max_frames=3).flatten().unique().tolist() in ([4.0], [5.0])
    assert median_background(frames).flatten().unique().tolist() == [4.0]  # lower middle
    with pytest.raises(ValueError, match="max_frames"):
        median_background(frames, max_frames=0)


def test_each_clip_gets_its_own_background() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g)
    frames = torch.cat((_moving_square(a, 5, 0.0), _moving_square(b, 7, 1.0)))
    clips = torch.tensor([3] * 5 + [1] * 7)
    labels, est = clip_backgrounds(frames, clips)
    assert labels.tolist() == [1, 3]
    assert torch.equal(est[0], b) and torch.equal(est[1], a)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="N >= 1"):
        median_background(torch.zeros(0, 3, 4, 4))
    with pytest.raises(ValueError, match="clips must be"):
        clip_backgrounds(torch.zeros(4, 3, 4, 4), [0, 1])
