"""The real-rig format: cameras.json, <camera>/<frame>.<ext>, joints3d.npy, backgrounds/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kp3d.data.adapters import detect_format, info, open_dataset
from kp3d.data.adapters.rig import baselines, read_cameras
from kp3d.errors import DataError
from kp3d.geometry import invert_extrinsics, transform_points

W, H, F = 320, 240, 500.0  # a VGA-class camera at half resolution: f = 500 px
GREY = (110, 120, 130)


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World (y up) to camera (x right, y down, z forward) rotation looking at ``target``."""
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    return np.stack((x, np.cross(z, x), z))


def _cameras(n: int = 4, radius: float = 3.0) -> list[dict]:
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n + 0.3
        C = np.array([radius * np.sin(a), 1.2 + 0.3 * i, radius * np.cos(a)])
        R = _look_at(C, np.array([0.0, 0.9, 0.0]))
        cams.append(
            {
                "name": f"cam{i}",
                "K": [[F, 0, W / 2 + 3 * i], [0, F, H / 2 - 2 * i], [0, 0, 1]],
                "R": R.tolist(),
                "t": (-R @ C).tolist(),
                "size": [W, H],
                "distortion": [0, 0, 0, 0, 0],
            }
        )
    return cams


def write_rig(
    root: Path, *, frames: int = 5, missing: int = 1, backgrounds: bool = True
) -> np.ndarray:
    """A tiny recording: 4 cameras on a 3 m circle, a walker of 3 joints on a
    0.5 m circle; camera 3 lacks the
    last ``missing`` frames. Returns the (frames, 3, 3) world joints."""
    cams = _cameras()
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    joints = np.stack(
        [
            np.array([[0.0, 0.9, 0.0], [0.0, 1.5, 0.0], [0.2, 0.4, 0.1]])
            + 0.5 * np.array([np.cos(a), 0.0, np.sin(a)])
            for a in np.linspace(0, 2 * np.pi, frames, endpoint=False)
        ]
    ) + rng.normal(0, 0.01, (frames, 3, 3))
    np.save(root / "joints3d.npy", joints)
    meta = {
        "units": "m",
        "joint_names": ["pelvis", "head", "foot"],
        "skeleton": [[0, 1], [0, 2]],
        "cameras": cams,
    }
    (root / "cameras.json").write_text(json.dumps(meta))
    if backgrounds:
        (root / "backgrounds").mkdir()
    for c in cams:
        (root / c["name"]).mkdir()
        bg = np.zeros((H, W, 3), np.uint8) + np.array(GREY, np.uint8)
        if backgrounds:
            Image.fromarray(bg).save(root / "backgrounds" / f"{c['name']}.png")
        R, t, K = np.array(c["R"]), np.array(c["t"]), np.array(c["K"])
        n = frames - missing if c["name"] == "cam3" else frames
        for f in range(n):
            img = bg.copy()
            cam = joints[f] @ R.T + t
            uv = cam[:, :2] / cam[:, 2:] * F + K[:2, 2]
            for u, v in uv.astype(int):
                img[max(v - 4, 0) : v + 4, max(u - 4, 0) : u + 4] = (250, 40, 40)
            Image.fromarray(img).save(root / c["name"] / f"{f:06d}.png")
    return joints


def test_detect_open_and_the_sample_contract(tmp_path) -> None:
    joints = write_rig(tmp_path / "rig")
    assert detect_format(tmp_path / "rig") == "rig"
    ds = open_dataset(tmp_path / "rig")
    assert len(ds) == 4 and ds.frames == ["000000", "000001", "000002", "000003"]
    s = ds[1]
    assert s.image.shape == (4, 3, H, W) and s.background.shape == (4, 3, H, W)
    assert s.kp2d.shape == (4, 3, 2) and s.kp3d.shape == (4, 3, 3) and s.vis.all()
    assert s.intrinsics.shape == (4, 3, 3) and s.extrinsics.shape == (4, 3, 4)
    assert s.view.tolist() == [0, 1, 2, 3] and s.name == "000001"
    E = invert_extrinsics(s.extrinsics.double())
    world = transform_points(s.kp3d.double(), E[..., :3], E[..., 3])
    assert torch.allclose(world, torch.tensor(joints[1]).expand(4, 3, 3), atol=1e-5)
    # The drawn markers sit where kp2d says.
    u, v = s.kp2d[2, 1].round().long().tolist()
    assert s.image[2, 0, v, u] > 0.9 and s.image[2, 1, v, u] < 0.3
    assert np.allclose(ds.joints3d, joints[:4])


