"""Lifting set ``discovered`` (issue 27): keypoints that ``autolink3d`` discovered on synthetic
faces, with the exact 3D surface point under each as ground truth.

Building it (all cached in one folder, ``cache``, so autolink3d is trained once):

1. ``kp3d synth face`` (the Surrey Face Model, ``SHARED/assets/sfm``) writes
   :attr:`DiscoveredConfig.n_images` training images of generator seed ``seed`` and
   :data:`_lifting.N_TEST` test images of seed ``seed + 1`` (64 px by default).
2. ``autolink3d`` (K = :attr:`DiscoveredConfig.k`) is trained on the training images by
   :func:`kp3d.engine.train` for :attr:`DiscoveredConfig.minutes` minutes of process CPU time
   (the caller sets the thread count; the benchmark runs on one thread), seed ``seed``.
3. Its predicted 2D keypoints on the first :data:`_lifting.N_TRAIN` training images and on the
   test images are the lifting set's 2D input, as predicted (pixels of the 64-px images).
4. Ground truth: the face generator re-renders the same images (same seed and index, so the same
   faces and cameras) :attr:`DiscoveredConfig.supersample` times larger, which gives its exact
   depth buffer (float32 camera z at every pixel centre, 0 off the face) on a finer grid;
   :func:`surface_points` takes the surface point under each keypoint. Rule: the keypoint is
   visible when the (fine) pixel that contains it is on the face (depth > 0) and it lies inside
   the image; its depth is the bilinear interpolation of *inverse* depth between the four pixel
   centres around it when all four are on the face (exact on a plane, as 1/z is affine in
   (u, v) there, so exact inside a mesh triangle), else the depth of the pixel that contains it;
   the point is the keypoint's pixel ray at that depth (:func:`kp3d.geometry.unproject_pinhole`).
   Keypoints off the face (the mask) have visibility 0.
5. Units: the generator's camera frame is metres (x right, y down, z forward, a perspective
   camera). The lifting protocol needs x, y equal to the 2D input, so the set is the image frame
   of :func:`kp3d.evaluation.image_frame_3d`, what ``kp3d evaluate`` does with camera-frame
   ground truth: ``(u, v, s (z - mean z))`` in pixels, ``s`` the per-image least-squares scale
   from the camera x, y to the pixels (visible keypoints only). Invisible keypoints keep their
   predicted (u, v) and z = 0; they are masked by ``vis`` in training and scoring.

``cache/discovered.json`` records the options, the counts and how long each stage took;
``cache/ground_truth.npz`` the 2D keypoints, camera-frame points (metres, NaN where invisible)
and visibility of both splits.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class DiscoveredConfig:
    """How set ``discovered`` is built (module doc); the one source of its defaults."""

    minutes: float = 10.0
    """autolink3d's training budget, minutes of process CPU time."""
    k: int = 16
    """Keypoints autolink3d discovers."""
    size: int = 64
    """Image side, pixels."""
    n_images: int = 4000
    """Training images of autolink3d; the first N_TRAIN of them are the lifting training set."""
    supersample: int = 4
    """The ground-truth depth buffer is rendered this many times finer than the images."""
    batch: int = 64
    """Images per batch when predicting and rendering."""


class SurfacePoints(NamedTuple):
    """Surface points under 2D keypoints (:func:`surface_points`)."""

    points: Tensor
    """(B, K, 3) float64 camera-frame points; NaN where ``vis`` is False."""
    vis: Tensor
    """(B, K) bool: the keypoint lies on the surface."""


