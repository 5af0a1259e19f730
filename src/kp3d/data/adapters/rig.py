"""A calibrated multi-camera recording ("real rig"): your own studio, in one documented layout.

Layout::

    ROOT/
      cameras.json                  the calibration (below)
      <camera>/<frame>.<ext>        images, one folder per camera, any image extension
      joints3d.npy                  optional (F, J, 3) float world joints
      backgrounds/<camera>.<ext>    optional: each camera's view of the empty scene

``cameras.json``::

    {
      "units": "m",                               optional, for messages and reports
      "joint_names": ["pelvis", ...],             optional, J names
      "skeleton": [[0, 1], ...],                  optional, edges between joints
      "cameras": [
        {"name": "cam0",                          the image folder's name
         "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   pixels of the stored images
         "R": [[...], [...], [...]],              world-to-camera rotation (proper)
         "t": [tx, ty, tz],                       world-to-camera translation: X_cam = R X + t
         "size": [W, H],                          image size in pixels
         "distortion": [0, 0, 0, 0, 0]}           optional; must be all zero (undistort first)
      ]
    }

Conventions are kp3d's (:mod:`kp3d.geometry`): camera frame x right, y down, z forward;
continuous pixel coordinates with pixel centres at +0.5.

Moments: the frames (file names without extension) present in every camera, in sorted name
order (zero-pad frame numbers); frames missing from some camera are skipped and counted (one
log line). ``joints3d.npy`` has one row per frame of the sorted union of frame names over all
cameras.

Samples: one per moment with a leading view axis V: ``image`` (V, 3, H, W), ``intrinsics``
(V, 3, 3) (scaled to ``size``), ``extrinsics`` (V, 3, 4), ``background`` (V, 3, H, W) (the
files, else the per-pixel median of the camera's frames, :mod:`kp3d.data.background`, unless
``backgrounds="none"``), ``view``, ``instance`` (the moment's index) and ``name`` (the frame);
with ``joints3d.npy`` also ``kp3d`` (V, J, 3) in each camera's frame, ``kp2d`` (V, J, 2) their
projections and ``vis`` (V, J) (in front of the camera and inside the image: no occlusion
test). The world joints of the moments are the dataset's ``joints3d`` attribute.

Refused with a :class:`kp3d.errors.DataError` naming the camera: a rotation that is not proper
orthonormal (``|R R^T - I| > 1e-4`` or ``det R <= 0``), a zero, negative or non-finite focal
length, skew, non-zero distortion, a missing image folder, an image (or background) whose size
differs from the calibration's ``size``.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from kp3d.data.adapters._common import Entry, Scan
from kp3d.data.images import IMAGE_EXTENSIONS, image_size, load_image
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError
from kp3d.geometry.cameras import project_pinhole, transform_points

NAME = "rig"
CAMERAS = "cameras.json"
BackgroundMode = Literal["auto", "files", "median", "none"]
log = logging.getLogger("kp3d.data")


def detect(path: Path) -> bool:
    """A folder with a ``cameras.json`` holding a ``cameras`` list."""
    f = path / CAMERAS
    if not f.is_file():
        return False
    try:
        return isinstance(json.loads(f.read_text()).get("cameras"), list)
    except (OSError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class Camera:
    """One calibrated camera of a rig."""

    name: str
    K: np.ndarray
    """(3, 3) float64 intrinsics, pixels of the stored images."""
    R: np.ndarray
    """(3, 3) float64 world-to-camera rotation."""
    t: np.ndarray
    """(3,) float64 world-to-camera translation."""
    size: tuple[int, int]
    """(W, H)."""

    @property
    def centre(self) -> np.ndarray:
        """(3,) the camera's position in the world, ``-R^T t``."""
        return -self.R.T @ self.t


def _matrix(cam: dict[str, Any], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        a = np.asarray(cam[key], dtype=np.float64)
    except KeyError:
        raise DataError(f"{where}: missing {key!r}") from None
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key} is not numeric") from None
    if a.shape != shape or not np.isfinite(a).all():
        raise DataError(f"{where}: {key} must be {shape} finite numbers, got shape {a.shape}")
    return a


