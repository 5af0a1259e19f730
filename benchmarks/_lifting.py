"""Lifting sets shared by the lifting benchmarks (``lifting_sets.py``): each set is 3D ground
truth in an image frame (x, y = the 2D input, z = depth in the same units) split into train and
test, plus how it is written as ``.npz`` files for ``kp3d train`` / ``kp3d evaluate``.

Sets:

``aflw``
    AFLW2000-3D's 68 landmarks (pixels, 3DMM fits), faces 0-1599 train, 1600-1999 test, in file
    order (as ``aflw_lifting.py``).
``sfm``
    Random Surrey Face Model faces from kp3d's own ``face`` generator
    (:meth:`kp3d.data.synth.face.FaceCategory.sample`: identity, expression and head pose
    yaw +-70, pitch +-30, roll +-20 degrees, uniform), its exact 3D landmarks seen by an
    orthographic camera, in millimetres. Landmarks: the 50 iBUG landmarks that are fixed mesh
    vertices (the 68 minus the 16 view-dependent contour landmarks 1-8 and 10-17 and the two
    inner mouth corners 61 and 65, which the model lacks): iBUG 9 (chin) and 18-68 but 61, 65.
    Faces 0-1599 train, 1600-1999 test. A stand-in for the maintainers' held-out set of
    issue 27, built the same way.
``aflw50``
    AFLW2000-3D restricted to the 50 landmarks of ``sfm`` (no jaw contour): the same faces with
    a flatter point set, which isolates the landmark set from the data's source and units.
``creature``, ``quadruped``
    3D joints of kp3d's procedural categories (``multicategory_lifting.py``'s
    :func:`skeletons`: orthographic camera, 100 px per world unit), 1600 train / 400 test.
``discovered``
    The 16 keypoints ``autolink3d`` discovers on 64-px ``kp3d synth face`` images (trained
    inside the benchmark, cached), its predicted 2D keypoints as the input and the exact face
    surface point under each keypoint (the generator's depth buffer) as the ground truth, in
    the weak-perspective image frame (pixels); 1600 training images of the set autolink3d
    trained on, 400 test images of another generator seed. Built by :mod:`_discovered` (the
    rule and the units are written there).

Every set but ``discovered`` has all keypoints visible; there, keypoints off the face have
visibility 0 (``train_vis``, ``test_vis``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _discovered import DiscoveredConfig, discovered_arrays, image_frame
from torch import Tensor

N_TRAIN, N_TEST = 1600, 400
SET_NAMES = ("aflw", "sfm", "creature", "quadruped", "discovered")
"""The benchmark's sets; ``aflw50`` (:data:`EXTRA_SETS`) only on request."""
EXTRA_SETS = ("aflw50",)


@dataclass(frozen=True)
class LiftingSet:
    """One lifting set: ground truth (N, K, 3) in an image frame (x, y = input, z = depth)."""

    name: str
    units: str
    train: Tensor
    """(N_train, K, 3) float64; training sees only ``train[..., :2]``."""
    test: Tensor
    """(N_test, K, 3) float64."""
    train_vis: Tensor | None = None
    """(N_train, K) bool, or None: all visible."""
    test_vis: Tensor | None = None
    """(N_test, K) bool, or None: all visible."""


def aflw_set(shared: Path) -> LiftingSet:
    """AFLW2000-3D (see the module doc); exits with a message when the file is missing."""
    path = shared / "data" / "aflw2000_3d" / "AFLW2000-3D.pts68.npy"
    if not path.is_file():
        sys.exit(f"error: {path} is missing (pass --shared PATH, the shared data folder)")
    pts = np.load(path)
    if pts.shape != (2000, 3, 68):
        sys.exit(f"error: {path}: expected shape (2000, 3, 68), got {pts.shape}")
    faces = torch.from_numpy(pts.transpose(0, 2, 1).astype(np.float64))
    return LiftingSet("aflw", "px", faces[:N_TRAIN], faces[N_TRAIN:])


SFM_LANDMARKS = tuple(i for i in range(8, 68) if i not in range(9, 17) and i not in (60, 64))
"""0-based iBUG indices of the 50 fixed-vertex landmarks of set ``sfm``."""


