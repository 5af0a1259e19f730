from pathlib import Path

import numpy as np
import pytest

from kp3d.data.adapters import (
    ADAPTERS,
    PathNotFound,
    check_options,
    detect_format,
    image_folder,
    info,
)
from kp3d.errors import ConfigError, DataError


def test_info_counts_images_and_reports_unreadable_ones(tmp_path: Path, image_writer) -> None:  # type: ignore[no-untyped-def]
    image_writer(tmp_path / "a.png", 4, 4)
    image_writer(tmp_path / "s" / "b.png", 4, 4)
    (tmp_path / "s" / "c.jpg").write_text("text")
    r = info(tmp_path)
    assert (r.format, r.samples, r.images, r.labelled, r.keypoints) == (
        "image_folder",
        3,
        3,
        0,
        None,
    )
    assert r.unreadable == 1 and len(r.problems) == 1 and "c.jpg: not an image" in r.problems[0]
    assert info(tmp_path, check="none").problems == []


def test_info_reports_structural_errors_instead_of_raising(tmp_path: Path, image_writer) -> None:  # type: ignore[no-untyped-def]
    image_writer(tmp_path / "training" / "a.png", 4, 4)
    (tmp_path / "training_landmarks.csv").write_bytes(b"\xff\xfe\x00bad")
    r = info(tmp_path)
    assert r.format == "landmark_csv" and "cannot read as a CSV text file" in r.problems[0]


def test_info_falls_back_to_opening_adapters_without_scan(tmp_path: Path) -> None:
    assert "keypoints_npz" in ADAPTERS  # a built-in adapter: its absence is a failure
    np.savez(tmp_path / "k.npz", kp2d=np.zeros((5, 4, 2), dtype=np.float32))
    r = info(tmp_path / "k.npz")
    assert (r.format, r.samples, r.images, r.labelled, r.keypoints) == ("keypoints_npz", 5, 0, 5, 4)


def test_missing_and_unknown_paths(tmp_path: Path) -> None:
    with pytest.raises(PathNotFound, match="no such file or folder"):
        info(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="not recognised"):
        detect_format(tmp_path)


def test_check_options_lists_valid_ones() -> None:
    check_options(image_folder, "open", {"size": 3, "cache": False})
    with pytest.raises(
        ConfigError, match=r"format 'image_folder' has no option 'sise'; valid options: size, split"
    ):
        check_options(image_folder, "open", {"sise": 3})


def test_check_options_lists_the_shared_image_options() -> None:
    # Image adapters take cache, cache_dir, ... as **loading: Unpack[ImageOptions].
    with pytest.raises(
        ConfigError,
        match=r"valid options: size, split, strict, cache, cache_dir, workers, background$",
    ):
        check_options(image_folder, "open", {"caches": True})
