"""Video in and out with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kp3d.data.video import VideoWriter, is_video, probe, read_frames
from kp3d.errors import DataError

pytest.importorskip("av")


def _moving_square(t: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    w, h = size
    frame = np.full((h, w, 3), 30, np.uint8)
    frame[10:20, 2 + 3 * t : 12 + 3 * t] = (240, 200, 40)
    return frame


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_frames_written_come_back_in_order_and_resized(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"clip{suffix}"
    with VideoWriter(path, fps=10, size=(40, 30)) as out:
        for t in range(6):
            out.write(_moving_square(t))
    assert is_video(path) and not list(tmp_path.glob("*.tmp*"))
    info = probe(path)
    assert info.size == (40, 30) and info.fps == pytest.approx(10)
    frames = list(read_frames(path, size=16))
    assert [f.index for f in frames] == list(range(6))
    assert frames[0].pixels.shape == (30, 40, 3) and frames[0].image.shape == (3, 16, 16)
    for t, f in enumerate(frames):
        # The bright square moves right by 3 px a frame (lossy codec: compare its centroid).
        bright = f.pixels[..., 0] > 150
        x = np.nonzero(bright)[1].mean()
        assert x == pytest.approx(6.5 + 3 * t, abs=1.0)
    assert frames[1].time_s == pytest.approx(0.1, abs=1e-3)


def test_odd_frame_sizes_are_padded(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=5, size=(41, 31)) as out:
        out.write(_moving_square(0, (41, 31)))
    assert probe(path).size == (42, 32)


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), VideoWriter(path, fps=5, size=(40, 30)) as out:
        out.write(_moving_square(0))
        raise RuntimeError("stop")
    assert not path.exists()


def test_a_file_that_is_not_a_video_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"no video here")
    with pytest.raises(DataError, match="bad.mp4"):
        probe(bad)
    with pytest.raises(DataError, match="bad.mp4"):
        list(read_frames(bad, size=8))


def test_only_image_methods_read_videos(tmp_path: Path) -> None:
    from kp3d.data.inputs import IMAGES, KEYPOINTS, VIEWS
    from kp3d.errors import UserError

    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=5, size=(16, 16)) as out:
        out.write(np.zeros((16, 16, 3), np.uint8))
    assert next(iter(IMAGES.video_frames(path, size=8))).image.shape == (3, 8, 8)
    for kind, reads in ((KEYPOINTS, "keypoints"), (VIEWS, "calibrated views")):
        with pytest.raises(UserError, match=f"reads {reads}"):
            kind.video_frames(path, size=8)
