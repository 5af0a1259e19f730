"""What every image-based adapter shares: entries, annotation problems, and one Dataset class.

An adapter parses its annotation files into :class:`Entry` objects (coordinates in pixels of the
*source* image, as stored) and a list of :class:`Problem`, gathered in a :class:`Scan`;
:func:`open_scan` turns them into :class:`AnnotatedImages`, whose items are
:class:`kp3d.data.schema.Sample` objects: images through the cached store
(:mod:`kp3d.data.store`) or decoded on demand, keypoints mapped to the resized image. The image
options every image adapter's ``open`` takes are declared once, as :class:`ImageOptions`.

Annotation policy (the same for every format)
    Errors (:class:`DataError` naming the annotation file and line, before any work starts):
    missing or extra columns, a wrong landmark count, values that are not numbers, NaN or
    infinite coordinates of a keypoint that the format marks as present, a file name that does
    not exist, and coordinates far outside the image (more than :data:`OUTSIDE_MARGIN` times
    the image size beyond an edge, which means swapped axes or wrong units). Coordinates
    slightly outside the image are legitimate (a chin below the frame, a 3DMM contour point) and
    are kept unchanged, still visible. Keypoints a format marks as absent (COCO ``v=0``, CUB
    ``visible=0``) get ``vis=False`` and coordinates 0 whatever is stored.
    Skips (one warning line each, then a count; errors with ``strict=True``): image files that
    exist but cannot be decoded.
    Coordinates are kept as the source stores them: no half-pixel shift is applied for formats
    written with 1-based (MATLAB) pixel indices, so they may sit up to 1 px right/down of kp3d's
    continuous frame, exactly as in the literature's protocols that use them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict, Unpack

import numpy as np
import torch
from torch.utils.data import Dataset

from kp3d.data.images import Background, Box, image_size, load_image, report_sizes, report_skipped
from kp3d.data.schema import Sample
from kp3d.data.store import ImageStore
from kp3d.errors import ConfigError, DataError

OUTSIDE_MARGIN: float = 0.5
"""Keypoints may lie up to this fraction of the image width/height beyond its edges."""

KeypointScale = Callable[[float, float, int], tuple[float, float]]
"""``(region_w, region_h, size) -> (sx, sy)``: how source pixels map to the resized image."""


Crop = Literal["none", "bbox"]
"""``"none"``: the whole image; ``"bbox"``: the square around each box (:func:`square_box`)."""


def exact_scale(w: float, h: float, size: int) -> tuple[float, float]:
    """``u' = u * size / w``, ``v' = v * size / h``: the scaling of :mod:`kp3d.geometry`."""
    return size / w, size / h


def check_choice(value: object, valid: Sequence[str], what: str) -> None:
    """Raise :class:`ConfigError` ("unknown <what> ...; valid: ...") unless ``value`` is valid."""
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class Problem:
    """Something wrong in an annotation or image file; ``str()`` names the file and line."""

    file: str | Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.line is not None else f"{self.file}"
        return f"{where}: {self.message}"


def raise_problems(problems: Sequence[Problem], *, limit: int = 5, hint: str = "") -> None:
    """Raise one :class:`DataError` listing the first ``limit`` problems (if there are any)."""
    if not problems:
        return
    shown = "; ".join(str(p) for p in problems[:limit])
    if len(problems) > limit:
        shown += f" (and {len(problems) - limit} more; `kp3d data info` lists all)"
    raise DataError(shown + hint)


def read_lines(path: Path) -> list[str] | Problem:
    """The lines of a text annotation file, or a :class:`Problem` if it cannot be read.

    ``utf-8-sig`` because annotation lists edited on Windows often start with a byte-order mark.
    """
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return Problem(path, None, f"cannot read as text ({e})")


def parse_floats(
    values: Sequence[str], file: str | Path, line: int, what: str
) -> np.ndarray | Problem:
    """Parse strings as floats, or a :class:`Problem` naming the first bad value."""
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except ValueError:
            return Problem(file, line, f"{what}: value {i + 1} is {v.strip()!r}, not a number")
    return out


def square_box(xywh: Sequence[float]) -> Box | None:
    """The square of side ``max(w, h)`` centred on the box ``(x, y, w, h)``; None if it is empty.

    Not clipped to the image: :func:`kp3d.data.images.decode_image` fills the outside with the
    background colour, so the object keeps its aspect ratio.
    """
    x, y, w, h = (float(v) for v in xywh)
    if not (w > 0 and h > 0 and np.isfinite([x, y, w, h]).all()):
        return None
    cx, cy, half = x + w / 2, y + h / 2, max(w, h) / 2
    return (cx - half, cy - half, cx + half, cy + half)


@dataclass
class Entry:
    """One sample before loading: an image and its annotation in source-image pixels.

    ``where`` locates the annotation ("file, line N") for messages about it; ``extra`` holds
    per-sample values the schema has no field for (e.g. AFLW head pose), served by
    :meth:`AnnotatedImages.extra`.
    """

    path: Path
    name: str
    kp2d: np.ndarray | None = None
    vis: np.ndarray | None = None
    kp3d: np.ndarray | None = None
    box: Box | None = None
    category: int | None = None
    where: str | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def landmark_row(
    image: Path, name: str, kp2d: np.ndarray, file: str | Path, line: int
) -> Entry | Problem:
    """The entry of a row listing ``image`` with K landmarks, all present (CelebA, CSV lists).

    Args:
        image: the image file the row names.
        name: the sample name.
        kp2d: (K, 2) landmark pixel coordinates of the source image.
        file, line: the annotation file and its 1-based line holding the row.

    Returns:
        The :class:`Entry` (``vis`` (K,) all True, located at "file, line N"), or a
        :class:`Problem` naming the row if ``image`` does not exist.
    """
    if not image.is_file():
        return Problem(file, line, f"image {image} does not exist")
    return Entry(
        path=image,
        name=name,
        kp2d=kp2d,
        vis=np.ones(len(kp2d), dtype=bool),
        where=f"{file}, line {line}",
    )


@dataclass
class Scan:
    """What an adapter found at a path: the selected entries and everything wrong with them.

    Attributes:
        format: the adapter's name.
        root: the dataset folder.
        entries: the samples of the selected split.
        split: the selection actually made (defaults resolved), e.g. for cache tags.
        problems: annotation problems (each an error for ``open``).
        splits: split name -> number of samples, for every split the format offers.
        images: every image file the dataset covers (for ``kp3d data info``).
        labelled: number of labelled samples over all splits.
        num_keypoints: K of the labels (also when the selection itself is unlabelled).
        keypoint_names: names of the K keypoints, where the format has them.
        notes: facts worth printing (unlabelled images, filtered samples, ...).
    """

    format: str
    root: Path
    entries: list[Entry]
    split: str | None = None
    problems: list[Problem] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)
    labelled: int = 0
    num_keypoints: int | None = None
    keypoint_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)


class ImageOptions(TypedDict, total=False):
    """How images are loaded: the options every image adapter's ``open`` takes as ``**loading``.

    Declared once here and passed through untouched to :class:`AnnotatedImages`, whose
    signature holds the defaults (``cache=True``, ``cache_dir=None``, ``workers=None``,
    ``background="white"``); :func:`kp3d.data.adapters.check_options` lists these keys among
    an adapter's valid options.

    Keys:
        cache: with a ``size``, decode every image once into :mod:`kp3d.data.store`.
        cache_dir: where the store lives (default: :func:`kp3d.data.store.default_cache_dir`).
        workers: decoding processes filling the store (None: the store chooses).
        background: colour under transparent pixels and outside the image (crop boxes).
    """

    cache: bool
    cache_dir: str | Path | None
    workers: int | None
    background: Background


class AnnotatedImages(Dataset[Sample]):
    """Images with optional keypoints, as :class:`Sample` objects of one fixed layout.

    With ``size`` and ``cache`` (the default for training) every image is decoded once into the
    cached store and unreadable files are found and skipped before the first sample is served;
    otherwise headers are checked up front and images decoded on each access.

    Attributes:
        names: sample names (paths relative to the dataset), in index order.
        keypoint_names: names of the K keypoints, if known.
        num_keypoints: K, or None for unlabelled sets.
        store: the :class:`ImageStore`, when cached.
        rows: store row of each sample (several samples can share one image).
    """

    def __init__(
        self,
        root: Path,
        entries: Sequence[Entry],
        *,
        size: int | None,
        strict: bool = False,
        tag: str = "",
        cache: bool = True,
        cache_dir: str | Path | None = None,
        workers: int | None = None,
        background: Background = "white",
        keypoint_scale: KeypointScale = exact_scale,
        ortho: bool = False,
        keypoint_names: Sequence[str] | None = None,
    ) -> None:
        if not entries:
            raise DataError(f"{root}: no samples in this selection")
        self.root, self.size, self.background = root, size, background
        self.keypoint_names = list(keypoint_names) if keypoint_names is not None else None
        self._check_fields(entries)

        # One check per distinct (image, box): COCO images hold several instances.
        keys = [(e.path, e.box) for e in entries]
        unique = list(dict.fromkeys(keys))
        slot = {k: i for i, k in enumerate(unique)}
        self.store: ImageStore | None = None
        if size is not None and cache:
            self.store = ImageStore.open(
                [p for p, _ in unique],
                size,
                root=root,
                boxes=[b for _, b in unique],
                tag=tag,
                cache_dir=cache_dir,
                background=background,
                workers=workers,
            )
            originals = self.store.original
            failed = {i: msg for i, msg in self.store.errors.items()}
        else:
            originals = np.zeros((len(unique), 2), dtype=np.int64)
            failed = {}
            by_path: dict[Path, tuple[int, int] | str] = {}
            for i, (p, _) in enumerate(unique):
                if p not in by_path:
                    try:
                        by_path[p] = image_size(p)
                    except DataError as e:
                        by_path[p] = str(e)
                got = by_path[p]
                if isinstance(got, str):
                    failed[i] = got
                else:
                    originals[i] = got
        bad_files = {unique[i][0]: msg for i, msg in failed.items()}
        report_skipped(list(bad_files.items()), len({p for p, _ in unique}), strict=strict)

        keep = [i for i, k in enumerate(keys) if slot[k] not in failed]
        self._entries = [entries[i] for i in keep]
        self.rows = [slot[keys[i]] for i in keep]
        self.names = [e.name for e in self._entries]
        self._originals = originals
        regions = np.array(
            [self._region(e, originals[r]) for e, r in zip(self._entries, self.rows)]
        )
        self._check_inside()
        report_sizes(regions[:, 2:] - regions[:, :2], self.names, size)
        self._kp2d, self._vis, self._kp3d = self._resized_keypoints(regions, keypoint_scale)
        self._ortho = torch.tensor([1.0, 0.0, 0.0]) if ortho else None

    @staticmethod
    def _check_fields(entries: Sequence[Entry]) -> None:
        first = entries[0]
        for e in entries:
            for f in ("kp2d", "kp3d", "category"):
                if (getattr(e, f) is None) != (getattr(first, f) is None):
                    raise ValueError(f"adapter bug: {e.name} and {first.name} differ in field {f}")
            if e.kp2d is not None and e.kp2d.shape != first.kp2d.shape:
                raise DataError(
                    f"{e.where or e.name}: {len(e.kp2d)} keypoints, but "
                    f"{first.where or first.name} has {len(first.kp2d)}"
                )

    @staticmethod
    def _region(e: Entry, original: np.ndarray) -> tuple[float, float, float, float]:
        if e.box is not None:
            return tuple(float(x) for x in e.box)  # type: ignore[return-value]
        return (0.0, 0.0, float(original[0]), float(original[1]))

    def _check_inside(self) -> None:
        labelled = [i for i, e in enumerate(self._entries) if e.kp2d is not None]
        if not labelled:
            return
        kp = np.stack([self._entries[i].kp2d for i in labelled])
        vis = np.stack(
            [
                self._entries[i].vis
                if self._entries[i].vis is not None
                else np.ones(len(kp[0]), bool)
                for i in labelled
            ]
        )
        wh = self._originals[[self.rows[i] for i in labelled]][:, None, :].astype(np.float64)
        far = vis & ((kp < -OUTSIDE_MARGIN * wh) | (kp > (1 + OUTSIDE_MARGIN) * wh)).any(axis=-1)
        problems = []
        for n, k in zip(*np.nonzero(far)):
            if problems and problems[-1][0] == n:
                continue
            e = self._entries[labelled[n]]
            w, h = wh[n, 0].astype(int)
            message = (
                f"{e.where or e.name}: keypoint {k} at ({kp[n, k, 0]:g}, {kp[n, k, 1]:g}) "
                f"is far outside the {w}x{h} image {e.path.name} (swapped x/y or wrong units?)"
            )
            problems.append((n, message))
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise DataError("; ".join(m for _, m in problems[:5]) + more)

    def _resized_keypoints(
        self, regions: np.ndarray, keypoint_scale: KeypointScale
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        if self._entries[0].kp2d is None:
            return None, None, None
        kp2d = np.stack([e.kp2d for e in self._entries]).astype(np.float64)
        k = kp2d.shape[1]
        vis = np.stack(
            [e.vis if e.vis is not None else np.ones(k, dtype=bool) for e in self._entries]
        )
        kp3d = (
            np.stack([e.kp3d for e in self._entries]).astype(np.float64)
            if self._entries[0].kp3d is not None
            else None
        )
        origin = regions[:, None, :2]
        if self.size is not None:
            size = self.size
            scale = np.array([keypoint_scale(x1 - x0, y1 - y0, size) for x0, y0, x1, y1 in regions])
        else:
            scale = np.ones((len(regions), 2))
        scale = scale[:, None, :]
        kp2d = (kp2d - origin) * scale
        if kp3d is not None:
            kp3d[..., :2] = (kp3d[..., :2] - origin) * scale
            # Depth in the same units as x and y (the sets with 3D labels are square anyway).
            kp3d[..., 2:] *= scale.mean(axis=-1, keepdims=True)
        # A keypoint cut off by a crop box is not visible in the sample's image.
        extent = (regions[:, None, 2:] - origin) * scale
        cropped = np.array([e.box is not None for e in self._entries])[:, None]
        outside = ((kp2d < 0) | (kp2d > extent)).any(axis=-1)
        vis = vis & ~(cropped & outside)
        kp2d = np.where(vis[..., None], kp2d, 0.0)
        return (
            torch.from_numpy(kp2d).float(),
            torch.from_numpy(vis),
            None if kp3d is None else torch.from_numpy(np.where(vis[..., None], kp3d, 0.0)).float(),
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def num_keypoints(self) -> int | None:
        return None if self._kp2d is None else self._kp2d.shape[1]

    def extra(self, name: str) -> np.ndarray:
        """Per-sample values the schema has no field for, stacked in index order: (N, ...)."""
        if not self._entries or name not in self._entries[0].extra:
            have = sorted(self._entries[0].extra) if self._entries else []
            raise KeyError(f"no per-sample {name!r}; this dataset has: {', '.join(have) or 'none'}")
        return np.stack([e.extra[name] for e in self._entries])

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        e = self._entries[i]
        if self.store is not None:
            image = self.store.image(self.rows[i])
        else:
            image = load_image(e.path, size=self.size, box=e.box, background=self.background)[0]
        return Sample(
            image=image,
            kp2d=None if self._kp2d is None else self._kp2d[i],
            vis=None if self._vis is None else self._vis[i],
            kp3d=None if self._kp3d is None else self._kp3d[i],
            ortho=self._ortho,
            category=None if e.category is None else torch.tensor(e.category, dtype=torch.int64),
            name=e.name,
        )


def open_scan(
    s: Scan,
    *,
    size: int | None,
    strict: bool,
    tag: str,
    hint: str = "",
    keypoint_scale: KeypointScale = exact_scale,
    ortho: bool = False,
    **loading: Unpack[ImageOptions],
) -> AnnotatedImages:
    """The entries of ``s`` as a dataset: what every image adapter's ``open`` ends with.

    Annotation problems are raised first (one :class:`DataError` naming file and line, with
    ``hint`` appended), so that no image is decoded for a dataset that cannot be used.

    Args:
        s: the adapter's scan; its ``keypoint_names`` (K names, or None) go to the dataset.
        size: resize to size x size (None: source size).
        strict: unreadable images are errors instead of logged skips.
        tag: names the cached store; it must change whenever the selection or crop does.
        hint: appended to the problems' message (e.g. how to open the data otherwise).
        keypoint_scale, ortho: see :class:`AnnotatedImages`.
        loading: the :class:`ImageOptions` given to ``open``.
    """
    raise_problems(s.problems, hint=hint)
    return AnnotatedImages(
        s.root,
        s.entries,
        size=size,
        strict=strict,
        tag=tag,
        keypoint_scale=keypoint_scale,
        ortho=ortho,
        keypoint_names=s.keypoint_names,
        **loading,
    )
