"""One adapter per dataset format, all mapping to :class:`kp3d.data.schema.Sample`.

Every adapter module exposes::

    detect(path: Path) -> bool
        Cheap check: is ``path`` (a file or folder) in this format?
    open(path: Path, *, size: int | None = None, split: str | None = None, strict: bool = False,
         **format_options) -> torch.utils.data.Dataset[Sample]
        ``size``: images resized (whole image, no crop) to size x size, coordinates scaled with
        them; ``split``: the format's own split name where it has one; ``strict``: unreadable
        files are errors instead of logged skips. Image adapters also take
        ``**loading: Unpack[ImageOptions]`` (:mod:`kp3d.data.adapters._common`): ``cache``
        (default True: images decoded once into :mod:`kp3d.data.store` when ``size`` is given),
        ``cache_dir``, ``workers`` and ``background``; format options are documented per module.

and optionally ``scan(path, *, split=None, **format_options) -> Scan`` (what :func:`info` reports).

``ADAPTERS`` is the explicit list, tried in order by :func:`open_dataset` when no format is
named; the generic image folder comes last because it matches almost anything.

Bad input (see :mod:`kp3d.data.images` for image files and
:mod:`kp3d.data.adapters._common` for annotations): a clear :class:`kp3d.errors.DataError`
naming the file (and line) before any work starts, or a logged skip of an unreadable image.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from torch.utils.data import Dataset

from kp3d.errors import ConfigError, DataError

ADAPTERS: dict[str, str] = {
    "synth": "kp3d.data.adapters.synth",
    "synth_mix": "kp3d.data.adapters.synth_mix",
    "keypoints_npz": "kp3d.data.adapters.keypoints_npz",
    "landmark_csv": "kp3d.data.adapters.landmark_csv",
    "celeba": "kp3d.data.adapters.celeba",
    "aflw": "kp3d.data.adapters.aflw",
    "cub": "kp3d.data.adapters.cub",
    "coco": "kp3d.data.adapters.coco",
    "rig": "kp3d.data.adapters.rig",
    "image_folder": "kp3d.data.adapters.image_folder",
}


class PathNotFound(DataError, FileNotFoundError):
    """A dataset path that does not exist (a user error, and a ``FileNotFoundError``)."""


def adapter(name: str) -> ModuleType:
    """The adapter module registered as ``name``."""
    if name not in ADAPTERS:
        raise ConfigError(f"unknown dataset format {name!r}; valid formats: {', '.join(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[name])


def _available() -> list[str]:
    """Registered formats whose module exists (others may still be being written)."""
    out = []
    for name, module in ADAPTERS.items():
        try:
            adapter(name)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        out.append(name)
    return out


def _keyword_options(fn: Callable[..., Any]) -> list[str] | None:
    """The keyword options ``fn`` takes, in order; None if it takes any keyword at all.

    A ``**name: Unpack[SomeTypedDict]`` parameter (how image adapters take
    :class:`kp3d.data.adapters._common.ImageOptions`) contributes the TypedDict's keys.
    """
    params = inspect.signature(fn).parameters
    valid = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    var = [n for n, p in params.items() if p.kind is inspect.Parameter.VAR_KEYWORD]
    if var:
        # get_type_hints, not the signature: with postponed evaluation annotations are strings.
        hint = typing.get_type_hints(fn, include_extras=True).get(var[0])
        if typing.get_origin(hint) is not typing.Unpack:
            return None
        valid += list(typing.get_type_hints(typing.get_args(hint)[0]))
    return valid


def check_options(module: ModuleType, function: str, options: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` listing the valid options if ``options`` has unknown keys."""
    valid = _keyword_options(getattr(module, function))
    if valid is None:
        return
    unknown = sorted(set(options) - set(valid))
    if unknown:
        name = module.__name__.rsplit(".", 1)[-1]
        raise ConfigError(
            f"format {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid)}"
        )


def detect_format(path: str | Path) -> str:
    """Name of the first adapter that recognises ``path``.

    Raises:
        PathNotFound: ``path`` does not exist.
        DataError: no adapter recognises it.
    """
    p = Path(path)
    if not p.exists():
        raise PathNotFound(f"{p}: no such file or folder")
    for name in _available():
        if adapter(name).detect(p):
            return name
    raise DataError(
        f"{p}: not recognised as any dataset format ({', '.join(ADAPTERS)}); "
        "an image folder needs at least one image file"
    )