def test_resizing_scales_intrinsics_and_keypoints_exactly(tmp_path) -> None:
    write_rig(tmp_path / "rig")
    full, small = open_dataset(tmp_path / "rig"), open_dataset(tmp_path / "rig", size=32)
    a, b = full[0], small[0]
    assert b.image.shape == (4, 3, 32, 32) and b.background.shape == (4, 3, 32, 32)
    scale = torch.tensor([32 / W, 32 / H])
    assert torch.allclose(b.kp2d, a.kp2d * scale, atol=1e-4)
    assert torch.allclose(b.intrinsics[:, 0, 0], a.intrinsics[:, 0, 0] * 32 / W)


def test_missing_frames_are_skipped_with_a_count(tmp_path, caplog) -> None:
    write_rig(tmp_path / "rig", missing=2)
    with caplog.at_level(logging.WARNING, logger="kp3d.data"):
        ds = open_dataset(tmp_path / "rig")
    assert len(ds) == 3 and "skipped 2 of 5 frames" in caplog.text


def test_without_background_files_the_median_stands_in(tmp_path) -> None:
    write_rig(tmp_path / "rig", frames=10, backgrounds=False)
    ds = open_dataset(tmp_path / "rig", size=64)
    bg = ds[0].background
    grey = torch.tensor(GREY, dtype=torch.float32)[:, None, None] / 255
    assert (bg - grey).abs().max() < 2 / 255  # the moving markers are gone
    assert open_dataset(tmp_path / "rig", backgrounds="none")[0].background is None
    with pytest.raises(DataError, match="no background image"):
        open_dataset(tmp_path / "rig", backgrounds="files")


def _edit(root: Path, i: int, **changes) -> None:
    meta = json.loads((root / "cameras.json").read_text())
    meta["cameras"][i].update(changes)
    (root / "cameras.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"R": [[1, 0, 0], [0, 1, 0], [0, 0.5, 1]]}, "not a rotation"),
        ({"R": [[1, 0, 0], [0, 1, 0], [0, 0, -1]]}, "not a rotation"),  # a reflection
        ({"K": [[0, 0, 160], [0, 500, 120], [0, 0, 1]]}, "focal lengths"),
        ({"distortion": [0.1, 0, 0, 0, 0]}, "distortion"),
        ({"size": [640, 480]}, "calibrated for 640x480"),
        ({"t": [0, 1]}, "t must be"),
    ],
)
def test_bad_calibration_names_the_camera(tmp_path, changes, match) -> None:
    write_rig(tmp_path / "rig")
    _edit(tmp_path / "rig", 2, **changes)
    with pytest.raises(DataError, match=match) as e:
        open_dataset(tmp_path / "rig")
    assert "cam2" in str(e.value)


def test_joints_must_cover_every_frame(tmp_path) -> None:
    write_rig(tmp_path / "rig")
    np.save(tmp_path / "rig" / "joints3d.npy", np.zeros((4, 3, 3)))
    with pytest.raises(DataError, match="joints3d.npy"):
        open_dataset(tmp_path / "rig")


def test_info_reports_cameras_frames_and_baselines(tmp_path) -> None:
    write_rig(tmp_path / "rig")
    r = info(tmp_path / "rig")
    assert r.format == "rig" and r.samples == 4 and r.labelled == 4 and r.keypoints == 3
    assert r.keypoint_names == ["pelvis", "head", "foot"] and not r.problems
    text = "\n".join(r.notes)
    assert "cameras: 4" in text and "1 skipped" in text and "baselines" in text
    cams, _ = read_cameras(tmp_path / "rig")
    d = baselines(cams)
    # Naive twin: adjacent cameras on a 3 m circle, 90 degrees apart, heights 0.3 m apart.
    assert d[("cam0", "cam1")] == pytest.approx(np.hypot(3 * np.sqrt(2), 0.3), rel=1e-9)
    _edit(tmp_path / "rig", 1, size=[100, 100])
    r = info(tmp_path / "rig", check="none")
    assert r.problems and "cam1" in r.problems[0]
