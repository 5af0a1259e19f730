"""Reader for the Surrey Face Model files in eos' ``share/`` layout.

Byte layouts (all little-endian; a *matrix* is int32 rows, int32 cols, then rows * cols float32
in column-major order):

``sfm_shape_3448.bin``
    uint32 class version (1); the shape PCA model: mean (3N x 1, x0 y0 z0 x1 ...), basis
    (3N x C, orthonormal columns), eigenvalues (C x 1, variances), triangles (uint64 count, then
    count x 3 int32); the colour PCA model in the same four fields (empty in the public model);
    texture coordinates (uint64 count, then count x 2 float64).
``expression_blendshapes_3448.bin``
    uint64 count, then per blendshape: uint64 name length, the name, a matrix 3N x 1 of vertex
    offsets.
``ibug_to_sfm.txt``
    TOML: ``[landmark_mappings]`` maps iBUG-68 numbers (1-based, as strings) to 0-based vertex
    indices; ``[contour_landmarks]`` lists the iBUG numbers of the ``right`` and ``left``
    contours.
``sfm_model_contours.json``
    ``{"model_contour": {"right_contour": [...], "left_contour": [...]}}``: candidate contour
    vertices of each side, from the temple down to the chin.

Model coordinates are millimetres, x to the subject's left, y up, z towards the viewer.
A face is ``mean + basis @ (coeffs * sqrt(eigenvalues)) + sum_j w_j * blendshape_j``.
"""

from __future__ import annotations

import json
import struct
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kp3d.errors import DataError

SHAPE_FILE = "sfm_shape_3448.bin"
EXPRESSION_FILE = "expression_blendshapes_3448.bin"
MAPPING_FILE = "ibug_to_sfm.txt"
CONTOUR_FILE = "sfm_model_contours.json"


