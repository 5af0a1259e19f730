"""AFLW2000-3D and 300W-LP: 68 iBUG landmarks from 3DMM fits, with 3D for AFLW2000-3D.

Two sources
    * Image + ``.mat`` pairs (``image00002.jpg`` + ``image00002.mat``, searched recursively, so
      a 300W-LP root with its ``AFW/``, ``HELEN/``, ... folders works): ``pt3d_68`` (3, 68) gives
      ``kp2d`` and ``kp3d``; without it (300W-LP), ``pt2d`` (2, 68) gives ``kp2d`` only. The
      original 21-point AFLW ``pt2d`` (2, 21) of AFLW2000-3D is not used. ``Pose_Para``
      (pitch, yaw, roll in radians, tx, ty, tz, scale) is kept per sample as
      ``dataset.extra("pose")`` (N, 3): (pitch, yaw, roll) in degrees, the yaw being what the
      literature bins AFLW2000-3D results by.
    * The 3DDFA-style array ``AFLW2000-3D.pts68.npy``, (N, 3, 68) float32, rows in sorted
      file-name order: keypoint-only samples (no image), ``kp2d`` and ``kp3d`` in pixels of the
      450 x 450 source images, scaled by ``size / 450`` when ``size`` is given. A sibling
      ``*.pose.npy`` (N,) is kept as :attr:`KeypointArray.yaw`: the yaw in degrees, equal to
      that of the ``.mat`` files' ``Pose_Para`` (checked on the shared samples; a few stored
      values lie beyond +-90 degrees and are kept as stored). Sample names are
      ``<file>[row]`` unless the folder holds exactly N images to name the rows.
    A folder with a ``*pts68.npy`` at its top is read as the array (open its ``samples/``
    sub-folder, or pass ``source="images"``, for the image pairs).

3D convention
    The fits store image-aligned coordinates: x right and y *down* in pixels of the image (the
    fitting code flips y into image rows), z out of the image *towards the viewer* (a nose tip
    has larger z than the ears of a frontal face), all in pixel units, z relative to the head
    model's origin. kp3d's camera frame is x right, y down, z forward (away from the camera), so
    ``kp3d = (x, y, -z)``: right-handed, depth up to an unknown offset (no metric distance is
    known), and the camera is orthographic with unit scale in source pixels, recorded as
    ``ortho = (1, 0, 0)`` (``u = X``, ``v = Y``); after resizing, x and y are scaled with the
    image and z by the same factor (the images are square). Coordinates are kept as stored
    (the fits use MATLAB's 1-based pixel centres; no half-pixel shift is applied).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Unpack, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from kp3d.data.adapters._common import (
    AnnotatedImages,
    Entry,
    ImageOptions,
    Problem,
    Scan,
    check_choice,
    open_scan,
)
from kp3d.data.images import IMAGE_EXTENSIONS
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError

NAME = "aflw"
SOURCE_SIZE = 450
"""Side of the AFLW2000-3D / 300W-LP source images, the pixel frame of ``pts68.npy``."""
K = 68
Source = Literal["auto", "images", "npy"]


def _npy(path: Path) -> Path | None:
    if path.is_file() and path.name.endswith("pts68.npy"):
        return path
    if path.is_dir():
        found = sorted(path.glob("*pts68.npy"))
        return found[0] if found else None
    return None


def _pairs(path: Path, first_only: bool = False) -> list[tuple[Path, Path]]:
    pairs = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        stems = {
            os.path.splitext(f)[0]: f
            for f in filenames
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
        }
        for f in sorted(filenames):
            stem, ext = os.path.splitext(f)
            if ext == ".mat" and stem in stems:
                pairs.append((Path(dirpath) / stems[stem], Path(dirpath) / f))
                if first_only:
                    return pairs
    return pairs


def detect(path: Path) -> bool:
    """A ``*pts68.npy`` array, or a folder with image + ``.mat`` pairs."""
    return _npy(path) is not None or (path.is_dir() and bool(_pairs(path, first_only=True)))


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | Problem:
    """``(kp2d (68, 2), kp3d (68, 3) in kp3d's camera frame or None, pose degrees (3,) or None)``.

    Returns a :class:`Problem` instead of raising for an unreadable or malformed file.
    """
    from scipy.io import loadmat

    try:
        m = loadmat(path)
    except Exception as e:  # noqa: BLE001 -- scipy raises many types for a broken .mat
        return Problem(path, None, f"unreadable .mat file ({type(e).__name__}: {e})")
    pose = None
    if "Pose_Para" in m:
        p = np.asarray(m["Pose_Para"], dtype=np.float64).ravel()
        if p.size < 3 or not np.isfinite(p[:3]).all():
            return Problem(path, None, f"Pose_Para has {p.size} values or non-finite angles")
        pose = np.degrees(p[:3])
    if "pt3d_68" in m:
        pts = np.asarray(m["pt3d_68"], dtype=np.float64)
        if pts.shape != (3, K):
            return Problem(path, None, f"pt3d_68 has shape {pts.shape}, expected (3, {K})")
        if not np.isfinite(pts).all():
            return Problem(path, None, "pt3d_68 has non-finite values")
        kp3d = pts.T * np.array([1.0, 1.0, -1.0])
        return kp3d[:, :2].copy(), kp3d, pose
    if "pt2d" in m:
        pts = np.asarray(m["pt2d"], dtype=np.float64)
        if pts.shape != (2, K):
            return Problem(
                path,
                None,
                f"pt2d has shape {pts.shape}, expected (2, {K}) (and there is no pt3d_68)",
            )
        if not np.isfinite(pts).all():
            return Problem(path, None, "pt2d has non-finite values")
        return pts.T.copy(), None, pose
    return Problem(path, None, "has neither pt3d_68 nor pt2d")


def scan(path: Path, *, split: str | None = None, source: Source = "auto") -> Scan:
    """Read every ``.mat`` of the image pairs (or the npy's shape, for the array source)."""
    path = Path(path)
    if split is not None:
        raise ConfigError(
            f"{path}: AFLW2000-3D / 300W-LP have no splits here; open a sub-folder instead"
        )
    npy = _npy(path)
    check_choice(source, get_args(Source), "source")
    if source == "npy" or (source == "auto" and npy is not None):
        if npy is None:
            raise DataError(f"{path}: no *pts68.npy array")
        kp = KeypointArray(npy)
        samples = (kp[i] for i in range(len(kp)))
        entries = [
            Entry(npy, s.name, kp2d=s.kp2d.numpy(), kp3d=s.kp3d.numpy(), where=f"{npy}, row {i}")
            for i, s in enumerate(samples)
        ]
        return Scan(
            format=NAME,
            root=npy.parent,
            entries=entries,
            split="npy",
            labelled=len(kp),
            notes=[f"{npy.name}: {len(kp)} faces, keypoints only (no images)"],
        )
    root = path if path.is_dir() else path.parent
    pairs = _pairs(root)
    if not pairs:
        raise DataError(f"{root}: no image with a .mat file of the same name")
    entries, problems, three_d = [], [], []
    for image, mat in pairs:
        got = read_mat(mat)
        if isinstance(got, Problem):
            problems.append(got)
            continue
        kp2d, kp3d, pose = got
        three_d.append(kp3d is not None)
        entries.append(
            Entry(
                path=image,
                name=image.relative_to(root).as_posix(),
                kp2d=kp2d,
                vis=np.ones(K, dtype=bool),
                kp3d=kp3d,
                where=str(mat),
                extra={"pose": pose if pose is not None else np.full(3, np.nan)},
            )
        )
    notes = []
    if three_d and not all(three_d):
        notes.append(
            f"{three_d.count(False)} of {len(three_d)} .mat files have no pt3d_68; "
            "3D keypoints dropped for all"
        )
        for e in entries:
            e.kp3d = None
    return Scan(
        format=NAME,
        root=root,
        entries=entries,
        problems=problems,
        split="images",
        images=[e.path for e in entries],
        labelled=len(entries),
        notes=notes,
    )


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from e
    if arr.ndim != 3 or arr.shape[1:] != (3, K):
        raise DataError(f"{path}: shape {arr.shape}, expected (N, 3, {K})")
    bad = np.flatnonzero(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1))
    if bad.size:
        raise DataError(f"{path}: row {bad[0]} has non-finite values")
    return arr


class KeypointArray(Dataset[Sample]):
    """Keypoint-only samples from a ``pts68.npy`` array (see the module doc).

    Attributes:
        names: ``<file>[row]`` or the image file names of the rows.
        yaw: (N,) yaw in degrees from the sibling ``*.pose.npy``, or None.
    """

    def __init__(self, npy: Path, *, size: int | None = None) -> None:
        arr = _load_npy(npy).astype(np.float64)
        kp3d = arr.transpose(0, 2, 1) * np.array([1.0, 1.0, -1.0])
        if size is not None:
            kp3d = kp3d * (size / SOURCE_SIZE)
        self._kp3d = torch.from_numpy(kp3d).float()
        self._vis = torch.ones(K, dtype=torch.bool)
        images = sorted(
            f for f in os.listdir(npy.parent) if Path(f).suffix.lower() in IMAGE_EXTENSIONS
        )
        self.names = (
            images if len(images) == len(arr) else [f"{npy.name}[{i}]" for i in range(len(arr))]
        )
        pose = npy.with_name(npy.name.replace("pts68.npy", "pose.npy"))
        self.yaw = None
        if pose.is_file():
            yaw = np.load(pose, allow_pickle=False)
            if yaw.shape != (len(arr),):
                raise DataError(
                    f"{pose}: shape {yaw.shape}, expected ({len(arr)},) to match {npy.name}"
                )
            self.yaw = yaw.astype(np.float64)

    def __len__(self) -> int:
        return len(self._kp3d)

    def __getitem__(self, i: int) -> Sample:
        kp3d = self._kp3d[i]
        return Sample(
            kp2d=kp3d[:, :2].clone(),
            vis=self._vis,
            kp3d=kp3d,
            ortho=torch.tensor([1.0, 0.0, 0.0]),
            name=self.names[i],
        )


def open(
    path: Path,
    *,
    size: int | None = None,
    split: str | None = None,
    strict: bool = False,
    source: Source = "auto",
    **loading: Unpack[ImageOptions],
) -> AnnotatedImages | KeypointArray:
    """Image samples with ``kp2d``, ``vis``, ``kp3d`` and ``ortho`` (or ``kp2d`` only for
    300W-LP), or keypoint-only samples from the npy array (see the module doc)."""
    s = scan(path, split=split, source=source)
    if s.split == "npy":
        return KeypointArray(s.entries[0].path, size=size)
    # Entries have kp3d all or none (see scan); ``any`` also holds when every .mat was bad and
    # open_scan is about to raise the problems naming them.
    ortho = any(e.kp3d is not None for e in s.entries)
    return open_scan(s, size=size, strict=strict, tag=NAME, ortho=ortho, **loading)