def open_dataset(path: str | Path, *, format: str | None = None, **kwargs: Any) -> Dataset:
    """Open ``path`` as a dataset of :class:`Sample` (format detected unless ``format`` is given).

    Raises:
        PathNotFound, DataError: missing path, unknown format, bad data (naming file and line).
        ConfigError: an option the format does not take (the message lists the valid ones).
    """
    p = Path(path)
    if not p.exists():
        raise PathNotFound(f"{p}: no such file or folder")
    module = adapter(format or detect_format(p))
    check_options(module, "open", kwargs)
    return module.open(p, **kwargs)


@dataclass
class DatasetInfo:
    """What :func:`info` found (printed by ``kp3d data info``).

    Attributes:
        path: the dataset path.
        format: the adapter that reads it.
        samples: samples in the selection (the default split unless one was named).
        images: image files the dataset covers (all splits).
        labelled: labelled samples (all splits).
        keypoints: K, or None without labels.
        keypoint_names: the K names where the format has them.
        splits: split name -> samples.
        problems: everything wrong, each naming a file (and line): annotation errors, then
            unreadable images.
        unreadable: how many of ``problems`` are unreadable images (skipped, not errors).
        notes: other facts (unlabelled images, filters applied, ...).
    """

    path: Path
    format: str
    samples: int = 0
    images: int = 0
    labelled: int = 0
    keypoints: int | None = None
    keypoint_names: list[str] | None = None
    splits: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unreadable: int = 0
    notes: list[str] = field(default_factory=list)


def info(
    path: str | Path,
    *,
    format: str | None = None,
    split: str | None = None,
    check: Literal["decode", "header", "none"] = "decode",
    **options: Any,
) -> DatasetInfo:
    """Recognise ``path`` and report counts and every problem, without raising for bad data.

    Args:
        path: a dataset file or folder.
        format: skip detection and use this adapter.
        split: the selection to count as ``samples``.
        check: ``"decode"`` decodes every image (finds truncated files), ``"header"`` reads only
            headers (finds empty and non-image files), ``"none"`` skips image checks.
        options: format options, passed to the adapter.

    Raises:
        PathNotFound, DataError: the path does not exist or is no known format.
        ConfigError: unknown format, split or option value.
    """
    p = Path(path)
    if not p.exists():
        raise PathNotFound(f"{p}: no such file or folder")
    name = format or detect_format(p)
    module = adapter(name)
    result = DatasetInfo(path=p, format=name)
    if not hasattr(module, "scan"):
        check_options(module, "open", options)
        return _info_by_opening(module, result, split, options)
    check_options(module, "scan", options)
    try:
        s = module.scan(p, split=split, **options)
    except DataError as e:
        result.problems.append(str(e))
        return result
    k = {len(e.kp2d) for e in s.entries if e.kp2d is not None}
    result.samples, result.labelled, result.splits = len(s.entries), s.labelled, dict(s.splits)
    result.images = len(s.images)
    result.keypoint_names = s.keypoint_names
    result.keypoints = next(iter(k)) if len(k) == 1 else s.num_keypoints
    result.notes = list(s.notes)
    result.problems = [str(x) for x in s.problems]
    if check != "none":
        from kp3d.data.images import check_images

        bad = check_images(sorted(set(s.images)), deep=check == "decode")
        result.problems += bad
        result.unreadable = len(bad)
    return result


def _info_by_opening(
    module: ModuleType, result: DatasetInfo, split: str | None, options: dict[str, Any]
) -> DatasetInfo:
    try:
        ds = module.open(result.path, split=split, **options)
    except DataError as e:
        result.problems.append(str(e))
        return result
    result.samples = len(ds)  # type: ignore[arg-type]
    if result.samples:
        first = ds[0]
        result.images = result.samples if first.image is not None else 0
        if first.kp2d is not None:
            result.labelled, result.keypoints = result.samples, first.kp2d.shape[-2]
    return result
