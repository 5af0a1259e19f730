"""Robust image loading: every file a user can point kp3d at is decoded, converted, or named.

What :func:`load_image` accepts, and how it converts it to RGB in [0, 1]
    ===================  ==================================================================
    source               conversion
    ===================  ==================================================================
    RGB, YCbCr JPEG      as is
    grayscale (L, 1)     replicated to three channels
    16-bit (I;16, I)     value / 65535 (16-bit *RGB* PNGs are read by Pillow as 8-bit RGB,
                         i.e. the high byte: off from value / 257 by at most 1/255)
    float (F)            taken as [0, 1] and clipped
    RGBA, LA, palette    alpha-composited on a white background (``background="black"``
    with transparency    for black); palette images are expanded to their colours
    CMYK JPEG            Pillow's CMYK->RGB conversion (Adobe-inverted files included)
    EXIF orientation     applied (:func:`PIL.ImageOps.exif_transpose`); the *original size*
                         reported and every annotation are in the upright (displayed) frame
    ===================  ==================================================================

What it refuses
    Zero-byte files, files that are not images (whatever their extension), truncated or corrupt
    files, and decompression bombs raise :class:`kp3d.errors.DataError` naming the file and the
    problem. Any failure inside the decoder is reported this way, never as a crash.

Resizing
    ``size`` resizes the whole image (or the ``box`` cut from it) to ``size x size``, without
    cropping, with Pillow's antialiased bilinear filter (the same filter when up- or
    down-sampling). Coordinates follow :mod:`kp3d.geometry`: a point ``(u, v)`` in continuous
    pixel coordinates of the original ``W x H`` image maps to ``u' = u * size / W``,
    ``v' = v * size / H`` (:func:`resize_keypoints`; with a box ``(x0, y0, x1, y1)``:
    ``u' = (u - x0) * size / (x1 - x0)``). Large JPEGs are decoded at a reduced DCT scale that
    is still at least ``size`` on both sides, which is invisible after the antialiased resize.

Policies for collections (applied by the datasets, logged to the ``kp3d.data`` logger)
    * Images smaller than ``size`` are upsampled; one warning per dataset gives their count.
    * Extreme aspect ratios (longer side more than :data:`MAX_ASPECT` times the shorter) are
      accepted and squashed like every other image; one warning per dataset gives their count.
    * Unreadable files are skipped with one warning line each and a count at the end;
      ``strict=True`` turns any skip into a :class:`DataError`. An empty folder, or one where no
      image is readable, is a :class:`DataError` before any work starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.errors import DataError

log = logging.getLogger("kp3d.data")

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
)
"""File extensions (lower case) treated as images when scanning folders."""

MAX_ASPECT: float = 3.0
"""Aspect ratio above which a dataset logs that images are strongly squashed by the resize."""

Background = Literal["white", "black"]
Box = tuple[float, float, float, float]
"""A crop ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the upright source image."""

_EXIF_ORIENTATION = 0x0112
_BACKGROUND_RGB = {"white": (255, 255, 255), "black": (0, 0, 0)}


class Decoded(NamedTuple):
    """A decoded image: ``pixels`` (H, W, 3) uint8 RGB and the upright source's ``(W, H)``."""

    pixels: np.ndarray
    original: tuple[int, int]


def _open(path: Path) -> Image.Image:
    try:
        if os.path.getsize(path) == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        return Image.open(path)
    except UnidentifiedImageError as e:
        raise DataError(f"{path}: not an image (or a format Pillow cannot read)") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: refused, too many pixels ({e})") from e
    except Exception as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e


