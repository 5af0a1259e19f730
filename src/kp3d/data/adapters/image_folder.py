"""A folder of images, searched recursively, without labels: the default for ``kp3d train``.

Any category and any layout: every file with an image extension under the folder (hidden files
and folders, such as ``.kp3d-cache``, excluded) is one sample, named by its path relative to the
folder. ``split`` selects a sub-folder (``split="train"`` reads ``PATH/train``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Unpack

from kp3d.data.adapters._common import AnnotatedImages, Entry, ImageOptions, Scan, open_scan
from kp3d.data.images import IMAGE_EXTENSIONS, find_images
from kp3d.errors import ConfigError

NAME = "image_folder"


def detect(path: Path) -> bool:
    """A folder with at least one image file somewhere below it."""
    if not path.is_dir():
        return False
    for _, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(
            Path(f).suffix.lower() in IMAGE_EXTENSIONS and not f.startswith(".") for f in filenames
        ):
            return True
    return False


def _root(path: Path, split: str | None) -> Path:
    if split is None:
        return path
    sub = path / split
    if not sub.is_dir():
        subs = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        raise ConfigError(
            f"{path}: no sub-folder {split!r} to use as a split; "
            f"sub-folders: {', '.join(subs) or '(none)'}"
        )
    return sub


def scan(path: Path, *, split: str | None = None) -> Scan:
    """Every image under ``path`` (or ``path / split``).

    Raises:
        DataError: no image file at all.
        ConfigError: ``split`` is not a sub-folder.
    """
    root = _root(Path(path), split)
    files = find_images(root)
    entries = [Entry(path=f, name=f.relative_to(root).as_posix()) for f in files]
    return Scan(format=NAME, root=root, entries=entries, images=files)


def open(
    path: Path,
    *,
    size: int | None = None,
    split: str | None = None,
    strict: bool = False,
    **loading: Unpack[ImageOptions],
) -> AnnotatedImages:
    """The images under ``path`` as unlabelled samples (``image`` and ``name`` only)."""
    return open_scan(scan(path, split=split), size=size, strict=strict, tag=NAME, **loading)
