"""2D keypoints (with optional visibility, category and 3D ground truth) in one ``.npz`` file.

The input of the 2D→3D lifters (``c3dpo``, ``lifter``). Keys:

=========  ============  =====================================================================
key        shape         meaning
=========  ============  =====================================================================
kp2d       (N, K, 2)     2D keypoints, any consistent units (pixels); required
vis        (N, K)        visibility, bool (or integers 0/1); absent = all visible
category   (N,)          integer category label >= 0; absent = one category
kp3d       (N, K, 3)     3D ground truth (x, y, z) for evaluation only, never for training
name       (N,)          sample names (strings) for messages; absent = ``"<file>[i]"``
=========  ============  =====================================================================

Other keys are ignored. The file is read with ``allow_pickle=False``. Every problem is a
:class:`kp3d.errors.DataError` naming the file: a missing ``kp2d``, a wrong shape or dtype, a
count N that differs between keys, a negative category, and non-finite values (in ``kp2d`` at a
visible keypoint, or anywhere in ``kp3d``). Coordinates of invisible keypoints may hold anything,
NaN included; they become 0, as in every adapter.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError

NAME = "keypoints_npz"


def detect(path: Path) -> bool:
    """A ``.npz`` file with a ``kp2d`` array."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".npz"):
        return False
    try:
        with np.load(path, allow_pickle=False) as f:
            return "kp2d" in f.files
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def _first_bad(mask: np.ndarray) -> str:
    """'sample i, keypoint k' of the first True entry of an (N, K) mask."""
    i, k = np.argwhere(mask)[0]
    return f"sample {i}, keypoint {k}"


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Load and validate the arrays of a keypoint file (see the module doc).

    Returns:
        ``kp2d`` (N, K, 2) float32 (0 at invisible keypoints), ``vis`` (N, K) bool, and, where
        the file has them, ``category`` (N,) int64, ``kp3d`` (N, K, 3) float32, ``name`` (N,) str.

    Raises:
        DataError: naming ``path`` and the problem.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            raw = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{path}: cannot read as a .npz file without pickled objects ({e})"
        ) from None

    if "kp2d" not in raw:
        raise DataError(f"{path}: no 'kp2d' array (N, K, 2); keys found: {sorted(raw) or 'none'}")
    kp2d = raw["kp2d"]
    if kp2d.ndim != 3 or kp2d.shape[-1] != 2 or kp2d.shape[0] == 0 or kp2d.shape[1] == 0:
        raise DataError(
            f"{path}: 'kp2d' must have shape (N, K, 2) with N, K >= 1, got {kp2d.shape}"
        )
    if not np.issubdtype(kp2d.dtype, np.number) or np.iscomplexobj(kp2d):
        raise DataError(f"{path}: 'kp2d' must hold real numbers, got dtype {kp2d.dtype}")
    n, k = kp2d.shape[:2]

    def check_shape(key: str, shape: tuple[int, ...]) -> np.ndarray:
        a = raw[key]
        if a.shape != shape:
            want = {"vis": "(N, K)", "category": "(N,)", "kp3d": "(N, K, 3)", "name": "(N,)"}[key]
            raise DataError(
                f"{path}: '{key}' must have shape {want} = {shape} to match "
                f"'kp2d' {kp2d.shape}, got {a.shape}"
            )
        return a

    if "vis" in raw:
        vis = check_shape("vis", (n, k))
        if vis.dtype != np.bool_:
            if not np.issubdtype(vis.dtype, np.integer) or not np.isin(vis, (0, 1)).all():
                raise DataError(
                    f"{path}: 'vis' must be bool (or integers 0/1), got dtype {vis.dtype}"
                )
            vis = vis.astype(bool)
    else:
        vis = np.ones((n, k), dtype=bool)

    bad = vis & ~np.isfinite(kp2d).all(-1)
    if bad.any():
        raise DataError(f"{path}: 'kp2d' is not finite at a visible keypoint ({_first_bad(bad)})")
    out: dict[str, np.ndarray] = {
        "kp2d": np.where(vis[..., None], kp2d, 0).astype(np.float32),
        "vis": vis,
    }

    if "category" in raw:
        category = check_shape("category", (n,))
        if not np.issubdtype(category.dtype, np.integer):
            raise DataError(f"{path}: 'category' must hold integers, got dtype {category.dtype}")
        if (category < 0).any():
            raise DataError(
                f"{path}: 'category' must be >= 0, sample {int(np.argmax(category < 0))} "
                f"has {int(category.min())}"
            )
        out["category"] = category.astype(np.int64)
    if "kp3d" in raw:
        kp3d = check_shape("kp3d", (n, k, 3))
        if not np.issubdtype(kp3d.dtype, np.number) or np.iscomplexobj(kp3d):
            raise DataError(f"{path}: 'kp3d' must hold real numbers, got dtype {kp3d.dtype}")
        bad = ~np.isfinite(kp3d).all(-1)
        if bad.any():
            raise DataError(f"{path}: 'kp3d' is not finite ({_first_bad(bad)})")
        out["kp3d"] = kp3d.astype(np.float32)
    if "name" in raw:
        name = check_shape("name", (n,))
        if name.dtype.kind not in "US":
            raise DataError(f"{path}: 'name' must hold strings, got dtype {name.dtype}")
        out["name"] = name.astype(str)
    return out