def _upright_size(img: Image.Image) -> tuple[int, int]:
    w, h = img.size
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 -- a malformed EXIF block does not make the image unusable
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(W, H)`` of the upright image at ``path``, reading only its header.

    Raises:
        DataError: zero-byte file, not an image, unreadable header.
    """
    path = Path(path)
    with _open(path) as img:
        return _upright_size(img)


def _to_rgb(img: Image.Image, background: Background) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, _BACKGROUND_RGB[background] + (255,))
        return Image.alpha_composite(canvas, img).convert("RGB")
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img).astype(np.float64)
        a = a / 65535.0 if mode.startswith("I") else a
        a = np.clip(np.rint(np.clip(a, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    return img.convert("RGB")


def decode_image(
    path: str | Path,
    *,
    size: int | None,
    box: Box | None = None,
    background: Background = "white",
) -> Decoded:
    """Decode ``path`` to uint8 RGB, upright, optionally cropped to ``box`` and resized.

    Args:
        path: the image file.
        size: output side length (whole image, or ``box``, resized to ``size x size``); ``None``
            keeps the source resolution.
        box: crop ``(x0, y0, x1, y1)`` in pixels of the upright source, applied before resizing;
            parts outside the image are filled with ``background``.
        background: colour under transparent pixels and outside the image.

    Returns:
        :class:`Decoded` with ``pixels`` (size, size, 3) (or (H, W, 3)) and the upright source's
        ``(W, H)``.

    Raises:
        DataError: the file is empty, not an image, truncated or otherwise undecodable; the
            message names the file and the problem.
    """
    path = Path(path)
    if size is not None and size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if box is not None and not (box[2] > box[0] and box[3] > box[1]):
        raise DataError(f"{path}: empty crop box {tuple(box)}")
    with _open(path) as img:
        try:
            original = _upright_size(img)
            if size is not None and box is None and img.format == "JPEG":
                # DCT-domain downscaling: the decoder does the first 2-8x of the resize for free.
                img.draft(None, (size, size))
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img, background)
            if box is not None and size is not None and _inside(box, rgb.size):
                # One antialiased resampling of the box, rather than crop-then-resize.
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box)
            elif box is not None:
                rgb = _crop(rgb, box, background)
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8)
        except DataError:
            raise
        except Image.DecompressionBombError as e:
            raise DataError(f"{path}: refused, too many pixels ({e})") from e
        except Exception as e:
            raise DataError(f"{path}: corrupt or truncated image ({type(e).__name__}: {e})") from e
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise DataError(f"{path}: unexpected decoded shape {pixels.shape}")
    return Decoded(pixels, original)


def _inside(box: Box, wh: tuple[int, int]) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= wh[0] and box[3] <= wh[1]


def _crop(img: Image.Image, box: Box, background: Background) -> Image.Image:
    x0, y0, x1, y1 = box
    # EXTENT samples the box in continuous coordinates, so a fractional box is exact.
    return img.transform(
        (max(1, round(x1 - x0)), max(1, round(y1 - y0))),
        Image.Transform.EXTENT,
        (x0, y0, x1, y1),
        resample=Image.Resampling.BILINEAR,
        fillcolor=_BACKGROUND_RGB[background],
    )


def to_tensor(pixels: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    # A copy: the pixels are often a read-only memory map, which torch must not alias.
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def load_image(
    path: str | Path,
    *,
    size: int | None,
    box: Box | None = None,
    background: Background = "white",
) -> tuple[Tensor, tuple[int, int]]:
    """Load ``path`` as a (3, H, W) float32 tensor in [0, 1] and the upright source's ``(W, H)``.

    See the module doc for the conversions and the resize; with ``size`` the tensor is
    (3, size, size) and a source point ``(u, v)`` lands at ``(u * size / W, v * size / H)``.

    Raises:
        DataError: unreadable file; the message names the file and the problem.
    """
    decoded = decode_image(path, size=size, box=box, background=background)
    return to_tensor(decoded.pixels), decoded.original


def resize_keypoints(
    kp: Tensor,
    original: tuple[float, float] | Tensor,
    size: int,
    *,
    box: Box | None = None,
) -> Tensor:
    """Map points ``(..., 2)`` from the upright source image to the ``size x size`` image.

    ``u' = (u - x0) * size / (x1 - x0)``, ``v' = (v - y0) * size / (y1 - y0)`` with ``box`` (the
    whole image ``(0, 0, W, H)`` by default), exact in continuous pixel coordinates.
    """
    w, h = (float(original[0]), float(original[1]))
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, w, h)
    scale = kp.new_tensor([size / (x1 - x0), size / (y1 - y0)])
    return (kp - kp.new_tensor([x0, y0])) * scale


def find_images(root: str | Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` by extension, sorted; hidden files and folders are ignored.

    Hidden folders include kp3d's own ``.kp3d-cache``.

    Raises:
        DataError: ``root`` is not a folder, or holds no image file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        found.extend(
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
        )
    if not found:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(
            f"{root}: no image files ({exts}){' in any sub-folder' if recursive else ''}"
        )
    return [Path(f) for f in sorted(found)]


def report_skipped(
    problems: Sequence[tuple[str | Path, str]], total: int, *, strict: bool, what: str = "images"
) -> None:
    """Apply the skip policy to ``problems`` (file, message) found among ``total`` files.

    Logs one warning line per skipped file and one line with the count; with ``strict`` raises
    instead. No readable file at all is always an error.

    Raises:
        DataError: ``strict`` and something was skipped, or every file was skipped.
    """
    if not problems:
        return
    if strict:
        lines = "; ".join(msg for _, msg in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(
            f"{len(problems)} of {total} {what} unreadable (strict mode): {lines}{more}"
        )
    if len(problems) >= total:
        lines = "; ".join(msg for _, msg in problems[:3])
        raise DataError(f"none of the {total} {what} is readable: {lines}")
    for _, msg in problems:
        log.warning("skipped: %s", msg)
    log.warning("skipped %d of %d %s (unreadable; see above)", len(problems), total, what)


def report_sizes(originals: np.ndarray, names: Sequence[str], size: int | None) -> None:
    """Log, once per dataset, how many images are upsampled and how many strongly squashed.

    Args:
        originals: (N, 2) source ``(W, H)`` per image.
        names: the N image names, for an example in the message.
        size: the training size (nothing is logged without one).
    """
    if size is None or len(originals) == 0:
        return
    o = np.asarray(originals, dtype=np.float64)
    small = np.flatnonzero(o.min(axis=1) < size)
    if small.size:
        log.warning(
            "%d of %d images are smaller than %d px on a side and are upsampled (e.g. %s, %dx%d)",
            small.size,
            len(o),
            size,
            names[small[0]],
            *o[small[0]].astype(int),
        )
    aspect = o.max(axis=1) / np.maximum(o.min(axis=1), 1.0)
    wide = np.flatnonzero(aspect > MAX_ASPECT)
    if wide.size:
        log.warning(
            "%d of %d images have an aspect ratio above %g:1 and are squashed to %dx%d "
            "(e.g. %s, %dx%d)",
            wide.size,
            len(o),
            MAX_ASPECT,
            size,
            size,
            names[wide[0]],
            *o[wide[0]].astype(int),
        )


def progress_bar(total: int, description: str) -> Any:
    """A transient rich progress bar on stderr, shown only in a terminal and for 100+ items."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=total < 100 or not console.is_terminal,
    )