def surface_points(kp2d: Tensor, depth: Tensor, K: Tensor) -> SurfacePoints:
    """The camera-frame surface point under each 2D keypoint, from an exact depth buffer.

    Visible: inside the image and the pixel containing the keypoint has depth > 0. Depth: the
    bilinear interpolation of ``1 / depth`` between the four pixel centres around the keypoint
    when all four have depth > 0 (exact on a plane: ``1 / z`` is affine in (u, v) there), else
    the containing pixel's depth. The point is ``z K^-1 (u, v, 1)``.

    Args:
        kp2d: (B, K, 2) pixels (continuous coordinates, pixel centres at +0.5).
        depth: (B, H, W) camera z per pixel centre, 0 where there is no surface.
        K: (B, 3, 3) pinhole intrinsics of the depth buffer's pixels.

    Returns:
        :class:`SurfacePoints`, float64.
    """
    from kp3d.geometry import unproject_pinhole

    if kp2d.ndim != 3 or kp2d.shape[-1] != 2:
        raise ValueError(f"surface_points: kp2d must be (B, K, 2), got {tuple(kp2d.shape)}")
    if depth.ndim != 3 or depth.shape[0] != kp2d.shape[0]:
        raise ValueError(
            f"surface_points: depth must be ({kp2d.shape[0]}, H, W), got {tuple(depth.shape)}"
        )
    if K.shape != (kp2d.shape[0], 3, 3):
        raise ValueError(f"surface_points: K must be ({kp2d.shape[0]}, 3, 3), got {tuple(K.shape)}")
    H, W = depth.shape[-2:]
    uv, d = kp2d.double(), depth.double().flatten(1)
    u, v = uv.unbind(-1)

    def read(col: Tensor, row: Tensor) -> Tensor:
        """Depth at integer pixels (B, K); 0 outside the image."""
        inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
        at = (row.clamp(0, H - 1) * W + col.clamp(0, W - 1)).long()
        return torch.where(inside, d.gather(1, at), torch.zeros_like(u))

    finite = uv.isfinite().all(-1)
    u, v = u.nan_to_num(-1.0), v.nan_to_num(-1.0)
    inside = finite & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    own = read(u.floor(), v.floor())
    vis = inside & (own > 0)
    # The four pixel centres around (u, v): column c0 or c0 + 1, row r0 or r0 + 1.
    c0, r0 = (u - 0.5).floor(), (v - 0.5).floor()
    a, b = u - 0.5 - c0, v - 0.5 - r0
    corners = [
        (read(c0, r0), (1 - a) * (1 - b)),
        (read(c0 + 1, r0), a * (1 - b)),
        (read(c0, r0 + 1), (1 - a) * b),
        (read(c0 + 1, r0 + 1), a * b),
    ]
    all_on = torch.stack([z > 0 for z, _ in corners]).all(0)
    inverse = sum(w / z.clamp_min(1e-12) for z, w in corners)
    z = torch.where(all_on, 1 / inverse, own)
    z = torch.where(vis, z, torch.ones_like(z))  # any positive depth; masked below
    points = unproject_pinhole(uv.nan_to_num(0.0), z, K.double())
    return SurfacePoints(points.masked_fill(~vis[..., None], float("nan")), vis)


def image_frame(kp2d: Tensor, points: Tensor, vis: Tensor) -> Tensor:
    """The set's ground truth (N, K, 3) float64 in pixels: :func:`kp3d.evaluation.image_frame_3d`
    of the visible camera-frame ``points`` (N, K, 3) with the 2D keypoints ``kp2d`` (N, K, 2);
    invisible keypoints (``vis`` (N, K) False) get ``(u, v, 0)``."""
    from kp3d.evaluation import image_frame_3d

    kp2d = kp2d.double()
    hidden = points.double().masked_fill(~vis[..., None], float("nan"))
    out = image_frame_3d(hidden, kp2d)
    flat = torch.cat([kp2d, torch.zeros_like(kp2d[..., :1])], -1)
    return torch.where(vis[..., None], out, flat)


def _synthesise(folder: Path, sfm: Path, n: int, seed: int, size: int) -> Path:
    """``kp3d synth face`` into ``folder`` unless a set with these options is there."""
    from kp3d.cli import main as kp3d

    meta = folder / "meta.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        if (m["category"], m["n"], m["seed"], m["size"]) != ("face", n, seed, size):
            sys.exit(
                f"error: {folder} holds another set ({m['category']}, n {m['n']}, seed "
                f"{m['seed']}, size {m['size']}); choose another --discovered-cache"
            )
        return folder
    argv = ["synth", "face", "--n", str(n), "--seed", str(seed), "--size", str(size)]
    argv += ["--sfm-dir", str(sfm), "--out", str(folder), "--overwrite"]
    if kp3d(argv):
        sys.exit(f"error: kp3d synth face failed for {folder}")
    return folder


def _predict(run_dir: Path, folder: Path, n: int, cfg: DiscoveredConfig) -> Tensor:
    """(n, K, 2) autolink3d keypoints on the first ``n`` images of ``folder``."""
    from torch.utils.data import Subset

    from kp3d.data.adapters import open_dataset
    from kp3d.engine import load_run
    from kp3d.evaluation import collect

    run = load_run(run_dir)
    data = Subset(open_dataset(folder, size=cfg.size), range(n))
    with torch.no_grad():
        kp2d = collect(run.model, data, batch_size=cfg.batch).pred.kp2d
    if kp2d is None or kp2d.shape != (n, cfg.k, 2):
        sys.exit(f"error: {run_dir}: expected (n, {cfg.k}, 2) keypoints, got {kp2d}")
    return kp2d.double()


