import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kp3d.data.images import (
    check_images,
    find_images,
    image_size,
    load_image,
    report_sizes,
    report_skipped,
    resize_keypoints,
)
from kp3d.errors import DataError


def _rgb(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written byte by byte (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_rgb_png_is_exact_and_reports_its_size(tmp_path: Path) -> None:
    a = _rgb(7, 5)
    Image.fromarray(a).save(tmp_path / "a.png")
    img, original = load_image(tmp_path / "a.png", size=None)
    assert original == (7, 5) and img.shape == (3, 5, 7) and img.dtype == torch.float32
    torch.testing.assert_close(img, torch.from_numpy(a).permute(2, 0, 1).float() / 255)


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    g = _rgb(6, 4)[..., 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    img, _ = load_image(tmp_path / "g.png", size=None)
    for c in range(3):
        torch.testing.assert_close(img[c], torch.from_numpy(g).float() / 255)


@pytest.mark.parametrize("background, expected", [("white", 1.0), ("black", 0.0)])
def test_rgba_is_composited_on_the_background(
    tmp_path: Path, background: str, expected: float
) -> None:
    a = np.zeros((2, 2, 4), dtype=np.uint8)
    a[0, 0] = (0, 0, 0, 0)  # fully transparent -> background
    a[0, 1] = (255, 0, 0, 255)  # opaque red
    a[1, 0] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    img, _ = load_image(tmp_path / "a.png", size=None, background=background)  # type: ignore[arg-type]
    torch.testing.assert_close(img[:, 0, 0], torch.full((3,), expected))
    torch.testing.assert_close(img[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(
        img[:, 1, 0], torch.full((3,), expected * 127 / 255), atol=1 / 255, rtol=0
    )


def test_palette_with_transparency(tmp_path: Path) -> None:
    p = Image.new("P", (3, 1))
    p.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    p.putdata([0, 1, 1])
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    img, _ = load_image(tmp_path / "p.png", size=None)
    torch.testing.assert_close(img[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(img[:, 0, 1], torch.tensor([200, 100, 0]) / 255.0)


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    v = np.array([[0, 257 * 10, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")
    img, _ = load_image(tmp_path / "g16.png", size=None)
    torch.testing.assert_close(
        img[0, 0], torch.from_numpy(v[0] / 65535.0).float(), atol=0.5 / 255, rtol=0
    )


def test_16bit_rgb_png_within_one_level(tmp_path: Path) -> None:
    v = np.random.default_rng(1).integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    (tmp_path / "c16.png").write_bytes(_png16(v))
    img, original = load_image(tmp_path / "c16.png", size=None)
    assert original == (5, 4)
    ref = torch.from_numpy(v / 65535.0).permute(2, 0, 1).float()
    assert (img - ref).abs().max() <= 1 / 255 + 1e-6


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(tmp_path / "m.jpg", quality=95)  # magenta
    img, _ = load_image(tmp_path / "m.jpg", size=None)
    torch.testing.assert_close(
        img.mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 1.0]), atol=0.05, rtol=0
    )


def _exif_rotated(path: Path) -> None:
    """A 40x20 stored image, red block top-left, EXIF orientation 6 (shown rotated 90° CW)."""
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:5, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, quality=95, exif=exif)


@pytest.mark.parametrize("size", [None, 8])
def test_exif_orientation_is_applied(tmp_path: Path, size: int | None) -> None:
    _exif_rotated(tmp_path / "r.jpg")
    img, original = load_image(tmp_path / "r.jpg", size=size)
    assert original == (20, 40) == image_size(tmp_path / "r.jpg")
    if size is None:
        assert img.shape == (3, 40, 20)
        # Rotating 90° clockwise moves the top-left block to the top right: x 15..20, y 0..10.
        assert img[0, 0:10, 15:20].mean() > 0.9 and img[1, 0:10, 15:20].mean() < 0.1
        assert img[0, 0:10, 0:5].mean() < 0.1


def test_resize_maps_coordinates_by_size_over_w_and_h(tmp_path: Path) -> None:
    a = np.zeros((32, 64, 3), dtype=np.uint8)
    a[8:12, 40:44] = 255  # centre (u, v) = (42, 10) in continuous pixel coordinates
    Image.fromarray(a).save(tmp_path / "b.png")
    img, original = load_image(tmp_path / "b.png", size=16)
    assert img.shape == (3, 16, 16) and original == (64, 32)
    w = img[0].double()
    centres = torch.arange(16, dtype=torch.float64) + 0.5
    centroid = torch.stack([(w.sum(0) * centres).sum(), (w.sum(1) * centres).sum()]) / w.sum()
    expected = resize_keypoints(torch.tensor([42.0, 10.0], dtype=torch.float64), original, 16)
    torch.testing.assert_close(
        expected, torch.tensor([42 * 16 / 64, 10 * 16 / 32], dtype=torch.float64)
    )
    torch.testing.assert_close(centroid, expected, atol=0.05, rtol=0)


def test_box_crop_and_its_coordinates(tmp_path: Path) -> None:
    a = np.zeros((40, 40, 3), dtype=np.uint8)
    a[10:14, 20:24] = 255  # centre (22, 12)
    Image.fromarray(a).save(tmp_path / "b.png")
    box = (10.0, 0.0, 30.0, 20.0)
    img, original = load_image(tmp_path / "b.png", size=10, box=box)
    assert img.shape == (3, 10, 10) and original == (40, 40)
    w = img[0].double()
    centres = torch.arange(10, dtype=torch.float64) + 0.5
    centroid = torch.stack([(w.sum(0) * centres).sum(), (w.sum(1) * centres).sum()]) / w.sum()
    expected = resize_keypoints(
        torch.tensor([22.0, 12.0], dtype=torch.float64), original, 10, box=box
    )
    torch.testing.assert_close(expected, torch.tensor([6.0, 6.0], dtype=torch.float64))
    torch.testing.assert_close(centroid, expected, atol=0.05, rtol=0)


def test_box_outside_the_image_is_filled_with_background(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(tmp_path / "k.png")
    img, _ = load_image(tmp_path / "k.png", size=None, box=(-10.0, 0.0, 10.0, 10.0))
    assert img.shape == (3, 10, 20)
    assert img[:, :, :9].min() == 1.0 and img[:, :, 11:].max() == 0.0


def test_empty_box_is_an_error(tmp_path: Path) -> None:
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="a.png.*empty crop box"):
        load_image(tmp_path / "a.png", size=4, box=(2.0, 2.0, 2.0, 3.0))


def test_small_images_are_upsampled_and_wide_ones_squashed(tmp_path: Path) -> None:
    Image.fromarray(_rgb(5, 3)).save(tmp_path / "s.png")
    Image.fromarray(_rgb(200, 10)).save(tmp_path / "w.png")
    assert load_image(tmp_path / "s.png", size=32)[0].shape == (3, 32, 32)
    assert load_image(tmp_path / "w.png", size=32)[0].shape == (3, 32, 32)


def test_report_sizes_logs_each_policy_once(caplog: pytest.LogCaptureFixture) -> None:
    originals = np.array([[5, 3], [6, 6], [200, 10], [64, 64]])
    with caplog.at_level(logging.WARNING, logger="kp3d.data"):
        report_sizes(originals, ["s", "t", "w", "ok"], 32)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert "3 of 4 images are smaller than 32 px" in msgs[0] and "s, 5x3" in msgs[0]
    assert "1 of 4 images have an aspect ratio above" in msgs[1] and "w, 200x10" in msgs[1]


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "z.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"z\.jpg: empty file"):
        load_image(tmp_path / "z.jpg", size=8)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "t.jpg").write_text("hello, I am not a picture\n")
    with pytest.raises(DataError, match=r"t\.jpg: not an image"):
        load_image(tmp_path / "t.jpg", size=8)


def test_truncated_jpeg_is_found_by_a_deep_check_only(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, format="JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: corrupt or truncated"):
        load_image(tmp_path / "cut.jpg", size=16)
    assert check_images([tmp_path / "cut.jpg"], deep=False) == []
    assert len(check_images([tmp_path / "cut.jpg"], deep=True)) == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.png: cannot read"):
        load_image(tmp_path / "nope.png", size=None)


def test_find_images_recursive_sorted_skips_hidden(tmp_path: Path) -> None:
    for rel in ["b/x.PNG", "a.jpg", "b/c/y.jpeg", ".kp3d-cache/z.png", ".hidden.jpg", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.jpg", "b/c/y.jpeg", "b/x.PNG"]
    assert [p.name for p in find_images(tmp_path, recursive=False)] == ["a.jpg"]


def test_find_images_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        find_images(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        find_images(tmp_path / "notes.txt")


def test_report_skipped_policy(caplog: pytest.LogCaptureFixture) -> None:
    problems = [("a.jpg", "a.jpg: empty file (0 bytes)"), ("b.jpg", "b.jpg: not an image")]
    with caplog.at_level(logging.WARNING, logger="kp3d.data"):
        report_skipped(problems, 5, strict=False)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "skipped: a.jpg: empty file (0 bytes)",
        "skipped: b.jpg: not an image",
        "skipped 2 of 5 images (unreadable; see above)",
    ]
    with pytest.raises(DataError, match="2 of 5 images unreadable .strict mode.: a.jpg"):
        report_skipped(problems, 5, strict=True)
    with pytest.raises(DataError, match="none of the 2 images is readable"):
        report_skipped(problems, 2, strict=False)
    report_skipped([], 0, strict=True)


_FORMATS = {
    "PNG": ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "P", "RGB", "RGBA", "CMYK", "F", "I;16", "I"],
    "WEBP": ["RGB", "RGBA"],
    "GIF": ["L", "P"],
}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(sorted(_FORMATS)),
    mode_i=st.integers(0, 9),
    w=st.integers(1, 40),
    h=st.integers(1, 40),
    size=st.sampled_from([None, 1, 7, 16]),
    seed=st.integers(0, 2**16),
)
def test_any_mode_and_size_loads_to_rgb_in_unit_range(
    tmp_path: Path, fmt: str, mode_i: int, w: int, h: int, size: int | None, seed: int
) -> None:
    mode = _FORMATS[fmt][mode_i % len(_FORMATS[fmt])]
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I"):
        img = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16)).convert(mode)
    elif mode == "F":
        img = Image.fromarray(rng.random((h, w)).astype(np.float32), mode="F")
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), mode="RGBA").convert(
            mode
        )
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, format=fmt)
    out, original = load_image(path, size=size)
    assert original == (w, h)
    assert out.shape == ((3, size, size) if size else (3, h, w))
    assert out.dtype == torch.float32 and 0.0 <= out.min() and out.max() <= 1.0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.sampled_from(
        [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00"]
    ),
    junk=st.binary(max_size=300),
    cut=st.floats(0.0, 1.0),
    kind=st.sampled_from(["junk", "truncated", "flipped"]),
)
def test_bad_bytes_raise_data_error_naming_the_file_or_load(
    tmp_path: Path, prefix: bytes, junk: bytes, cut: float, kind: str
) -> None:
    if kind == "junk":
        data = prefix + junk
    else:
        buf = io.BytesIO()
        Image.fromarray(_rgb(24, 16)).save(
            buf, format="JPEG" if prefix != b"\x89PNG\r\n\x1a\n" else "PNG"
        )
        data = bytearray(buf.getvalue())
        if kind == "truncated":
            data = data[: int(len(data) * cut)]
        else:
            for i, b in enumerate(junk[:20]):
                data[int(cut * (len(data) - 1) + i) % len(data)] ^= b
        data = bytes(data)
    path = tmp_path / "fuzz.jpg"
    path.write_bytes(data)
    try:
        out, _ = load_image(path, size=8)
    except DataError as e:
        assert "fuzz.jpg" in str(e)
    else:
        assert out.shape == (3, 8, 8) and 0.0 <= out.min() and out.max() <= 1.0