def check_images(paths: Sequence[str | Path], *, deep: bool = True) -> list[str]:
    """One message (naming the file) per unreadable image among ``paths``.

    ``deep`` decodes every image (at a small size, which for JPEG still reads every byte), so
    truncated files are found; otherwise only headers are read.
    """
    bad: list[str] = []
    with progress_bar(len(paths), "checking images") as progress:
        task = progress.add_task("checking images", total=len(paths))
        for p in paths:
            try:
                if deep:
                    decode_image(p, size=8)
                else:
                    image_size(p)
            except DataError as e:
                bad.append(str(e))
            progress.advance(task)
    return bad


def images_to_batch(images: Any, *, size: int) -> tuple[Sample, Tensor]:
    """One image or a list of them (paths, PIL images, arrays (H, W, 3), tensors (3, H, W) or
    (B, 3, H, W) in [0, 1]) resized to ``size``: a batch Sample and each original ``(W, H)``."""
    if isinstance(images, Tensor) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        images = [images]
    tensors, sizes = [], []
    for item in images:
        if isinstance(item, (str, Path)):
            tensor, original = load_image(item, size=size)
        elif isinstance(item, Tensor):
            if item.ndim != 3 or item.shape[0] != 3:
                raise ValueError(f"image tensors must be (3, H, W), got {tuple(item.shape)}")
            original = (int(item.shape[-1]), int(item.shape[-2]))
            tensor = torch.nn.functional.interpolate(
                item[None].float(), size=(size, size), mode="bilinear", antialias=True
            )[0]
        else:
            if isinstance(item, Image.Image):
                pil = item.convert("RGB")
            else:
                array = np.asarray(item)
                if array.ndim != 3 or array.shape[-1] != 3:
                    raise ValueError(f"image arrays must be (H, W, 3), got {array.shape}")
                if array.dtype != np.uint8:
                    array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
                pil = Image.fromarray(array)
            original = pil.size
            tensor = to_tensor(np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR)))
        tensors.append(tensor)
        sizes.append(original)
    if not tensors:
        raise ValueError("no images given")
    return Sample(image=torch.stack(tensors)), torch.tensor(sizes)