def _ground_truth(sfm: Path, kp2d: Tensor, seed: int, cfg: DiscoveredConfig) -> SurfacePoints:
    """Surface points under ``kp2d`` (N, K, 2) on images 0..N-1 of generator seed ``seed``."""
    from kp3d.data.synth import get_category, render_indices

    gen = get_category("face", sfm_dir=sfm)
    f = cfg.supersample
    out = []
    for lo in range(0, len(kp2d), cfg.batch):
        idx = range(lo, min(lo + cfg.batch, len(kp2d)))
        r = render_indices(gen, idx, size=cfg.size * f, seed=seed)
        K = r.intrinsics[:, 0].double()
        out.append(surface_points(kp2d[lo : idx.stop] * f, r.depth[:, 0], K))
    return SurfacePoints(torch.cat([o.points for o in out]), torch.cat([o.vis for o in out]))


def discovered_arrays(
    shared: Path, cache: Path, seed: int, cfg: DiscoveredConfig
) -> dict[str, Tensor]:
    """``kp2d_train``, ``points_train``, ``vis_train`` and the same for ``test`` (module doc),
    built into ``cache`` or read from it."""
    from _lifting import N_TEST, N_TRAIN

    sfm = shared / "assets" / "sfm"
    if not sfm.is_dir():
        sys.exit(
            f"error: {sfm} is missing: set discovered renders Surrey Face Model faces "
            "(pass --shared PATH, the shared data folder)"
        )
    if cfg.n_images < N_TRAIN:
        sys.exit(f"error: discovered: n_images {cfg.n_images} < the {N_TRAIN} training faces")
    cache.mkdir(parents=True, exist_ok=True)
    record = cache / "discovered.json"
    options = {**asdict(cfg), "seed": seed, "n_train": N_TRAIN, "n_test": N_TEST}
    done = json.loads(record.read_text()) if record.exists() else None
    if done is not None and done["options"] != options:
        sys.exit(
            f"error: {record} was built with {done['options']}, not {options}; "
            "choose another --discovered-cache"
        )
    arrays = cache / "ground_truth.npz"
    if done is not None and arrays.is_file():
        with np.load(arrays) as z:
            return {k: torch.from_numpy(z[k]) for k in z.files}

    from kp3d.data.adapters import open_dataset
    from kp3d.engine import train

    seconds: dict[str, float] = {}

    def timed(stage: str, t0: float) -> None:
        seconds[stage] = round(time.process_time() - t0, 1)
        print(f"discovered: {stage} took {seconds[stage]:.0f} CPU s", flush=True)

    t0 = time.process_time()
    # `kp3d synth` renders in worker processes: their CPU time is not this process's.
    w0 = time.perf_counter()
    train_dir = _synthesise(cache / "face-train", sfm, cfg.n_images, seed, cfg.size)
    test_dir = _synthesise(cache / "face-test", sfm, N_TEST, seed + 1, cfg.size)
    timed("synth", t0)
    seconds["synth_wall"] = round(time.perf_counter() - w0, 1)

    t0 = time.process_time()
    run_dir = cache / "autolink3d"
    if not (run_dir / "result.json").exists():
        train(
            "autolink3d",
            open_dataset(train_dir, size=cfg.size),
            run_dir,
            method_config={"k": cfg.k, "image_size": cfg.size},
            train_config={
                "steps": None,
                "minutes": cfg.minutes,
                "clock": "cpu",
                "seed": seed,
                "device": "cpu",
            },
            resume=(run_dir / "config.json").exists(),
            data_info={"path": str(train_dir.resolve()), "size": cfg.size, "format": None},
            progress_bar=False,
        )
    timed("autolink3d training", t0)

    t0 = time.process_time()
    kp2d = {"train": _predict(run_dir, train_dir, N_TRAIN, cfg)}
    kp2d["test"] = _predict(run_dir, test_dir, N_TEST, cfg)
    timed("autolink3d prediction", t0)

    t0 = time.process_time()
    out: dict[str, Tensor] = {}
    for split, data_seed in (("train", seed), ("test", seed + 1)):
        gt = _ground_truth(sfm, kp2d[split], data_seed, cfg)
        out |= {f"kp2d_{split}": kp2d[split], f"points_{split}": gt.points, f"vis_{split}": gt.vis}
    timed("ground truth", t0)

    np.savez(arrays, **{k: v.numpy() for k, v in out.items()})
    visible = {s: float(out[f"vis_{s}"].double().mean()) for s in ("train", "test")}
    record.write_text(
        json.dumps({"options": options, "cpu_s": seconds, "visible": visible}, indent=2) + "\n"
    )
    print(f"discovered: visible keypoints {visible}", flush=True)
    return out
