"""The capture rig (``--rig``): fixed calibrated cameras, static backgrounds, smooth clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kp3d.data.adapters import open_dataset
from kp3d.data.adapters.synth import write
from kp3d.data.background import median_background
from kp3d.data.synth.rig import clip_bounds, clip_of, generate_rig
from kp3d.errors import ConfigError
from kp3d.geometry import invert_extrinsics, project_pinhole, transform_points


@pytest.fixture(scope="module")
def moments():
    return generate_rig("creature", 12, views=3, sequences=2, size=32, seed=0)


def _world(s) -> torch.Tensor:
    """(V, K, 3) world joints from each view's camera-frame kp3d."""
    E = invert_extrinsics(s.extrinsics.double())
    return transform_points(s.kp3d.double(), E[..., :3], E[..., 3])


def test_fields_have_a_leading_view_axis(moments) -> None:
    s = moments[0]
    assert s.image.shape == (3, 3, 32, 32) and s.background.shape == (3, 3, 32, 32)
    assert s.kp2d.shape == (3, 16, 2) and s.kp3d.shape == (3, 16, 3) and s.vis.shape == (3, 16)
    assert s.intrinsics.shape == (3, 3, 3) and s.extrinsics.shape == (3, 3, 4)
    assert s.mask.shape == (3, 1, 32, 32) and s.depth.shape == (3, 1, 32, 32)
    assert s.view.tolist() == [0, 1, 2]


def test_cameras_are_fixed_and_calibrated(moments) -> None:
    E0 = moments[0].extrinsics
    for s in moments[1:]:
        assert torch.equal(s.extrinsics, E0) and torch.equal(s.intrinsics, moments[0].intrinsics)
        assert torch.equal(s.background, moments[0].background)
    R = E0[:, :, :3].double()
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(3, dtype=R.dtype), atol=1e-5)
    centres = -(R.transpose(-1, -2) @ E0[:, :, 3:].double())[..., 0]
    heights, dist = centres[:, 1], centres[:, [0, 2]].norm(dim=-1)
    assert (dist > 3.0).all() and (dist < 4.0).all() and heights.std() > 0  # different heights


def test_every_view_sees_the_same_world_joints(moments) -> None:
    for s in moments:
        w = _world(s)
        assert torch.allclose(w, w[:1].expand_as(w), atol=1e-4)
        uv = project_pinhole(s.kp3d.double(), s.intrinsics.double())
        assert torch.allclose(uv, s.kp2d.double(), atol=1e-3)
        assert w[0, :, 1].min() >= -0.05  # on or above the floor


def test_motion_is_smooth_within_a_clip_and_jumps_between_clips(moments) -> None:
    w = torch.stack([_world(s)[0] for s in moments])  # (N, K, 3)
    step = (w[1:] - w[:-1]).norm(dim=-1).mean(-1)
    first_of_clip2 = int(clip_bounds(12, 2)[1])
    within = torch.cat((step[: first_of_clip2 - 1], step[first_of_clip2:]))
    assert within.max() < 0.25  # metres per moment, a few frames of motion
    assert step[first_of_clip2 - 1] > within.median()  # another individual elsewhere


def test_the_median_of_a_clip_recovers_the_background() -> None:
    samples = generate_rig("quadruped", 16, views=2, size=32, seed=1)
    images = torch.stack([s.image[0] for s in samples])
    est = median_background(images)
    err = (est - samples[0].background[0]).abs()
    raw = (images[0] - samples[0].background[0]).abs()
    assert err.mean() < 0.03 and raw.max() > 0.3  # the object is gone, lighting noise too


def test_moments_do_not_depend_on_batching() -> None:
    a = generate_rig("creature", 6, views=2, sequences=2, size=32, seed=4)
    b = generate_rig("creature", 6, views=2, sequences=2, size=32, seed=4, indices=[4, 1])
    assert torch.equal(a[4].image, b[0].image) and torch.equal(a[1].kp3d, b[1].kp3d)


def test_clips_split_the_moments_evenly() -> None:
    assert clip_bounds(10, 3).tolist() == [0, 3, 7, 10]
    assert clip_of(10, 3).tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_options_are_validated(tmp_path) -> None:
    with pytest.raises(ConfigError, match="2..8"):
        generate_rig("creature", 4, views=9)
    with pytest.raises(ConfigError, match="sequences"):
        generate_rig("creature", 4, views=2, sequences=5)
    with pytest.raises(ConfigError, match="creature"):
        generate_rig("face", 4, views=2)
    with pytest.raises(ConfigError, match="--views"):
        write(tmp_path / "a", "creature", 4, rig=2, views=2)
    with pytest.raises(ConfigError, match="--rig"):
        write(tmp_path / "b", "creature", 4, sequences=2)


def test_written_set_reads_back_with_backgrounds_and_world_joints(tmp_path) -> None:
    out = write(tmp_path / "rig", "creature", 6, rig=2, sequences=2, size=32, seed=2)
    assert sorted(p.name for p in (out / "backgrounds").iterdir()) == ["cam0.png", "cam1.png"]
    ds = open_dataset(out)
    mem = generate_rig("creature", 6, views=2, sequences=2, size=32, seed=2)
    assert len(ds) == 6
    s = ds[3]
    assert s.image.shape == (2, 3, 32, 32) and s.background.shape == (2, 3, 32, 32)
    assert (s.image - mem[3].image).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
    assert (s.background - mem[3].background).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.allclose(s.kp3d, mem[3].kp3d)
    assert ds.joints3d.shape == (6, 16, 3) and ds.clips.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.allclose(ds.joints3d[3], _world(s)[0].numpy(), atol=1e-4)
    flat = open_dataset(out, views="flat")
    assert flat[1].background.shape == (3, 32, 32)
    small = open_dataset(out, size=16)
    assert small[0].background.shape == (2, 3, 16, 16)
