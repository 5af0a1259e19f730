"""Sets written by ``kp3d synth`` (:mod:`kp3d.data.synth`): writer and reader.

Layout (N instances, V views each, K keypoints, S x S images)::

    ROOT/
      meta.json          what the set is (below)
      annotations.npz    every label, arrays with leading axes (N, V)
      images/<i>.png     RGB, 8 bit             <i> = %06d instance index (+ "_v<view>" if V > 1)
      depth/<i>.png      grey, 16 bit           camera z / depth_scale; 0 = background, so the
                                                object's mask is depth > 0

``meta.json``: ``format`` ("kp3d-synth"), ``format_version``, ``generator``,
``generator_version``, ``kp3d_version``, ``category`` and ``category_id`` (index in
:data:`kp3d.data.synth.CATEGORIES`), ``n``, ``views``, ``pairs``, ``size``, ``seed``, ``start``
(index of the first instance), ``options`` (everything else the generator was given:
``sfm_dir``, the face model's folder or null; ``articulation``, the fraction of each joint's
angle range the poses span, the value actually used, null for ``face`` and ``head``; sets
written before the option existed lack the key and were posed with the default of the kp3d that
wrote them; ``azimuth``, the camera's azimuth range in degrees as ``[lo, hi]``, null for
``face`` and ``head``, absent from sets written before the option, whose cameras went all
around; ``appearance``, how faces were rendered, "default" or "shifted" (see
:mod:`kp3d.data.synth.face`), the value actually used, null for the other categories, absent
from sets written before the option, which have the default look),
``keypoint_names`` (K), ``skeleton`` (edges as index pairs), ``absent`` (keypoints the category
never defines: ``vis`` False, coordinates 0), ``view_dependent`` (keypoints that are not fixed
points of the instance, e.g. a face's outline), ``units`` ("m"), ``depth_scale`` (metres per
depth-PNG unit) and ``files`` (the file name pattern).

``annotations.npz``: ``kp2d`` (N, V, K, 2) float32 pixels (continuous coordinates, pixel
centres at +0.5, see :mod:`kp3d.geometry`); ``vis`` (N, V, K) bool (occlusion-based, from the
depth buffer); ``kp3d`` (N, V, K, 3) float32 camera frame (x right, y down, z forward, metres);
``intrinsics`` (N, V, 3, 3) and ``extrinsics`` (N, V, 3, 4) float32, world (the instance's own
frame) to camera; ``instance`` (N,) int64; with ``pairs`` also ``relative_rotation`` (N, 3, 3),
``R_1 R_0^T``, which maps directions in view 0's camera frame to view 1's.
Rig sets (``--rig V``, :mod:`kp3d.data.synth.rig`) add ``joints3d`` (N, K, 3) float32 world
joints (y up, metres, floor at y = 0) and ``clip`` (N,) int64 motion clip of each moment; their
extrinsics are the same for every moment (fixed cameras; world = the room's frame), meta.json
adds ``rig`` (V), ``sequences`` and ``backgrounds``, and ``backgrounds/cam<v>.png`` holds each
camera's empty room (8-bit RGB), served as every sample's ``background`` (V, 3, S, S).
Everything is written to a temporary folder beside ROOT and renamed into place at the end, so
ROOT is never half-written (a failed run leaves what was there before).

Reading (:func:`open`): one :class:`Sample` per instance, with a leading view axis V on every
tensor field when ``V > 1`` (``views="flat"`` gives one sample per image instead), ``mask``
included (from the depth); ``size`` resizes images (antialiased bilinear), masks (the same
filter: soft edges) and depth (nearest) and scales ``kp2d`` and the intrinsics' first two rows
exactly; ``kp3d`` and ``extrinsics`` are unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from kp3d.data.images import load_image, report_skipped
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError

if TYPE_CHECKING:
    from kp3d.data.synth import Appearance

FORMAT = "kp3d-synth"
FORMAT_VERSION = 1
DEPTH_SCALE = 1e-4
"""Metres per unit of the 16-bit depth PNGs (0.1 mm steps, up to 6.5 m)."""
ARRAYS = ("kp2d", "vis", "kp3d", "intrinsics", "extrinsics")
ViewMode = Literal["stack", "flat"]


def file_stem(instance: int, view: int, views: int) -> str:
    """File name (without extension) of one image of a set with ``views`` views per instance."""
    return f"{instance:06d}" if views == 1 else f"{instance:06d}_v{view}"


# -- writing -----------------------------------------------------------------------------------


def png_bytes(a: np.ndarray) -> bytes:
    """A PNG of ``a``: (H, W, 3) uint8 RGB, (H, W) uint8 grey or (H, W) uint16 grey.

    Unfiltered rows, zlib level 1: several times cheaper than Pillow's encoder for the small
    images written here, which matters at hundreds of images per second.
    """
    if (
        a.dtype not in (np.uint8, np.uint16)
        or a.ndim not in (2, 3)
        or (a.ndim == 3 and a.shape[2] != 3)
    ):
        raise ValueError(
            f"png_bytes: need (H, W, 3) uint8 or (H, W) uint8/uint16, got {a.shape} {a.dtype}"
        )
    h, w = a.shape[:2]
    rows = np.ascontiguousarray(a.astype(">u2") if a.dtype == np.uint16 else a).reshape(h, -1)
    raw = np.concatenate((np.zeros((h, 1), np.uint8), rows.view(np.uint8)), axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8 * a.itemsize, 2 if a.ndim == 3 else 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class _Job:
    category: str
    sfm_dir: str | None
    articulation: float | None
    azimuth: tuple[float, float] | None
    appearance: Appearance | None
    size: int
    seed: int
    views: int
    pairs: bool
    folder: str
    rig: int | None = None
    sequences: int = 1
    n: int = 0


def _render_and_save(job: _Job, indices: range) -> dict[str, np.ndarray]:
    """Render instances ``indices`` and write their PNGs; returns their annotation arrays."""
    from kp3d.data.synth import get_category, render_indices

    gen = get_category(
        job.category,
        sfm_dir=job.sfm_dir,
        articulation=job.articulation,
        azimuth=job.azimuth,
        appearance=job.appearance,
    )
    joints = None
    if job.rig is not None:
        from kp3d.data.synth import _one_thread
        from kp3d.data.synth.rig import get_rig, render_moments

        with torch.no_grad(), _one_thread():
            r, joints = render_moments(
                gen,
                indices,
                get_rig(job.rig, job.size, job.seed),  # type: ignore[arg-type]
                n=job.n,
                sequences=job.sequences,
                seed=job.seed,
            )
    else:
        r = render_indices(
            gen, indices, size=job.size, seed=job.seed, views=job.views, pairs=job.pairs
        )
    folder = Path(job.folder)
    image = (r.image.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    depth = (r.depth.double() / DEPTH_SCALE).round()
    if depth.max() > 65535:
        raise RuntimeError(
            f"depth {depth.max().item() * DEPTH_SCALE:.2f} m exceeds the 16-bit range"
        )
    depth = depth.numpy().astype(np.uint16)
    V = image.shape[1]
    for b, i in enumerate(indices):
        for v in range(V):
            stem = file_stem(i, v, V)
            (folder / "images" / f"{stem}.png").write_bytes(png_bytes(image[b, v]))
            (folder / "depth" / f"{stem}.png").write_bytes(png_bytes(depth[b, v]))
    out = {k: getattr(r, k).numpy() for k in ARRAYS}
    if joints is not None:
        out["joints3d"] = joints.numpy()
    if job.pairs:
        R = r.extrinsics[:, :, :, :3].double()
        out["relative_rotation"] = (R[:, 1] @ R[:, 0].transpose(-1, -2)).float().numpy()
    return out


def _worker_init() -> None:
    torch.set_num_threads(1)


def check_write(
    out: Path,
    n: int,
    *,
    size: int,
    seed: int,
    views: int,
    pairs: bool,
    start: int,
    workers: int,
    overwrite: bool,
    rig: int | None = None,
    sequences: int | None = None,
    category: str | None = None,
    azimuth: Sequence[float] | None = None,
) -> None:
    """The checks :func:`write` makes before any work.

    Raises:
        ConfigError: naming the bad option, or ``out`` exists (and is not an empty folder)
            without ``overwrite``.
    """
    from kp3d.data.synth import check_options

    check_options(size, views, pairs, n)
    if rig is None and sequences is not None:
        raise ConfigError("--sequences splits the moments of a --rig set; it needs --rig V")
    if rig is not None:
        from kp3d.data.synth.rig import check_rig

        if views != 1 or pairs:
            raise ConfigError("--rig V renders V fixed cameras; it excludes --views and --pairs")
        if start != 0:
            raise ConfigError(
                f"--rig sets start at moment 0 (the clips span the set), got --start {start}"
            )
        if azimuth is not None:
            raise ConfigError("--rig places its own cameras around the room; drop --azimuth")
        if category is not None and category not in ("creature", "quadruped"):
            raise ConfigError(f"--rig renders creature or quadruped, not {category!r}")
        check_rig(rig, 1 if sequences is None else sequences, n)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if start < 0 or seed < 0:
        raise ConfigError(f"seed and start must be >= 0, got seed={seed}, start={start}")
    if out.exists() and not overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise ConfigError(f"{out}: already exists; choose another folder or pass --overwrite")


def write(
    out: str | Path,
    category: str,
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    views: int = 1,
    pairs: bool = False,
    sfm_dir: str | Path | None = None,
    start: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    articulation: float | None = None,
    azimuth: Sequence[float] | None = None,
    rig: int | None = None,
    sequences: int | None = None,
    appearance: Appearance | None = None,
) -> Path:
    """Generate a synthetic set and write it to ``out`` (layout in the module doc).

    ``rig`` V (``creature`` / ``quadruped``): N moments seen by V fixed calibrated cameras in a
    room (:mod:`kp3d.data.synth.rig`), cut into ``sequences`` motion clips (default 1); the
    set gains ``backgrounds/cam<v>.png`` and the arrays ``joints3d`` and ``clip``.

    Instance ``i`` depends only on ``(seed, i)`` and the options, so any ``workers`` gives the
    same files. ``progress`` is called with the number of instances finished after each chunk.
    ``articulation`` (``creature`` / ``quadruped`` only) is the fraction of each joint's angle
    range that poses span; None keeps the category's default (see
    :func:`kp3d.data.synth.get_category`); ``azimuth`` (the same two) the camera's azimuth range
    in degrees, None all around; ``appearance`` (``face`` only) how faces are rendered, None
    or ``"default"`` the usual look, ``"shifted"`` settings the default never has
    (:mod:`kp3d.data.synth.face`).

    Raises:
        ConfigError: bad options, or ``out`` exists (and is not empty) without ``overwrite``.
    """
    from kp3d import __version__
    from kp3d.data.synth import (
        CATEGORIES,
        CHUNK,
        GENERATOR_VERSION,
        check_azimuth,
        effective_appearance,
        effective_articulation,
        effective_azimuth,
        get_category,
    )

    out = Path(out)
    check_write(
        out,
        n,
        size=size,
        seed=seed,
        views=views,
        pairs=pairs,
        start=start,
        workers=workers,
        overwrite=overwrite,
        rig=rig,
        sequences=sequences,
        category=category,
        azimuth=azimuth,
    )
    view_range = check_azimuth(category, azimuth)
    gen = get_category(
        category,
        sfm_dir=sfm_dir,
        articulation=articulation,
        azimuth=view_range,
        appearance=appearance,
    )
    V = rig if rig is not None else 2 if pairs else views
    S = 1 if sequences is None else sequences

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for sub in ("images", "depth"):
            (tmp / sub).mkdir(parents=True)
        job = _Job(
            category=category,
            sfm_dir=None if sfm_dir is None else str(sfm_dir),
            articulation=articulation,
            azimuth=view_range,
            appearance=appearance,
            size=size,
            seed=seed,
            views=views,
            pairs=pairs,
            folder=str(tmp),
            rig=rig,
            sequences=S,
            n=n,
        )
        if rig is not None:
            from kp3d.data.synth.rig import get_rig

            (tmp / "backgrounds").mkdir()
            bg = get_rig(rig, size, seed).background
            bg = (bg.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for v in range(rig):
                (tmp / "backgrounds" / f"cam{v}.png").write_bytes(png_bytes(bg[v]))
        chunks = [range(lo, min(lo + CHUNK, start + n)) for lo in range(start, start + n, CHUNK)]
        parts: list[dict[str, np.ndarray]] = []
        if workers == 1:
            for idx in chunks:
                parts.append(_render_and_save(job, idx))
                if progress:
                    progress(len(idx))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(
                workers, mp_context=mp.get_context("spawn"), initializer=_worker_init
            ) as pool:
                futures = [pool.submit(_render_and_save, job, idx) for idx in chunks]
                for idx, f in zip(chunks, futures):
                    parts.append(f.result())
                    if progress:
                        progress(len(idx))
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        arrays["instance"] = np.arange(start, start + n, dtype=np.int64)
        if rig is not None:
            from kp3d.data.synth.rig import clip_of

            arrays["clip"] = clip_of(n, S)
        np.savez(tmp / "annotations.npz", **arrays)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generator": "kp3d.data.synth",
            "generator_version": GENERATOR_VERSION,
            "kp3d_version": __version__,
            "category": category,
            "category_id": CATEGORIES.index(category),
            "n": n,
            "views": V,
            "pairs": pairs,
            "size": size,
            "seed": seed,
            "start": start,
            "options": {
                "sfm_dir": None if sfm_dir is None else str(Path(sfm_dir).resolve()),
                # The value used, not the one asked for: None means "the default", which a
                # later kp3d may change.
                "articulation": effective_articulation(gen),
                "azimuth": effective_azimuth(gen),
                "appearance": effective_appearance(gen),
            },
            "keypoint_names": list(gen.keypoint_names),
            "skeleton": [list(e) for e in gen.edges],
            "absent": list(gen.absent),
            "view_dependent": list(gen.view_dependent),
            "units": "m",
            "depth_scale": DEPTH_SCALE,
            "files": "%06d.png" if V == 1 else "%06d_v<view>.png",
        }
        if rig is not None:
            meta["rig"] = rig
            meta["sequences"] = S
            meta["backgrounds"] = "backgrounds/cam<view>.png"
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing what is there."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


# -- reading -----------------------------------------------------------------------------------


def detect(path: Path) -> bool:
    """A folder with a ``meta.json`` whose ``format`` is ``kp3d-synth``."""
    meta = path / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class SynthSet(Dataset[Sample]):
    """A ``kp3d synth`` set as :class:`Sample` objects (see the module doc).

    Attributes:
        meta: the parsed meta.json.
        keypoint_names: the K keypoint names.
        skeleton: the category's edges.
    """

    def __init__(
        self,
        root: Path,
        *,
        size: int | None = None,
        strict: bool = False,
        views: ViewMode = "stack",
    ) -> None:
        if views not in ("stack", "flat"):
            raise ConfigError(f"views must be 'stack' or 'flat', got {views!r}")
        if size is not None and size < 1:
            raise ConfigError(f"size must be positive, got {size}")
        self.root, self.size, self.mode = root, size, views
        self.meta = self._read_meta(root / "meta.json")
        self.keypoint_names: list[str] = list(self.meta["keypoint_names"])
        self.skeleton = [tuple(e) for e in self.meta["skeleton"]]
        self.stored, self.views = int(self.meta["size"]), int(self.meta["views"])
        self._arrays = self._read_arrays(root / "annotations.npz")
        instances = self._arrays["instance"]

        missing: list[tuple[Path, str]] = []
        present = {
            d: set(os.listdir(root / d)) if (root / d).is_dir() else set()
            for d in ("images", "depth")
        }
        keep = []
        for row, i in enumerate(instances):
            bad = [
                root / d / f"{file_stem(int(i), v, self.views)}.png"
                for v in range(self.views)
                for d in present
                if f"{file_stem(int(i), v, self.views)}.png" not in present[d]
            ]
            if bad:
                missing.append((bad[0], f"{bad[0]}: missing"))
            else:
                keep.append(row)
        report_skipped(missing, len(instances), strict=strict, what="instances")
        self._rows = np.array(keep, dtype=np.int64)
        scale = 1.0 if size is None else size / self.stored
        self._scale = scale
        K = torch.from_numpy(self._arrays["intrinsics"]).clone()
        K[..., :2, :] *= scale
        self._t = {
            "kp2d": torch.from_numpy(self._arrays["kp2d"]) * scale,
            "vis": torch.from_numpy(self._arrays["vis"]),
            "kp3d": torch.from_numpy(self._arrays["kp3d"]),
            "intrinsics": K,
            "extrinsics": torch.from_numpy(self._arrays["extrinsics"]),
        }
        self._category = torch.tensor(int(self.meta["category_id"]))
        self.joints3d: np.ndarray | None = self._arrays.get("joints3d")
        """Rig sets: (N, K, 3) world joints (metres) of every stored moment, else None."""
        self.clips: np.ndarray | None = self._arrays.get("clip")
        """Rig sets: (N,) motion clip of every stored moment, else None."""
        self._background: torch.Tensor | None = None
        if "rig" in self.meta:
            self._background = torch.stack(
                [
                    load_image(root / "backgrounds" / f"cam{v}.png", size=size)[0]
                    for v in range(self.views)
                ]
            )

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any]:
        try:
            meta = json.loads(path.read_text())
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
        except ValueError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{path}: not a kp3d synth set (format is not {FORMAT!r})")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise DataError(
                f"{path}: format version {meta.get('format_version')} is newer than "
                f"this kp3d reads ({FORMAT_VERSION}); update kp3d"
            )
        need = ("n", "views", "size", "keypoint_names", "skeleton", "category_id")
        lacking = [k for k in need if k not in meta]
        if lacking:
            raise DataError(f"{path}: missing {', '.join(lacking)}")
        return meta

    def _read_arrays(self, path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read ({e})") from e
        n, V, K = int(self.meta["n"]), self.views, len(self.keypoint_names)
        expect = {
            "kp2d": (n, V, K, 2),
            "vis": (n, V, K),
            "kp3d": (n, V, K, 3),
            "intrinsics": (n, V, 3, 3),
            "extrinsics": (n, V, 3, 4),
            "instance": (n,),
        }
        if "rig" in self.meta:
            expect.update(joints3d=(n, K, 3), clip=(n,))
        for k, shape in expect.items():
            if k not in arrays:
                raise DataError(f"{path}: missing array {k!r}")
            if arrays[k].shape != shape:
                raise DataError(
                    f"{path}: {k} has shape {arrays[k].shape}, meta.json implies {shape}"
                )
        return arrays

    def __len__(self) -> int:
        return len(self._rows) * (self.views if self.mode == "flat" else 1)

    def _load(self, instance: int, view: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stem = file_stem(instance, view, self.views)
        image = load_image(self.root / "images" / f"{stem}.png", size=self.size)[0]
        path = self.root / "depth" / f"{stem}.png"
        try:
            with Image.open(path) as img:
                depth = np.asarray(img, dtype=np.float32)
        except Exception as e:
            raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
        mask = (depth > 0).astype(np.float32)
        if self.size is not None and depth.shape != (self.size, self.size):
            to = (self.size, self.size)
            mask = np.asarray(Image.fromarray(mask).resize(to, Image.Resampling.BILINEAR))
            depth = np.asarray(Image.fromarray(depth).resize(to, Image.Resampling.NEAREST))
        depth = depth * float(self.meta.get("depth_scale", DEPTH_SCALE))
        return image, torch.from_numpy(mask.copy())[None], torch.from_numpy(depth.copy())[None]

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = i % len(self)
        flat = self.mode == "flat"
        row = int(self._rows[i // self.views if flat else i])
        instance = int(self._arrays["instance"][row])
        views = [i % self.views] if flat else list(range(self.views))
        loaded = [self._load(instance, v) for v in views]
        image, mask, depth = (torch.stack(x) for x in zip(*loaded))
        fields = {k: t[row, views] for k, t in self._t.items()}
        fields.update(image=image, mask=mask, depth=depth)
        if self._background is not None:
            fields["background"] = self._background[views]
        multiview = self.views > 1 and not flat
        if not multiview:
            fields = {k: t[0] for k, t in fields.items()}
        view = (
            torch.tensor(views)
            if multiview
            else (torch.tensor(views[0]) if self.views > 1 else None)
        )
        return Sample(
            **fields,
            view=view,
            instance=torch.tensor(instance),
            category=self._category,
            name=file_stem(instance, views[0], self.views) if not multiview else f"{instance:06d}",
        )


def open(
    path: Path,
    *,
    size: int | None = None,
    split: str | None = None,
    strict: bool = False,
    views: ViewMode = "stack",
) -> SynthSet:
    """Open a ``kp3d synth`` set (layout in the module doc).

    Args:
        path: the set's folder.
        size: resize to ``size x size`` (coordinates and intrinsics scaled exactly).
        split: synthetic sets have no splits; must be None (generate a test set with another
            seed).
        strict: a missing image, mask or depth file is an error instead of a logged skip.
        views: ``"stack"``: one sample per instance, fields with a leading V axis when the set
            is multi-view; ``"flat"``: one sample per image.

    Raises:
        DataError: not a readable synth set; ConfigError: a split was asked for.
    """
    if split is not None:
        raise ConfigError(
            f"{path}: a kp3d synth set has no splits (asked for {split!r}); "
            "generate a separate set with another --seed for testing"
        )
    return SynthSet(Path(path), size=size, strict=strict, views=views)
