"""The turntable of a canonical depth map and its GIF."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from kp3d.metrics.surface import unsup3d_intrinsics
from kp3d.viz.html import gif_data_uri
from kp3d.viz.turntable import turntable_angles, turntable_frames


def _bump(S: int) -> torch.Tensor:
    v, u = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    return (1 - 0.05 * (1 - (u.square() + v.square())).clamp_min(0))[None]


def test_turntable_angles_sweep_and_return() -> None:
    a = turntable_angles(8, max_angle_deg=30)
    assert a.shape == (8,) and a[0] == 0
    assert float(a.max()) == pytest.approx(math.radians(30))
    assert float(a.min()) == pytest.approx(-math.radians(30))
    with pytest.raises(ValueError, match="frames must be >= 1"):
        turntable_angles(0, max_angle_deg=30)


def test_the_first_frame_is_the_canonical_image_and_others_turn() -> None:
    S = 16
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, S, S, generator=g)
    frames = turntable_frames(_bump(S), image, unsup3d_intrinsics(S, S), frames=4, scale=2)
    assert len(frames) == 4 and all(f.size == (2 * S, 2 * S) for f in frames)
    first = np.asarray(frames[0])[::2, ::2].astype(float) / 255
    expected = image.permute(1, 2, 0).numpy()
    # The identity view samples the canonical image at its own pixel centres (up to rounding).
    np.testing.assert_allclose(first[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1 / 255 + 1e-4)
    assert not np.array_equal(np.asarray(frames[1]), np.asarray(frames[0]))
    with pytest.raises(ValueError, match="depth must be"):
        turntable_frames(_bump(S)[0], image, unsup3d_intrinsics(S, S))


def test_gif_data_uri_holds_every_frame() -> None:
    frames = [Image.new("RGB", (8, 8), (10 * i, 0, 0)) for i in range(5)]
    uri = gif_data_uri(frames, duration_ms=50)
    assert uri.startswith("data:image/gif;base64,")
    gif = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert gif.n_frames == 5
    with pytest.raises(ValueError, match="no frames"):
        gif_data_uri([])
