import logging
from pathlib import Path

import pytest
import torch

from kp3d.data.adapters import detect_format, open_dataset
from kp3d.data.adapters.image_folder import detect, open
from kp3d.data.schema import collate
from kp3d.errors import ConfigError, DataError


@pytest.fixture
def folder(tmp_path: Path, image_writer) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "birds"
    image_writer(root / "train" / "a.jpg", 30, 20, (255, 0, 0))
    image_writer(root / "train" / "deep" / "b.png", 8, 8, (0, 255, 0))
    image_writer(root / "val" / "c.bmp", 64, 4, (0, 0, 255), fmt="BMP")
    image_writer(root / ".kp3d-cache" / "ignored.png", 4, 4)
    (root / "README.txt").write_text("not an image")
    return root


def test_detect(folder: Path, tmp_path: Path) -> None:
    assert detect(folder) and detect_format(folder) == "image_folder"
    (tmp_path / "empty").mkdir()
    assert not detect(tmp_path / "empty") and not detect(folder / "README.txt")


def test_recursive_unlabelled_samples(folder: Path) -> None:
    ds = open(folder, size=16)
    assert ds.names == ["train/a.jpg", "train/deep/b.png", "val/c.bmp"]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch.image.shape == (3, 3, 16, 16) and batch.present() == ("image",)
    torch.testing.assert_close(batch.image[:, :, 8, 8], torch.eye(3), atol=0.02, rtol=0)


def test_without_size_images_keep_their_resolution(folder: Path) -> None:
    ds = open(folder, cache=False)
    assert ds[0].image.shape == (3, 20, 30) and ds[2].image.shape == (3, 4, 64)


def test_split_is_a_sub_folder(folder: Path) -> None:
    assert open(folder, split="val").names == ["c.bmp"]
    with pytest.raises(ConfigError, match="no sub-folder 'test'.*sub-folders: train, val"):
        open(folder, split="test")


def test_cache_is_built_once_inside_the_dataset(folder: Path) -> None:
    ds = open(folder, size=8)
    assert ds.store is not None and ds.store.index_path.parent == folder / ".kp3d-cache"
    assert open(folder, size=8).store.index_path == ds.store.index_path


def test_empty_folder_is_an_error_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        open(tmp_path / "empty")


def test_unreadable_files_are_skipped_with_one_line_each(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (folder / "train" / "zero.jpg").write_bytes(b"")
    (folder / "train" / "text.jpg").write_text("hello")
    with caplog.at_level(logging.WARNING, logger="kp3d.data"):
        ds = open(folder, size=8)
    assert ds.names == ["train/a.jpg", "train/deep/b.png", "val/c.bmp"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert (
        len(lines) == 3
        and "text.jpg: not an image" in lines[0]
        and "zero.jpg: empty file" in lines[1]
    )
    assert lines[2] == "skipped 2 of 5 images (unreadable; see above)"
    with pytest.raises(DataError, match="2 of 5 images unreadable .strict mode."):
        open(folder, size=8, strict=True)


def test_uncached_skips_use_headers(folder: Path) -> None:
    (folder / "train" / "zero.jpg").write_bytes(b"")
    assert len(open(folder, size=8, cache=False)) == 3


def test_only_unreadable_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("nope")
    with pytest.raises(DataError, match="none of the 1 images is readable: .*x.png: not an image"):
        open(tmp_path / "bad", size=8)


def test_open_dataset_missing_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope: no such file or folder"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        open_dataset(tmp_path / "nope")


def test_warnings_for_small_and_wide_images(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kp3d.data"):
        open(folder, size=16)
    assert "2 of 3 images are smaller than 16 px" in caplog.text
    assert "1 of 3 images have an aspect ratio above 3:1" in caplog.text