def parse_camera(cam: Any, where: str) -> Camera:
    """Validate one entry of ``cameras.json`` (``where`` names it in messages)."""
    if not isinstance(cam, dict) or not isinstance(cam.get("name"), str) or not cam["name"]:
        raise DataError(f"{where}: each camera needs a non-empty string 'name'")
    where = f"{where} camera {cam['name']!r}"
    K = _matrix(cam, "K", (3, 3), where)
    R = _matrix(cam, "R", (3, 3), where)
    t = _matrix(cam, "t", (3,), where)
    size = _matrix(cam, "size", (2,), where)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(f"{where}: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    if K[0, 1] != 0 or K[1, 0] != 0 or not np.allclose(K[2], [0, 0, 1]):
        raise DataError(f"{where}: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > 1e-4 or np.linalg.det(R) <= 0:
        raise DataError(
            f"{where}: R is not a rotation (|R R^T - I| = {err:.2g}, det = {np.linalg.det(R):.4g})"
        )
    if (size <= 0).any() or (size != np.round(size)).any():
        raise DataError(f"{where}: size must be two positive integers [W, H], got {size.tolist()}")
    dist = cam.get("distortion")
    if dist is not None:
        d = np.asarray(dist, dtype=np.float64).ravel()
        if d.size and np.abs(d).max() > 0:
            raise DataError(
                f"{where}: non-zero lens distortion {d.tolist()}; kp3d uses pinhole cameras: "
                "undistort the images and write zeros (or drop 'distortion')"
            )
    return Camera(cam["name"], K, R, t, (int(size[0]), int(size[1])))


def read_cameras(root: Path) -> tuple[list[Camera], dict[str, Any]]:
    """The validated cameras of ``root / cameras.json`` and the file's other keys.

    Raises:
        DataError: unreadable file, or a bad camera (the message names it).
    """
    path = root / CAMERAS
    try:
        meta = json.loads(path.read_text())
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("cameras"), list):
        raise DataError(f"{path}: needs a 'cameras' list")
    cams = [parse_camera(c, str(path)) for c in meta["cameras"]]
    if len(cams) < 2:
        raise DataError(f"{path}: a rig needs at least 2 cameras, got {len(cams)}")
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: camera names must be unique, got {names}")
    return cams, meta


def _frames(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    }


def _background_file(root: Path, camera: str) -> Path | None:
    folder = root / "backgrounds"
    if not folder.is_dir():
        return None
    found = [
        p
        for p in sorted(folder.iterdir())
        if p.stem == camera and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return found[0] if found else None


@dataclass
class _Layout:
    cameras: list[Camera]
    meta: dict[str, Any]
    files: list[dict[str, Path]]
    """Per camera: frame name -> image."""
    union: list[str]
    moments: list[str]
    joints3d: np.ndarray | None
    """(len(moments), J, 3) or None."""
    backgrounds: list[Path | None]


def _layout(root: Path) -> _Layout:
    cams, meta = read_cameras(root)
    files = []
    for c in cams:
        folder = root / c.name
        if not folder.is_dir():
            raise DataError(f"{root / CAMERAS}: camera {c.name!r} has no image folder {folder}")
        files.append(_frames(folder))
    union = sorted(set().union(*files))
    moments = [f for f in union if all(f in fs for fs in files)]
    if not moments:
        raise DataError(f"{root}: no frame is present in every camera ({len(union)} frames)")
    joints = None
    jpath = root / "joints3d.npy"
    if jpath.is_file():
        try:
            joints = np.load(jpath)
        except (OSError, ValueError) as e:
            raise DataError(f"{jpath}: cannot read ({e})") from e
        if joints.ndim != 3 or joints.shape[0] != len(union) or joints.shape[2] != 3:
            raise DataError(
                f"{jpath}: must be (frames, J, 3) with one row per frame of the sorted union of "
                f"frame names ({len(union)}), got {joints.shape}"
            )
        index = {f: i for i, f in enumerate(union)}
        joints = joints[[index[f] for f in moments]].astype(np.float64)
    names = meta.get("joint_names")
    if joints is not None and names is not None and len(names) != joints.shape[1]:
        raise DataError(f"{root / CAMERAS}: {len(names)} joint_names for {joints.shape[1]} joints")
    backgrounds = [_background_file(root, c.name) for c in cams]
    return _Layout(cams, meta, files, union, moments, joints, backgrounds)


def _check_sizes(lay: _Layout, frames: Sequence[str]) -> list[tuple[Path, str]]:
    """Check the headers of the images of ``frames`` (and the backgrounds) against the
    calibration; returns unreadable files (skips), raises on a size mismatch."""
    unreadable = []
    for cam, files, bg in zip(lay.cameras, lay.files, lay.backgrounds):
        paths = [files[f] for f in frames] + ([bg] if bg is not None else [])
        for p in paths:
            try:
                wh = image_size(p)
            except DataError as e:
                unreadable.append((p, str(e)))
                continue
            if wh != cam.size:
                raise DataError(
                    f"{p}: image is {wh[0]}x{wh[1]} but camera {cam.name!r} is calibrated for "
                    f"{cam.size[0]}x{cam.size[1]} (cameras.json 'size')"
                )
    return unreadable


def baselines(cameras: Sequence[Camera]) -> dict[tuple[str, str], float]:
    """Distance between the centres of every pair of cameras."""
    return {
        (a.name, b.name): float(np.linalg.norm(a.centre - b.centre))
        for a, b in itertools.combinations(cameras, 2)
    }


def scan(path: Path, *, split: str | None = None) -> Scan:
    """What ``kp3d data info`` reports: cameras, moments, skipped frames, baselines.

    Raises:
        DataError: bad calibration or layout; ConfigError: a split was asked for.
    """
    _no_split(path, split)
    root = Path(path)
    lay = _layout(root)
    entries = [
        Entry(path=lay.files[0][f], name=f, kp3d=None if lay.joints3d is None else lay.joints3d[i])
        for i, f in enumerate(lay.moments)
    ]
    images = [p for fs in lay.files for p in fs.values()]
    units = lay.meta.get("units", "")
    cams = ", ".join(f"{c.name} {c.size[0]}x{c.size[1]} f={c.K[0, 0]:.0f}" for c in lay.cameras)
    notes = [
        f"cameras: {len(lay.cameras)} ({cams})",
        f"frames: {len(lay.moments)} in every camera"
        + (
            f"; {len(lay.union) - len(lay.moments)} skipped (missing from some camera)"
            if len(lay.union) > len(lay.moments)
            else ""
        ),
    ]
    base = baselines(lay.cameras)
    d = np.array(list(base.values()))
    notes.append(
        f"baselines: min {d.min():.3g}, median {np.median(d):.3g}, max {d.max():.3g} {units}".rstrip()
        + " ("
        + ", ".join(f"{a}-{b} {v:.3g}" for (a, b), v in base.items())
        + ")"
    )
    notes.append(
        "backgrounds: "
        + (
            ", ".join(c.name for c, b in zip(lay.cameras, lay.backgrounds) if b is not None)
            or "none (per-pixel median of each camera's frames)"
        )
    )
    if lay.joints3d is None:
        notes.append("no joints3d.npy: images and cameras only")
    try:
        problems = _check_sizes(lay, lay.moments)
    except DataError as e:
        problems = [(Path(root), str(e))]
    from kp3d.data.adapters._common import Problem

    return Scan(
        format=NAME,
        root=root,
        entries=entries,
        images=images,
        labelled=0 if lay.joints3d is None else len(lay.moments),
        num_keypoints=None if lay.joints3d is None else int(lay.joints3d.shape[1]),
        keypoint_names=lay.meta.get("joint_names"),
        notes=notes,
        problems=[Problem(p, None, msg.removeprefix(f"{p}: ")) for p, msg in problems],
    )


def _no_split(path: Path, split: str | None) -> None:
    if split is not None:
        raise ConfigError(
            f"{path}: a rig recording has no splits (asked for {split!r}); keep the test "
            "moments in another folder"
        )


class RigSet(Dataset[Sample]):
    """A real-rig recording as multi-view :class:`Sample` objects (see the module doc).

    Attributes:
        cameras: the calibrated cameras (in ``cameras.json`` order = the view axis).
        frames: the moments' frame names.
        joints3d: (M, J, 3) world joints of the moments, or None.
        keypoint_names, skeleton: from ``cameras.json`` where given.
    """

    def __init__(
        self,
        root: Path,
        *,
        size: int | None = None,
        strict: bool = False,
        backgrounds: BackgroundMode = "auto",
        median_frames: int = 200,
    ) -> None:
        if backgrounds not in ("auto", "files", "median", "none"):
            raise ConfigError(
                f"backgrounds must be auto, files, median or none, got {backgrounds!r}"
            )
        if size is not None and size < 1:
            raise ConfigError(f"size must be positive, got {size}")
        if median_frames < 1:
            raise ConfigError(f"median_frames must be >= 1, got {median_frames}")
        self.root, self.size = root, size
        lay = _layout(root)
        skipped = len(lay.union) - len(lay.moments)
        if skipped:
            log.warning(
                "%s: skipped %d of %d frames (missing from some camera)",
                root,
                skipped,
                len(lay.union),
            )
        bad = _check_sizes(lay, lay.moments)
        if bad and strict:
            raise DataError(f"{len(bad)} unreadable images (strict mode): {bad[0][1]}")
        bad_paths = {p for p, _ in bad}
        for p, msg in bad:
            log.warning("skipped: %s", msg)
        keep = [
            i for i, f in enumerate(lay.moments) if not any(fs[f] in bad_paths for fs in lay.files)
        ]
        if not keep:
            raise DataError(f"{root}: no moment has a readable image in every camera")
        if size is None and len({c.size for c in lay.cameras}) > 1:
            raise DataError(
                f"{root}: the cameras' image sizes differ "
                f"({', '.join(f'{c.name} {c.size[0]}x{c.size[1]}' for c in lay.cameras)}); "
                "pass a size to load them at one size"
            )
        if backgrounds == "files" and any(b is None for b in lay.backgrounds):
            missing = [c.name for c, b in zip(lay.cameras, lay.backgrounds) if b is None]
            raise DataError(f"{root / 'backgrounds'}: no background image for {', '.join(missing)}")
        self._lay = lay
        self._files = lay.files
        self.cameras = lay.cameras
        self.frames = [lay.moments[i] for i in keep]
        self.joints3d = None if lay.joints3d is None else lay.joints3d[keep]
        self.keypoint_names: list[str] | None = lay.meta.get("joint_names")
        self.skeleton = [tuple(e) for e in lay.meta.get("skeleton", [])]
        self._mode = backgrounds
        self._median_frames = median_frames

        K, E = [], []
        for c in lay.cameras:
            k = c.K.copy()
            if size is not None:
                k[0] *= size / c.size[0]
                k[1] *= size / c.size[1]
            K.append(k)
            E.append(np.concatenate((c.R, c.t[:, None]), 1))
        self._K = torch.tensor(np.stack(K), dtype=torch.float32)
        self._E = torch.tensor(np.stack(E), dtype=torch.float32)
        self._hw = [
            (size, size) if size is not None else (c.size[1], c.size[0]) for c in lay.cameras
        ]
        self._background: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def _images(self, frame: str) -> torch.Tensor:
        return torch.stack([load_image(fs[frame], size=self.size)[0] for fs in self._files])

    def background(self) -> torch.Tensor | None:
        """(V, 3, H, W) each camera's background (files, else the median), or None with
        ``backgrounds="none"``; computed once."""
        if self._mode == "none":
            return None
        if self._background is None:
            n = len(self.frames)
            pick = sorted({round(x) for x in np.linspace(0, n - 1, min(n, self._median_frames))})
            out = []
            for v, (c, bg) in enumerate(zip(self.cameras, self._lay.backgrounds)):
                if bg is not None and self._mode != "median":
                    out.append(load_image(bg, size=self.size)[0])
                else:
                    from kp3d.data.background import median_background

                    frames = torch.stack(
                        [
                            load_image(self._files[v][self.frames[i]], size=self.size)[0]
                            for i in pick
                        ]
                    )
                    out.append(median_background(frames))
            self._background = torch.stack(out)
        return self._background

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = i % len(self)
        frame = self.frames[i]
        V = len(self.cameras)
        fields: dict[str, Any] = {
            "image": self._images(frame),
            "intrinsics": self._K.clone(),
            "extrinsics": self._E.clone(),
            "background": self.background(),
            "view": torch.arange(V),
            "instance": torch.tensor(i),
        }
        if self.joints3d is not None:
            X = torch.tensor(self.joints3d[i], dtype=torch.float64)
            E = self._E.double()
            cam = transform_points(X, E[:, :, :3], E[:, :, 3])  # (V, J, 3)
            z = cam[..., 2:]
            # Joints behind a camera are invisible there; the depth floor keeps them finite.
            kp2d = project_pinhole(cam, self._K.double(), min_depth=1e-9)
            h = torch.tensor([hw[0] for hw in self._hw], dtype=torch.float64)[:, None]
            w = torch.tensor([hw[1] for hw in self._hw], dtype=torch.float64)[:, None]
            vis = (
                (z[..., 0] > 0)
                & (kp2d[..., 0] >= 0)
                & (kp2d[..., 0] < w)
                & (kp2d[..., 1] >= 0)
                & (kp2d[..., 1] < h)
            )
            fields.update(kp3d=cam.float(), kp2d=kp2d.float(), vis=vis)
        return Sample(**fields, name=frame)


def open(
    path: Path,
    *,
    size: int | None = None,
    split: str | None = None,
    strict: bool = False,
    backgrounds: BackgroundMode = "auto",
    median_frames: int = 200,
) -> RigSet:
    """Open a real-rig recording (layout in the module doc).

    Args:
        path: the recording's folder.
        size: load every image at ``size x size`` (intrinsics scaled exactly).
        split: must be None (a recording has no splits).
        strict: an unreadable image is an error instead of a skipped moment.
        backgrounds: ``auto``: the files where present, the median elsewhere; ``files``: the
            files, required for every camera; ``median``: always the per-pixel median of each
            camera's frames; ``none``: no background field.
        median_frames: frames (evenly spaced) the median reads per camera.

    Raises:
        DataError: bad calibration or layout (naming the camera or file); ConfigError: bad
            options.
    """
    _no_split(path, split)
    return RigSet(
        Path(path), size=size, strict=strict, backgrounds=backgrounds, median_frames=median_frames
    )


__all__ = [
    "Camera",
    "RigSet",
    "baselines",
    "detect",
    "open",
    "parse_camera",
    "read_cameras",
    "scan",
]
