from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from kp3d.data.adapters import detect_format, info
from kp3d.data.adapters.aflw import KeypointArray, detect, open
from kp3d.data.schema import collate
from kp3d.errors import DataError

W = 90  # the fixture images are W x W (the real ones are 450 x 450)


def _pts(seed: int) -> np.ndarray:
    """(3, 68) like pt3d_68: x, y in image pixels, z towards the viewer."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [rng.uniform(10, 80, 68), rng.uniform(10, 80, 68), rng.uniform(-30, 30, 68)]
    ).astype(np.float32)


def _mat(path: Path, **fields: np.ndarray) -> None:
    base = {
        "Pose_Para": np.array([[0.1, -0.5, 0.2, 200.0, 210.0, -100.0, 0.0015]], dtype=np.float32),
        "roi": np.array([[10, 10, 80, 80]], dtype=np.int16),
        "Shape_Para": np.zeros((199, 1)),
        "Exp_Para": np.zeros((29, 1)),
    }
    scipy.io.savemat(path, {**base, **fields})


@pytest.fixture
def aflw2000(tmp_path: Path, image_writer) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "AFLW2000"
    for i in (2, 8):
        image_writer(root / f"image{i:05d}.jpg", W, W, (20 * i, 0, 0))
        pt2d_21 = np.full((2, 21), -1.0)
        _mat(root / f"image{i:05d}.mat", pt3d_68=_pts(i), pt2d=pt2d_21)
    return root


def test_detect(aflw2000: Path) -> None:
    assert detect(aflw2000) and detect_format(aflw2000) == "aflw"
    assert not detect(aflw2000 / "image00002.jpg")


def test_pt3d_gives_kp2d_and_kp3d_in_the_camera_frame(aflw2000: Path) -> None:
    size = 30
    ds = open(aflw2000, size=size)
    assert ds.names == ["image00002.jpg", "image00008.jpg"]
    for i, seed in enumerate((2, 8)):
        s = ds[i]
        p = torch.from_numpy(_pts(seed)).T.double()
        expected3d = torch.stack([p[:, 0], p[:, 1], -p[:, 2]], dim=1) * size / W
        torch.testing.assert_close(s.kp3d, expected3d.float())
        torch.testing.assert_close(s.kp2d, (p[:, :2] * size / W).float())
        torch.testing.assert_close(s.ortho, torch.tensor([1.0, 0.0, 0.0]))
        # The orthographic camera projects kp3d onto kp2d: u = X, v = Y.
        torch.testing.assert_close(s.kp3d[:, :2] * s.ortho[0] + s.ortho[1:], s.kp2d)
        assert s.vis.all() and s.image.shape == (3, size, size)
    pose = ds.extra("pose")
    np.testing.assert_allclose(pose[0], np.degrees([0.1, -0.5, 0.2]), rtol=1e-6)
    batch = collate([ds[0], ds[1]])
    assert batch.kp3d.shape == (2, 68, 3)


def test_300w_lp_pt2d_68_gives_2d_only(tmp_path: Path, image_writer) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "300W_LP"
    image_writer(root / "AFW" / "AFW_1_0.jpg", W, W)
    pt2d = _pts(1)[:2].astype(np.float64)
    _mat(root / "AFW" / "AFW_1_0.mat", pt2d=pt2d)
    (root / "landmarks" / "AFW").mkdir(parents=True)
    scipy.io.savemat(root / "landmarks" / "AFW" / "AFW_1_0_pts.mat", {"pts_2d": pt2d.T})
    ds = open(root, size=45)
    assert ds.names == ["AFW/AFW_1_0.jpg"]
    s = ds[0]
    assert s.kp3d is None and s.ortho is None
    torch.testing.assert_close(s.kp2d, torch.from_numpy(pt2d.T * 45 / W).float())


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"pt3d_68": np.zeros((3, 60))}, r"image00008.mat: pt3d_68 has shape \(3, 60\)"),
        ({"pt3d_68": np.full((3, 68), np.nan)}, "image00008.mat: pt3d_68 has non-finite"),
        ({"pt2d": np.zeros((2, 21))}, r"image00008.mat: pt2d has shape \(2, 21\).*no pt3d_68"),
        ({}, "image00008.mat: has neither pt3d_68 nor pt2d"),
    ],
)
def test_malformed_mat_is_an_error_naming_it(aflw2000: Path, fields: dict, message: str) -> None:
    _mat(aflw2000 / "image00008.mat", **fields)
    with pytest.raises(DataError, match=message):
        open(aflw2000)


def test_unreadable_mat(aflw2000: Path) -> None:
    (aflw2000 / "image00008.mat").write_bytes(b"MATLAB 5.0 but not really")
    with pytest.raises(DataError, match="image00008.mat: unreadable .mat file"):
        open(aflw2000)


def test_no_readable_mat_is_an_error_naming_them(aflw2000: Path) -> None:
    for i in (2, 8):
        (aflw2000 / f"image{i:05d}.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="image00002.mat: unreadable.*image00008.mat: unreadable"):
        open(aflw2000)


def test_far_outside_coordinates_are_an_error(aflw2000: Path) -> None:
    p = _pts(8)
    p[0, 5] = 10 * W
    _mat(aflw2000 / "image00008.mat", pt3d_68=p)
    with pytest.raises(DataError, match="image00008.mat: keypoint 5 .* far outside"):
        open(aflw2000, size=8)


@pytest.fixture
def pts68(tmp_path: Path) -> Path:
    """A 3DDFA-style folder: the (N, 3, 68) array, the yaw array, and a samples/ sub-folder."""
    root = tmp_path / "aflw2000_3d"
    root.mkdir()
    np.save(root / "AFLW2000-3D.pts68.npy", np.stack([_pts(s) for s in range(3)]))
    np.save(root / "AFLW2000-3D.pose.npy", np.array([5.0, 45.0, 80.0], dtype=np.float32))
    return root


def test_pts68_npy_gives_keypoint_only_samples(pts68: Path) -> None:
    assert detect(pts68) and detect(pts68 / "AFLW2000-3D.pts68.npy")
    ds = open(pts68, size=45)
    assert isinstance(ds, KeypointArray) and len(ds) == 3
    s = ds[1]
    p = torch.from_numpy(_pts(1)).T.double()
    torch.testing.assert_close(
        s.kp3d, (torch.stack([p[:, 0], p[:, 1], -p[:, 2]], 1) * 45 / 450).float()
    )
    torch.testing.assert_close(s.kp2d, s.kp3d[:, :2])
    assert s.image is None and s.vis.all() and s.name == "AFLW2000-3D.pts68.npy[1]"
    np.testing.assert_allclose(ds.yaw, [5.0, 45.0, 80.0])
    assert collate([ds[0], ds[2]]).kp3d.shape == (2, 68, 3)
    assert open(pts68)[1].kp3d[0, 0] == pytest.approx(float(p[0, 0]), rel=1e-6)


def test_pts68_rows_are_named_by_the_images_beside_it(pts68: Path, image_writer) -> None:  # type: ignore[no-untyped-def]
    for name in ("image00009.jpg", "image00002.jpg", "image00004.jpg"):
        image_writer(pts68 / name, 8, 8)
    assert open(pts68).names == ["image00002.jpg", "image00004.jpg", "image00009.jpg"]


def test_pts68_bad_shape(pts68: Path) -> None:
    np.save(pts68 / "AFLW2000-3D.pts68.npy", np.zeros((3, 68, 3)))
    with pytest.raises(DataError, match=r"pts68.npy: shape \(3, 68, 3\), expected \(N, 3, 68\)"):
        open(pts68)


def test_info_on_the_npy(pts68: Path) -> None:
    r = info(pts68)
    assert (r.format, r.samples, r.images, r.labelled, r.keypoints) == ("aflw", 3, 0, 3, 68)
    assert r.problems == []


def test_images_source_with_the_npy_beside(pts68: Path, aflw2000: Path) -> None:
    ds = open(aflw2000, source="images")
    assert len(ds) == 2
    with pytest.raises(DataError, match="no image with a .mat file"):
        open(pts68, source="images")


SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "aflw2000_3d"


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real AFLW2000-3D samples not found at {SHARED}")
def test_real_samples_nose_is_nearer_the_camera_than_the_jaw_ends() -> None:
    ds = open(SHARED / "samples")
    frontal = int(np.argmin(np.abs(ds.extra("pose")[:, 1])))
    z = ds[frontal].kp3d[:, 2]
    assert z[30] < z[0] and z[30] < z[16]  # kp3d z points away from the camera
    rows = open(SHARED)
    i = ds.names.index("image00050.jpg")
    torch.testing.assert_close(rows[28].kp3d, ds[i].kp3d)  # the npy rows are the .mat fits