def sfm_faces(shared: Path, n: int, seed: int) -> Tensor:
    """(n, 50, 3) float64 camera-frame landmarks of random SFM faces in millimetres: x right,
    y down, z away from the camera (kp3d's frame), orthographic, so x, y are the 2D input.

    Identity, expression and head pose are drawn by the ``face`` generator's own ``sample``
    (one view per face, the first view's yaw/pitch/roll); the camera rotation is the one its
    renderer applies, :func:`kp3d.data.synth.scene.head_rotation`.
    """
    from kp3d.data.synth import scene
    from kp3d.data.synth.face import FaceCategory

    folder = shared / "assets" / "sfm"
    if not folder.is_dir():
        sys.exit(f"error: {folder} is missing (pass --shared PATH, the shared data folder)")
    cat = FaceCategory.from_dir(folder)
    vertex = cat._fixed[list(SFM_LANDMARKS)]
    if bool((vertex < 0).any()):
        sys.exit(f"error: {folder}: the landmark mapping lacks some of the 50 fixed landmarks")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = cat.sample(rng, 1, False)
        verts = torch.from_numpy(p["verts"][:-1] * 1e3)[vertex]  # mm, model frame
        R = scene.head_rotation(torch.from_numpy(p["view_ypr"][0]))
        out.append(verts @ R.T)
    return torch.stack(out)


def sfm_set(shared: Path, seed: int = 0) -> LiftingSet:
    """Set ``sfm`` (module doc), faces from generator seed ``seed``."""
    faces = sfm_faces(shared, N_TRAIN + N_TEST, seed)
    return LiftingSet("sfm", "mm", faces[:N_TRAIN], faces[N_TRAIN:])


def skeleton_set(name: str, seed: int = 0) -> LiftingSet:
    """Set ``creature`` or ``quadruped`` (module doc)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from multicategory_lifting import skeletons

    cam, _ = skeletons(name, N_TRAIN + N_TEST, seed)
    cam = cam.double()
    return LiftingSet(name, "px", cam[:N_TRAIN], cam[N_TRAIN:])


def discovered_set(
    shared: Path, cache: Path, seed: int = 0, config: DiscoveredConfig | None = None
) -> LiftingSet:
    """Set ``discovered`` (:mod:`_discovered`): autolink3d trained, and its ground truth built,
    in ``cache`` (reused when there)."""
    a = discovered_arrays(shared, cache, seed, config or DiscoveredConfig())
    train = image_frame(a["kp2d_train"], a["points_train"], a["vis_train"])
    test = image_frame(a["kp2d_test"], a["points_test"], a["vis_test"])
    return LiftingSet("discovered", "px", train, test, a["vis_train"], a["vis_test"])


def load_set(
    name: str,
    shared: Path,
    seed: int = 0,
    *,
    cache: Path | None = None,
    discovered: DiscoveredConfig | None = None,
) -> LiftingSet:
    """The set ``name`` (:data:`SET_NAMES`, :data:`EXTRA_SETS`); ``seed`` draws the synthetic
    ones; ``cache`` is where set ``discovered`` is built (options ``discovered``)."""
    if name == "aflw":
        return aflw_set(shared)
    if name == "aflw50":
        full, idx = aflw_set(shared), list(SFM_LANDMARKS)
        return LiftingSet("aflw50", "px", full.train[:, idx], full.test[:, idx])
    if name == "sfm":
        return sfm_set(shared, seed)
    if name in ("creature", "quadruped"):
        return skeleton_set(name, seed)
    if name == "discovered":
        if cache is None:
            raise SystemExit("error: set discovered needs a cache folder")
        return discovered_set(shared, cache, seed, discovered)
    valid = ", ".join(SET_NAMES + EXTRA_SETS)
    raise SystemExit(f"error: unknown lifting set {name!r}; valid: {valid}")


def scaled(data: LiftingSet, factor: float) -> LiftingSet:
    """The same set in other units: every coordinate times ``factor``."""
    return LiftingSet(
        f"{data.name}x{factor:g}",
        f"{data.units}/{factor:g}",
        data.train * factor,
        data.test * factor,
        data.train_vis,
        data.test_vis,
    )


def write_npz(data: LiftingSet, folder: Path) -> tuple[Path, Path]:
    """``train.npz`` (kp2d only: training never sees 3D) and ``test.npz`` (kp2d and kp3d), the
    ``keypoints_npz`` format of ``kp3d train`` / ``kp3d evaluate``; both with ``vis`` when the
    set has it."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = folder / "train.npz", folder / "test.npz"
    train_vis = {} if data.train_vis is None else {"vis": data.train_vis.numpy()}
    test_vis = {} if data.test_vis is None else {"vis": data.test_vis.numpy()}
    np.savez(train, kp2d=data.train[..., :2].numpy().astype(np.float32), **train_vis)
    np.savez(
        test,
        kp2d=data.test[..., :2].numpy().astype(np.float32),
        kp3d=data.test.numpy().astype(np.float32),
        **test_vis,
    )
    return train, test