class KeypointArrays(Dataset[Sample]):
    """The samples of a keypoint file: ``kp2d``, ``vis`` and, if present, ``category``, ``kp3d``.

    Attributes:
        path: the file.
        num_keypoints: K.
        num_categories: 1 + the largest category label (1 without labels).
        names: sample names.
    """

    def __init__(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self._kp2d = torch.from_numpy(arrays["kp2d"])
        self._vis = torch.from_numpy(arrays["vis"])
        self._category = torch.from_numpy(arrays["category"]) if "category" in arrays else None
        self._kp3d = torch.from_numpy(arrays["kp3d"]) if "kp3d" in arrays else None
        n = len(self._kp2d)
        self.names = (
            list(arrays["name"]) if "name" in arrays else [f"{path.name}[{i}]" for i in range(n)]
        )
        self.num_keypoints = self._kp2d.shape[1]
        self.num_categories = 1 if self._category is None else int(self._category.max()) + 1

    def __len__(self) -> int:
        return len(self._kp2d)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return self._take(i, self.names[i])

    def __getitems__(self, indices: Sequence[int]) -> Sample:
        """The batch :class:`Sample` of ``indices``, equal to ``collate`` of the single items.

        DataLoader fetches a whole batch through this method when it exists; one indexing
        operation per field replaces a few thousand small tensors per batch of 256, a fifth of
        a lifter's training step.
        """
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        bad = (idx < -len(self)) | (idx >= len(self))
        if bad.any():
            raise IndexError(f"index {int(idx[bad][0])} out of range for {len(self)} samples")
        return self._take(idx, [self.names[i] for i in indices])

    def _take(self, index: int | torch.Tensor, name: str | list[str]) -> Sample:
        """The fields at ``index`` (one sample, or a batch for a tensor of indices)."""
        return Sample(
            kp2d=self._kp2d[index],
            vis=self._vis[index],
            kp3d=None if self._kp3d is None else self._kp3d[index],
            category=None if self._category is None else self._category[index],
            name=name,
        )


def open(
    path: Path, *, size: int | None = None, split: str | None = None, strict: bool = False
) -> KeypointArrays:
    """Open a keypoint file as a dataset of :class:`Sample`.

    ``size`` is accepted for the common adapter interface and has no effect (there are no
    images to resize); ``strict`` has nothing to skip. A keypoint file has no splits.

    Raises:
        DataError: the file is malformed (see the module doc).
        ConfigError: a ``split`` is given.
    """
    path = Path(path)
    if split is not None:
        raise ConfigError(
            f"{path}: a keypoint .npz file has no splits (got split={split!r}); "
            "write one file per split"
        )
    return KeypointArrays(path, read_arrays(path))
