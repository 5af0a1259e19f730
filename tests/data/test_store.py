import json
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kp3d.data.store as store_module
from kp3d.data.images import decode_image
from kp3d.data.store import ImageStore, default_cache_dir
from kp3d.errors import DataError


def _write(path: Path, w: int, h: int, seed: int) -> Path:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [_write(tmp_path / "data" / f"{i}.png", 10 + 3 * i, 12, seed=i) for i in range(4)]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every file the store decodes."""
    seen: list[str] = []

    def counting(path, **kw):  # type: ignore[no-untyped-def]
        seen.append(Path(path).name)
        return decode_image(path, **kw)

    monkeypatch.setattr(store_module, "decode_image", counting)
    return seen


def _bump(path: Path, seed: int) -> None:
    st = path.stat()
    _write(path, 9, 9, seed)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _open(images: list[Path], cache: Path, **kw) -> ImageStore:  # type: ignore[no-untyped-def]
    return ImageStore.open(
        images, 8, root=images[0].parent, cache_dir=cache, tag="t", workers=0, **kw
    )


def test_rows_equal_direct_decoding(images: list[Path], tmp_path: Path) -> None:
    s = _open(images, tmp_path / "c")
    assert len(s) == 4 and s.pixels.shape == (4, 8, 8, 3) and s.pixels.dtype == np.uint8
    for i, p in enumerate(images):
        np.testing.assert_array_equal(s.pixels[i], decode_image(p, size=8).pixels)
        torch.testing.assert_close(
            s.image(i), torch.from_numpy(s.pixels[i].copy()).permute(2, 0, 1).float() / 255
        )
    np.testing.assert_array_equal(s.original, [[10, 12], [13, 12], [16, 12], [19, 12]])
    torch.testing.assert_close(s.images([2, 0]), torch.stack([s.image(2), s.image(0)]))
    assert s.errors == {}


def test_unreadable_files_are_recorded_not_raised(images: list[Path], tmp_path: Path) -> None:
    images[1].write_bytes(b"")
    s = _open(images, tmp_path / "c")
    assert list(s.errors) == [1] and "1.png: empty file" in s.errors[1]
    assert s.pixels[1].max() == 0 and tuple(s.original[1]) == (0, 0)


def test_reopening_decodes_nothing(images: list[Path], tmp_path: Path, decodes: list[str]) -> None:
    _open(images, tmp_path / "c")
    assert len(decodes) == 4
    s = _open(images, tmp_path / "c")
    assert len(decodes) == 4 and len(s) == 4


def test_a_modified_file_is_decoded_again_alone(
    images: list[Path], tmp_path: Path, decodes: list[str]
) -> None:
    _open(images, tmp_path / "c")
    decodes.clear()
    _bump(images[2], seed=99)
    s = _open(images, tmp_path / "c")
    assert decodes == ["2.png"]
    np.testing.assert_array_equal(s.pixels[2], decode_image(images[2], size=8).pixels)
    np.testing.assert_array_equal(s.pixels[0], decode_image(images[0], size=8).pixels)
    assert tuple(s.original[2]) == (9, 9)


def test_added_and_removed_files(images: list[Path], tmp_path: Path, decodes: list[str]) -> None:
    _open(images, tmp_path / "c")
    decodes.clear()
    extra = _write(images[0].parent / "new.png", 5, 5, seed=7)
    s = _open([*images, extra], tmp_path / "c")
    assert decodes == ["new.png"] and len(s) == 5
    decodes.clear()
    s = _open([images[3], images[1]], tmp_path / "c")
    assert decodes == [] and len(s) == 2
    np.testing.assert_array_equal(s.pixels[0], decode_image(images[3], size=8).pixels)
    # Only the current array is kept on disk.
    assert len(list((tmp_path / "c").glob("*.npy"))) == 1


def test_a_running_reader_survives_a_rebuild(images: list[Path], tmp_path: Path) -> None:
    old = _open(images, tmp_path / "c")
    before = np.array(old.pixels[2])
    _bump(images[2], seed=5)
    new = _open(images, tmp_path / "c")
    assert not np.array_equal(new.pixels[2], before)
    np.testing.assert_array_equal(old.pixels[2], before)  # still mapped after the unlink


def test_an_interrupted_build_leaves_the_previous_store(
    images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _open(images, tmp_path / "c")
    index_before = good.index_path.read_text()
    _bump(images[0], seed=3)
    _bump(images[1], seed=4)
    calls = []

    def dying(path, **kw):  # type: ignore[no-untyped-def]
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return decode_image(path, **kw)

    monkeypatch.setattr(store_module, "decode_image", dying)
    with pytest.raises(KeyboardInterrupt):
        _open(images, tmp_path / "c")
    assert good.index_path.read_text() == index_before
    meta = json.loads(index_before)
    assert (tmp_path / "c" / meta["data"]).is_file()
    assert (
        not list((tmp_path / "c").glob(".*.tmp")) and len(list((tmp_path / "c").glob("*.npy"))) == 1
    )


def test_changing_size_or_background_is_a_different_store(
    images: list[Path], tmp_path: Path
) -> None:
    a = _open(images, tmp_path / "c")
    b = ImageStore.open(
        images, 6, root=images[0].parent, cache_dir=tmp_path / "c", tag="t", workers=0
    )
    c = _open(images, tmp_path / "c", background="black")
    assert len({a.index_path, b.index_path, c.index_path}) == 3 and b.pixels.shape[1] == 6


def test_other_selections_of_the_dataset_reuse_decoded_rows(
    images: list[Path], tmp_path: Path, decodes: list[str]
) -> None:
    _open(images, tmp_path / "c")
    sub = ImageStore.open(images[2:], 8, root=images[0].parent, cache_dir=tmp_path / "c", tag="u")
    assert len(decodes) == 4 and len(sub) == 2
    np.testing.assert_array_equal(sub.pixels[0], decode_image(images[2], size=8).pixels)
    # A different dataset folder with the same name is not a sibling.
    other = [_write(tmp_path / "x" / "data" / p.name, 10, 12, seed=50) for p in images[:1]]
    ImageStore.open(other, 8, root=other[0].parent, cache_dir=tmp_path / "c", tag="t")
    assert len(decodes) == 5


def test_rebuild_flag_decodes_again(images: list[Path], tmp_path: Path, decodes: list[str]) -> None:
    _open(images, tmp_path / "c")
    _open(images, tmp_path / "c", rebuild=True)
    assert len(decodes) == 8


def test_pickling_does_not_copy_the_pixels(images: list[Path], tmp_path: Path) -> None:
    s = _open(images, tmp_path / "c")
    _ = s.pixels  # mapped
    blob = pickle.dumps(s)
    assert len(blob) < s.pixels.nbytes + 2000 and b"\x00" * 256 not in blob
    t = pickle.loads(blob)
    torch.testing.assert_close(t.image(3), s.image(3))


def test_concurrent_builders_share_one_build(
    images: list[Path], tmp_path: Path, decodes: list[str]
) -> None:
    results: list[ImageStore] = []
    threads = [
        threading.Thread(target=lambda: results.append(_open(images, tmp_path / "c")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(decodes) == 4
    for r in results:
        np.testing.assert_array_equal(r.pixels, results[0].pixels)


def test_worker_processes_give_the_same_rows(images: list[Path], tmp_path: Path) -> None:
    serial = _open(images, tmp_path / "a")
    parallel = ImageStore.open(
        images, 8, root=images[0].parent, cache_dir=tmp_path / "b", tag="t", workers=2
    )
    np.testing.assert_array_equal(serial.pixels, parallel.pixels)


def test_boxes_are_part_of_the_key(images: list[Path], tmp_path: Path, decodes: list[str]) -> None:
    boxes = [(0.0, 0.0, 5.0, 5.0)] * 4
    s = _open(images, tmp_path / "c", boxes=boxes)
    np.testing.assert_array_equal(s.pixels[0], decode_image(images[0], size=8, box=boxes[0]).pixels)
    _open(images, tmp_path / "c", boxes=[(1.0, 0.0, 5.0, 5.0)] + boxes[1:])
    assert len(decodes) == 5


def test_empty_list_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images"):
        ImageStore.open([], 8, root=tmp_path, cache_dir=tmp_path / "c")


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KP3D_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "ds").mkdir()
    assert default_cache_dir(tmp_path / "ds") == tmp_path / "ds" / ".kp3d-cache"
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / ".kp3d-cache").write_text("not a folder: the dataset cannot hold the cache")
    assert default_cache_dir(tmp_path / "ro") == tmp_path / "xdg" / "kp3d"
    monkeypatch.setenv("KP3D_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(tmp_path / "ds") == tmp_path / "env"


def test_uncreatable_cache_folder_is_a_data_error(images: list[Path], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot create the image cache"):
        _open(images, tmp_path / "file" / "sub")
