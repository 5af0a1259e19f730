"""Shared test set-up: one intra-op thread per test worker (pytest-xdist runs two on 2 cores);
a tiny creature run; a tiny Surrey-Face-Model-like folder, written byte by byte from the
documented layout (``../shared/assets/sfm/FORMAT.md``), independently of the reader under
test."""

import json
import math
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("KP3D_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``train`` (16 creature images, 32 px, seed 0), ``test`` (8, seed 1) and
    ``run``, autolink3d with K = 4 trained 2 steps on ``train``: for the tests that need a run
    of an image method (CLI round trip, export, video, API). Tests write only new names in it."""
    from kp3d.cli import main

    root = tmp_path_factory.mktemp("tiny_run")
    for name, n, seed in (("train", 16, 0), ("test", 8, 1)):
        argv = ["synth", "creature", "--n", str(n), "--size", "32", "--seed", str(seed)]
        assert main([*argv, "--out", str(root / name)]) == 0
    train = ["train", "--method", "autolink3d", "--data", str(root / "train")]
    options = ["--k", "4", "--size", "32", "--heatmap-size", "8", "--steps", "2"]
    options += ["--batch-size", "4", "--log-every", "1", "--perceptual", "none", "--w-pixel", "1"]
    assert main([*train, "--out", str(root / "run"), *options]) == 0
    return root


class TinyModel(NamedTuple):
    folder: Path
    mean: np.ndarray  # (N, 3)
    basis: np.ndarray  # (3N, C)
    eigenvalues: np.ndarray  # (C,)
    triangles: np.ndarray  # (F, 3)
    texcoords: np.ndarray  # (N, 2)
    names: tuple[str, ...]
    offsets: np.ndarray  # (E, N, 3)
    mapping: dict[int, int]
    right: list[int]
    left: list[int]


def _matrix(m: np.ndarray) -> bytes:
    m = np.asarray(m, dtype=np.float32)
    return struct.pack("<ii", *m.shape) + m.T.astype("<f4").tobytes()  # column-major


def _dome(
    rings: int = 8, segments: int = 16, radius: float = 80.0
) -> tuple[np.ndarray, np.ndarray]:
    """A face-like open dome facing +z: vertex 0 at the front pole, rings out to 80 degrees."""
    verts = [(0.0, 0.0, radius)]
    for r in range(1, rings + 1):
        th = math.radians(80.0 * r / rings)
        for s in range(segments):
            ph = 2 * math.pi * s / segments
            verts.append(
                (
                    radius * math.sin(th) * math.cos(ph),
                    radius * math.sin(th) * math.sin(ph) * 1.2,
                    radius * math.cos(th),
                )
            )
    tri = []
    ring = lambda r, s: 1 + (r - 1) * segments + s % segments
    for s in range(segments):
        tri.append((0, ring(1, s), ring(1, s + 1)))
    for r in range(1, rings):
        for s in range(segments):
            a, b, c, d = ring(r, s), ring(r, s + 1), ring(r + 1, s + 1), ring(r + 1, s)
            tri += [(a, d, c), (a, c, b)]
    return np.array(verts), np.array(tri)


def write_tiny_sfm(folder: Path, seed: int = 0) -> TinyModel:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    mean, tri = _dome()
    n, c = len(mean), 3
    basis = np.linalg.qr(rng.normal(size=(3 * n, c)))[0]
    eig = np.array([16.0, 9.0, 4.0])
    tc = rng.uniform(0, 1, size=(n, 2))
    body = (
        struct.pack("<I", 1) + _matrix(mean.reshape(-1, 1)) + _matrix(basis) + _matrix(eig[:, None])
    )
    body += struct.pack("<Q", len(tri)) + tri.astype("<i4").tobytes()
    body += _matrix(np.zeros((0, 1))) + _matrix(np.zeros((0, 0))) + _matrix(np.zeros((0, 1)))
    body += struct.pack("<Q", 0) + struct.pack("<Q", n) + tc.astype("<f8").tobytes()
    (folder / "sfm_shape_3448.bin").write_bytes(body)

    names = ("smile", "frown")
    offsets = rng.normal(0, 2.0, size=(2, n, 3))
    blend = struct.pack("<Q", len(names))
    for name, off in zip(names, offsets):
        blend += struct.pack("<Q", len(name)) + name.encode() + _matrix(off.reshape(-1, 1))
    (folder / "expression_blendshapes_3448.bin").write_bytes(blend)

    # Eyes, nose tip and chin on the dome; the rest of the 68 unmapped.
    def nearest(p: tuple[float, float, float]) -> int:
        return int(np.argmin(np.linalg.norm(mean - np.array(p), axis=1)))

    mapping = {
        31: 0,
        9: nearest((0, -80, 20)),
        37: nearest((-30, 20, 70)),
        46: nearest((30, 20, 70)),
        40: nearest((-12, 20, 75)),
        43: nearest((12, 20, 75)),
    }
    lines = ["# tiny test mapping", "[landmark_mappings]"]
    lines += [f"{k} = {v}" for k, v in sorted(mapping.items())]
    lines += [
        "",
        "[contour_landmarks]",
        "right = [1, 2, 3, 4, 5, 6, 7, 8]",
        "left = [10, 11, 12, 13, 14, 15, 16, 17]",
    ]
    (folder / "ibug_to_sfm.txt").write_text("\n".join(lines) + "\n")

    outer = 1 + 7 * 16  # outermost ring
    right = [outer + s for s in (5, 6, 7, 8, 9, 10, 11)]  # x < 0 side, top to bottom
    left = [outer + (8 - s) % 16 for s in (5, 6, 7, 8, 9, 10, 11)]  # its mirror image
    contours = {"model_contour": {"right_contour": right, "left_contour": left}}
    (folder / "sfm_model_contours.json").write_text(json.dumps(contours))
    return TinyModel(folder, mean, basis, eig, tri, tc, names, offsets, mapping, right, left)


@pytest.fixture(scope="session")
def tiny_sfm(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_tiny_sfm(tmp_path_factory.mktemp("sfm"))


@pytest.fixture
def sfm_writer():
    return write_tiny_sfm
