"""One adapter per dataset format, all mapping to :class:`kp3d.data.schema.Sample`.

Every adapter module exposes::

    detect(path: Path) -> bool
        Cheap check: is ``path`` (a file or folder) in this format?
    open(path: Path, *, size: int | None = None, split: str | None = None, strict: bool = False)
        -> torch.utils.data.Dataset[Sample]
        ``size``: images resized (whole image, no crop) to size x size, coordinates scaled with
        them; ``split``: the format's own split name where it has one; ``strict``: unreadable
        files are errors instead of logged skips.

``ADAPTERS`` is the explicit list, tried in order by :func:`open_dataset` when no format is
named; the generic image folder comes last because it matches almost anything.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from torch.utils.data import Dataset

ADAPTERS: dict[str, str] = {
    "synth": "kp3d.data.adapters.synth",
    "keypoints_npz": "kp3d.data.adapters.keypoints_npz",
    "landmark_csv": "kp3d.data.adapters.landmark_csv",
    "celeba": "kp3d.data.adapters.celeba",
    "aflw": "kp3d.data.adapters.aflw",
    "cub": "kp3d.data.adapters.cub",
    "coco": "kp3d.data.adapters.coco",
    "image_folder": "kp3d.data.adapters.image_folder",
}


def adapter(name: str) -> ModuleType:
    """The adapter module registered as ``name``."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown dataset format {name!r}; valid formats: {', '.join(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[name])


def detect_format(path: str | Path) -> str:
    """Name of the first adapter that recognises ``path``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    for name in ADAPTERS:
        if adapter(name).detect(p):
            return name
    raise ValueError(f"{p}: not recognised as any dataset format ({', '.join(ADAPTERS)})")


def open_dataset(
    path: str | Path, *, format: str | None = None, **kwargs: Any
) -> Dataset:
    """Open ``path`` as a dataset of :class:`Sample`, detecting the format unless ``format`` is given."""
    name = format or detect_format(path)
    return adapter(name).open(Path(path), **kwargs)