class _Reader:
    """Sequential little-endian reads from a byte string, with errors naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DataError(
                f"{self.path}: truncated or malformed: {what} needs {n} bytes at offset "
                f"{self.pos}, the file has {len(self.data)}"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        if count < 0 or count > len(self.data) // max(itemsize, 1):
            raise DataError(f"{self.path}: malformed: {what} claims {count} values")
        return np.frombuffer(self.take(count * itemsize, what), dtype="<" + dtype).copy()

    def matrix(self, what: str) -> np.ndarray:
        rows, cols = self.scalar("i", what + " rows"), self.scalar("i", what + " cols")
        if rows < 0 or cols < 0:
            raise DataError(f"{self.path}: malformed: {what} has shape {rows} x {cols}")
        values = self.array("f4", rows * cols, what)
        return values.reshape(cols, rows).T  # column-major on disk

    def triangles(self, what: str) -> np.ndarray:
        n = self.scalar("Q", what + " count")
        return self.array("i4", 3 * n, what).reshape(n, 3).astype(np.int64)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise DataError(
                f"{self.path}: malformed: {len(self.data) - self.pos} unexpected bytes after the "
                f"model at offset {self.pos}"
            )


@dataclass(frozen=True)
class ShapeModel:
    """The PCA shape model of ``sfm_shape_*.bin``. N vertices, C components."""

    mean: np.ndarray
    """(N, 3) float32, mm."""
    basis: np.ndarray
    """(N, 3, C) float32 orthonormal components (as columns of the (3N, C) matrix)."""
    eigenvalues: np.ndarray
    """(C,) float32 variances, mm^2."""
    triangles: np.ndarray
    """(F, 3) int64 vertex indices."""
    texcoords: np.ndarray
    """(N, 2) float64 in [0, 1]."""


def read_shape_model(path: str | Path) -> ShapeModel:
    """Read ``sfm_shape_*.bin`` (layout in the module doc).

    Raises:
        DataError: unreadable, truncated or inconsistent file; the message names it.
    """
    r = _Reader(Path(path))
    version = r.scalar("I", "class version")
    if version != 1:
        raise DataError(f"{path}: unsupported model version {version} (expected 1)")
    mean = r.matrix("shape mean")
    basis = r.matrix("shape basis")
    eig = r.matrix("shape eigenvalues")
    tri = r.triangles("shape triangles")
    for what in ("colour mean", "colour basis", "colour eigenvalues"):
        r.matrix(what)
    r.triangles("colour triangles")
    n_tc = r.scalar("Q", "texture coordinate count")
    tc = r.array("f8", 2 * n_tc, "texture coordinates").reshape(n_tc, 2)
    r.done()

    n3 = mean.shape[0]
    if mean.shape[1] != 1 or n3 % 3 or n3 == 0:
        raise DataError(f"{path}: shape mean is {mean.shape[0]} x {mean.shape[1]}, expected 3N x 1")
    n = n3 // 3
    if basis.shape[0] != n3 or eig.shape != (basis.shape[1], 1):
        raise DataError(
            f"{path}: inconsistent shape model: mean {n3} x 1, basis {basis.shape[0]} x "
            f"{basis.shape[1]}, eigenvalues {eig.shape[0]} x {eig.shape[1]}"
        )
    if len(tri) and (tri.min() < 0 or tri.max() >= n):
        raise DataError(f"{path}: triangle vertex index out of range 0..{n - 1}")
    if n_tc not in (0, n):
        raise DataError(f"{path}: {n_tc} texture coordinates for {n} vertices")
    return ShapeModel(
        mean=mean.reshape(n, 3).astype(np.float32),
        basis=basis.reshape(n, 3, -1).astype(np.float32),
        eigenvalues=eig[:, 0].astype(np.float32),
        triangles=tri,
        texcoords=tc,
    )


@dataclass(frozen=True)
class Blendshapes:
    """Expression blendshapes: E named (N, 3) vertex offsets in mm."""

    names: tuple[str, ...]
    offsets: np.ndarray
    """(E, N, 3) float32."""


def read_blendshapes(path: str | Path) -> Blendshapes:
    """Read ``expression_blendshapes_*.bin`` (layout in the module doc).

    Raises:
        DataError: unreadable, truncated or inconsistent file; the message names it.
    """
    r = _Reader(Path(path))
    count = r.scalar("Q", "blendshape count")
    if count > 1000:
        raise DataError(f"{path}: malformed: claims {count} blendshapes")
    names, offsets = [], []
    for i in range(count):
        length = r.scalar("Q", f"blendshape {i} name length")
        if length > 1000:
            raise DataError(f"{path}: malformed: blendshape {i} name length {length}")
        names.append(r.take(length, f"blendshape {i} name").decode("utf-8", errors="replace"))
        m = r.matrix(f"blendshape {names[-1]!r}")
        if m.shape[1] != 1 or m.shape[0] % 3:
            raise DataError(
                f"{path}: blendshape {names[-1]!r} is {m.shape[0]} x {m.shape[1]}, expected 3N x 1"
            )
        offsets.append(m[:, 0].reshape(-1, 3))
    r.done()
    if len({len(o) for o in offsets}) > 1:
        raise DataError(f"{path}: blendshapes have different vertex counts")
    stacked = np.stack(offsets).astype(np.float32) if offsets else np.zeros((0, 0, 3), np.float32)
    return Blendshapes(names=tuple(names), offsets=stacked)


@dataclass(frozen=True)
class LandmarkMapping:
    """``ibug_to_sfm.txt``: iBUG landmark number (1-based) -> vertex index, and the contours."""

    vertices: dict[int, int]
    contour_right: tuple[int, ...]
    """iBUG numbers of the right contour (the subject's right: 1..8 in the iBUG scheme)."""
    contour_left: tuple[int, ...]


def read_landmark_mapping(path: str | Path) -> LandmarkMapping:
    """Read the TOML landmark mapping.

    Raises:
        DataError: unreadable file, TOML syntax error, or non-integer entries.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{path}: not valid TOML: {e}") from e
    table = doc.get("landmark_mappings")
    if not isinstance(table, dict):
        raise DataError(f"{path}: no [landmark_mappings] table")
    vertices: dict[int, int] = {}
    for k, v in table.items():
        try:
            vertices[int(k)] = int(v)
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: landmark mapping {k!r} = {v!r} is not integer -> integer"
            ) from None
    contours = doc.get("contour_landmarks", {})
    try:
        right = tuple(int(x) for x in contours.get("right", ()))
        left = tuple(int(x) for x in contours.get("left", ()))
    except (TypeError, ValueError):
        raise DataError(f"{path}: [contour_landmarks] must list integers") from None
    return LandmarkMapping(vertices=vertices, contour_right=right, contour_left=left)


def read_contours(path: str | Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Read ``sfm_model_contours.json``: the (right, left) model contour vertex lists.

    Raises:
        DataError: unreadable file or missing keys.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        c = doc["model_contour"]
        return tuple(int(i) for i in c["right_contour"]), tuple(int(i) for i in c["left_contour"])
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{path}: expected {{'model_contour': {{'right_contour': [...], "
            f"'left_contour': [...]}}}} ({type(e).__name__}: {e})"
        ) from e


@dataclass(frozen=True)
class SurreyFaceModel:
    """Everything the ``face`` generator needs from an SFM folder."""

    shape: ShapeModel
    expressions: Blendshapes
    mapping: LandmarkMapping
    contour_right: tuple[int, ...]
    contour_left: tuple[int, ...]

    @property
    def num_vertices(self) -> int:
        return len(self.shape.mean)


def load_sfm(folder: str | Path) -> SurreyFaceModel:
    """Load the model files from ``folder`` (eos' ``share/`` layout).

    Raises:
        DataError: a file is missing (the message lists what the folder must hold) or malformed.
    """
    folder = Path(folder)
    needed = (SHAPE_FILE, EXPRESSION_FILE, MAPPING_FILE, CONTOUR_FILE)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"{folder}: not a Surrey Face Model folder: missing {', '.join(missing)} "
            f"(needs {', '.join(needed)}, as in eos' share/ folder)"
        )
    shape = read_shape_model(folder / SHAPE_FILE)
    expressions = read_blendshapes(folder / EXPRESSION_FILE)
    mapping = read_landmark_mapping(folder / MAPPING_FILE)
    right, left = read_contours(folder / CONTOUR_FILE)
    n = len(shape.mean)
    if expressions.offsets.size and expressions.offsets.shape[1] != n:
        raise DataError(
            f"{folder / EXPRESSION_FILE}: blendshapes have "
            f"{expressions.offsets.shape[1]} vertices, the shape model {n}"
        )
    for name, idx in (("landmark mapping", mapping.vertices.values()), ("contours", right + left)):
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise DataError(f"{folder}: {name} refers to vertex {bad[0]}, the model has {n}")
    return SurreyFaceModel(shape, expressions, mapping, right, left)
