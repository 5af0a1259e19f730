import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kp3d.data.adapters import detect_format, open_dataset
from kp3d.data.adapters import synth as adapter
from kp3d.data.schema import collate
from kp3d.data.synth import generate
from kp3d.errors import ConfigError, DataError
from kp3d.geometry.cameras import project_pinhole


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adapter.write(
        tmp_path_factory.mktemp("sets") / "creature", "creature", 5, size=32, seed=4
    )


def test_round_trip_equals_the_in_memory_samples(written: Path) -> None:
    assert detect_format(written) == "synth"
    ds = open_dataset(written)
    ref = generate("creature", 5, size=32, seed=4)
    assert len(ds) == 5
    for x, y in zip(ds, ref):
        assert x.present() == y.present()
        assert (x.image - y.image).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
        assert torch.equal(x.mask, y.mask)
        assert (x.depth - y.depth).abs().max() <= 0.5e-4 + 1e-6  # 0.1 mm steps
        for f in ("kp2d", "vis", "kp3d", "intrinsics", "extrinsics", "instance", "category"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f
        assert x.name == y.name
    assert collate([ds[0], ds[1]]).image.shape == (2, 3, 32, 32)


def test_layout_and_meta(written: Path) -> None:
    meta = json.loads((written / "meta.json").read_text())
    assert meta["format"] == "kp3d-synth" and meta["category"] == "creature"
    assert meta["n"] == 5 and meta["size"] == 32 and meta["seed"] == 4 and meta["views"] == 1
    assert len(meta["keypoint_names"]) == 16 and len(meta["skeleton"]) == 15
    # The defaults, as used.
    assert meta["options"] == {
        "sfm_dir": None,
        "articulation": 0.3,
        "azimuth": [0.0, 360.0],
        "appearance": None,  # face only
    }
    assert sorted(p.name for p in (written / "images").iterdir()) == [
        f"{i:06d}.png" for i in range(5)
    ]
    with Image.open(written / "depth" / "000000.png") as img:
        assert img.mode.startswith("I") and img.size == (32, 32)
    assert not list(written.parent.glob(".*tmp*"))


def test_resizing_scales_pixels_and_intrinsics(written: Path) -> None:
    full, half = open_dataset(written)[2], open_dataset(written, size=16)[2]
    assert half.image.shape == (3, 16, 16) and half.mask.shape == (1, 16, 16)
    assert half.depth.shape == (1, 16, 16)
    assert torch.allclose(half.kp2d, full.kp2d / 2)
    assert torch.allclose(project_pinhole(half.kp3d, half.intrinsics), half.kp2d, atol=1e-3)
    assert torch.equal(half.kp3d, full.kp3d) and torch.equal(half.extrinsics, full.extrinsics)
    assert 0 < half.mask.mean() and half.mask.max() <= 1


def test_multi_view_sets_stack_or_flatten(tmp_path: Path) -> None:
    out = adapter.write(tmp_path / "mv", "quadruped", 2, size=32, seed=0, pairs=True)
    arrays = np.load(out / "annotations.npz")
    E = arrays["extrinsics"]
    np.testing.assert_allclose(
        arrays["relative_rotation"], E[:, 1, :, :3] @ E[:, 0, :, :3].transpose(0, 2, 1), atol=1e-5
    )
    stacked = open_dataset(out)
    assert len(stacked) == 2
    x = stacked[1]
    assert x.image.shape == (2, 3, 32, 32) and x.kp2d.shape == (2, 18, 2)
    assert torch.equal(x.view, torch.arange(2)) and x.instance.item() == 1
    flat = open_dataset(out, views="flat")
    assert len(flat) == 4
    y = flat[3]
    assert y.image.shape == (3, 32, 32) and y.view.item() == 1 and y.instance.item() == 1
    assert torch.equal(y.image, x.image[1]) and torch.equal(y.kp3d, x.kp3d[1])
    assert y.name == "000001_v1"


def test_missing_files_are_skipped_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = adapter.write(tmp_path / "s", "creature", 3, size=32)
    (out / "images" / "000001.png").unlink()
    ds = open_dataset(out)
    assert len(ds) == 2 and [x.instance.item() for x in ds] == [0, 2]
    assert "000001.png" in caplog.text
    with pytest.raises(DataError, match="000001.png"):
        open_dataset(out, strict=True)


def test_bad_sets_and_options(tmp_path: Path, written: Path) -> None:
    with pytest.raises(ConfigError, match="no splits"):
        open_dataset(written, split="test")
    with pytest.raises(ConfigError, match="stack"):
        open_dataset(written, views="nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text('{"format": "kp3d-synth", "n": 2}')
    with pytest.raises(DataError, match="missing"):
        adapter.open(bad)
    (bad / "meta.json").write_text("{nope")
    assert not adapter.detect(bad)
    with pytest.raises(DataError, match="JSON"):
        adapter.open(bad)
    assert not adapter.detect(tmp_path)


def test_writing_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = adapter.write(tmp_path / "s", "creature", 2, size=32)
    with pytest.raises(ConfigError, match="already exists"):
        adapter.write(out, "creature", 2, size=32)
    adapter.write(out, "creature", 3, size=32, seed=1, overwrite=True)
    assert json.loads((out / "meta.json").read_text())["n"] == 3

    def broken(job, indices):
        raise RuntimeError("disk full")

    monkeypatch.setattr(adapter, "_render_and_save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        adapter.write(tmp_path / "t", "creature", 2, size=32)
    with pytest.raises(RuntimeError, match="disk full"):
        adapter.write(out, "creature", 2, size=32, overwrite=True)
    assert not (tmp_path / "t").exists()
    assert json.loads((out / "meta.json").read_text())["n"] == 3  # the old set is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


@pytest.fixture
def thread_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads stand in for worker processes (the spawn start-up is slow), with chunks of 2, so
    several chunks finish in any order and must be assembled by index."""

    class Pool(ThreadPoolExecutor):
        def __init__(self, workers, mp_context=None, initializer=None):
            super().__init__(workers)

    monkeypatch.setattr(adapter, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr("kp3d.data.synth.CHUNK", 2)


@pytest.mark.usefixtures("thread_workers")
def test_workers_give_the_same_set(tmp_path: Path) -> None:
    one = adapter.write(tmp_path / "one", "creature", 5, size=32, seed=3)
    three = adapter.write(tmp_path / "three", "creature", 5, size=32, seed=3, workers=3)
    a, b = np.load(one / "annotations.npz"), np.load(three / "annotations.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    for i in range(5):
        name = f"{i:06d}.png"
        assert (one / "images" / name).read_bytes() == (three / "images" / name).read_bytes()


@pytest.mark.usefixtures("thread_workers")
def test_articulation_reaches_the_workers_and_meta(tmp_path: Path) -> None:
    out = adapter.write(
        tmp_path / "wild", "quadruped", 4, size=32, seed=2, workers=2, articulation=1.0
    )
    assert json.loads((out / "meta.json").read_text())["options"]["articulation"] == 1.0
    # Each worker's chunk was posed with the option, not with the default.
    kp3d = np.load(out / "annotations.npz")["kp3d"][:, 0]
    wild = np.stack(
        [x.kp3d.numpy() for x in generate("quadruped", 4, size=32, seed=2, articulation=1.0)]
    )
    tame = np.stack([x.kp3d.numpy() for x in generate("quadruped", 4, size=32, seed=2)])
    np.testing.assert_array_equal(kp3d, wild)
    assert not np.allclose(kp3d, tame)
    with pytest.raises(ConfigError, match="face has no joints"):
        adapter.write(tmp_path / "f", "face", 1, size=32, sfm_dir=tmp_path, articulation=0.5)
    with pytest.raises(ConfigError, match="got 2.0"):
        adapter.write(tmp_path / "g", "creature", 1, size=32, articulation=2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wild"]  # nothing half-written


@pytest.mark.usefixtures("thread_workers")
def test_azimuth_reaches_the_workers_and_meta(tmp_path: Path) -> None:
    out = adapter.write(
        tmp_path / "front", "creature", 4, size=32, seed=2, workers=2, azimuth=(-90, 90)
    )
    assert json.loads((out / "meta.json").read_text())["options"]["azimuth"] == [-90.0, 90.0]
    kp3d = np.load(out / "annotations.npz")["kp3d"][:, 0]
    front = np.stack(
        [x.kp3d.numpy() for x in generate("creature", 4, size=32, seed=2, azimuth=(-90, 90))]
    )
    np.testing.assert_array_equal(kp3d, front)
    with pytest.raises(ConfigError, match="face draws its own head rotation"):
        adapter.write(tmp_path / "f", "face", 1, size=32, sfm_dir=tmp_path, azimuth=(0, 90))
    with pytest.raises(ConfigError, match=r"got \(90, 0\)"):
        adapter.write(tmp_path / "g", "creature", 1, size=32, azimuth=(90, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front"]  # nothing half-written


def test_appearance_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="face category only; creature has a single"):
        adapter.write(tmp_path / "c", "creature", 1, size=32, appearance="shifted")
    with pytest.raises(ConfigError, match="head has a single appearance"):
        adapter.write(tmp_path / "h", "head", 1, size=32, appearance="default")
    with pytest.raises(ConfigError, match=r"one of default, shifted .*got 'odd'"):
        adapter.write(tmp_path / "f", "face", 1, size=32, sfm_dir=tmp_path, appearance="odd")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_sets_without_the_articulation_option_still_open(tmp_path: Path, written: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(written, old)
    meta = json.loads((old / "meta.json").read_text())
    meta["options"] = {"sfm_dir": None}  # as written before the option existed
    (old / "meta.json").write_text(json.dumps(meta))
    a, b = open_dataset(old), open_dataset(written)
    assert len(a) == len(b) == 5 and torch.equal(a[3].kp3d, b[3].kp3d)


@pytest.mark.parametrize(
    "a",
    [
        np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3),
        np.arange(35, dtype=np.uint8).reshape(5, 7) * 7,
        (np.arange(35, dtype=np.uint16) * 1871).reshape(5, 7),
    ],
)
def test_png_bytes_read_back_exactly(tmp_path: Path, a: np.ndarray) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(adapter.png_bytes(a))
    with Image.open(path) as img:
        np.testing.assert_array_equal(np.asarray(img), a)


def test_png_bytes_rejects_other_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        adapter.png_bytes(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        adapter.png_bytes(np.zeros((4, 4, 4), np.uint8))
