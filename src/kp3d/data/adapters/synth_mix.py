"""Several ``kp3d synth`` sets of different categories as one multi-category set.

Layout: a folder whose subfolders are ``kp3d synth`` sets (:mod:`kp3d.data.adapters.synth`),
at least two, of at least two categories, and nothing else that is a set::

    MIX/creature/     kp3d synth creature --n 500 --out MIX/creature
    MIX/quadruped/    kp3d synth quadruped --n 500 --out MIX/quadruped

Reading (:func:`open`): every image of every subset (multi-view sets view by view), subsets in
the order of their category (:data:`kp3d.data.synth.CATEGORIES`), then of their folder name.
The categories present are labelled ``0 .. Z-1`` in that order (``category``; the dataset's
``category_names``). Keypoints follow the joint layout of a multi-category lifter (Can et
al.): category ``z`` owns the columns ``offsets[z] .. offsets[z + 1]`` of ``K = sum_z k_z``
keypoints (its subset ``zeta_z``); in a sample of category ``z`` every other column has
``vis`` False, ``kp2d`` 0 and ``kp3d`` NaN (no 3D point: the evaluation protocols leave
non-finite ground truth out). ``keypoint_names`` are ``<category>/<name>``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from kp3d.data.adapters import synth
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError


def _subsets(path: Path) -> list[Path]:
    if not path.is_dir() or (path / "meta.json").exists():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and synth.detect(p))


def detect(path: Path) -> bool:
    """A folder without a ``meta.json`` holding at least two ``kp3d synth`` sets."""
    return len(_subsets(path)) >= 2


class SynthMix(Dataset[Sample]):
    """The images of several synth sets in one keypoint layout (see the module doc).

    Attributes:
        sets: the subsets, in order.
        category_names: the category of each label.
        num_categories: their number Z.
        offsets: (Z + 1) first keypoint column of each category, then K.
        keypoint_names: the K names, ``<category>/<name>``.
    """

    def __init__(self, root: Path, *, size: int | None = None, strict: bool = False) -> None:
        folders = _subsets(root)
        if len(folders) < 2:
            raise DataError(f"{root}: a synth mix needs at least two kp3d synth sets as subfolders")
        sets = [synth.SynthSet(f, size=size, strict=strict, views="flat") for f in folders]
        order = sorted(range(len(sets)), key=lambda i: (int(sets[i].meta["category_id"]), i))
        self.folders = [folders[i].name for i in order]
        self.sets = [sets[i] for i in order]
        names: list[str] = []
        layouts: dict[str, list[str]] = {}
        for s in self.sets:
            name = str(s.meta.get("category", s.meta["category_id"]))
            if name in layouts and layouts[name] != s.keypoint_names:
                raise DataError(f"{root}: two {name} sets with different keypoints")
            if name not in layouts:
                names.append(name)
                layouts[name] = s.keypoint_names
        if len(names) < 2:
            raise DataError(f"{root}: every subset is of category {names[0]!r}; a mix needs two")
        sizes = {int(s.meta["size"]) for s in self.sets}
        if size is None and len(sizes) > 1:
            raise ConfigError(
                f"{root}: the subsets have image sizes {sorted(sizes)}; give a size to read them at"
            )
        self.category_names = names
        self.num_categories = len(names)
        counts = [len(layouts[n]) for n in names]
        self.offsets = [sum(counts[:z]) for z in range(len(names) + 1)]
        self.keypoint_names = [f"{n}/{k}" for n in names for k in layouts[n]]
        self._label = [
            names.index(str(s.meta.get("category", s.meta["category_id"]))) for s in self.sets
        ]
        self._starts = [0]
        for s in self.sets:
            self._starts.append(self._starts[-1] + len(s))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = i % len(self)
        j = max(k for k in range(len(self.sets)) if self._starts[k] <= i)
        sample = self.sets[j][i - self._starts[j]]
        z = self._label[j]
        lo, hi, K = self.offsets[z], self.offsets[z + 1], self.offsets[-1]

        def spread(t: torch.Tensor, fill: float | bool) -> torch.Tensor:
            out = torch.full((K, *t.shape[1:]), fill, dtype=t.dtype)
            out[lo:hi] = t
            return out

        assert sample.kp2d is not None and sample.vis is not None and sample.kp3d is not None
        return sample.replace(
            kp2d=spread(sample.kp2d, 0.0),
            vis=spread(sample.vis, False),
            kp3d=spread(sample.kp3d, float("nan")),
            category=torch.tensor(z),
            name=f"{self.folders[j]}/{sample.name}",
        )


def open(
    path: Path, *, size: int | None = None, split: str | None = None, strict: bool = False
) -> SynthMix:
    """Open a folder of ``kp3d synth`` sets as one multi-category set (module doc).

    Raises:
        DataError: fewer than two sets or categories, unreadable sets; ConfigError: a split was
            asked for, or subsets of different image sizes without ``size``.
    """
    if split is not None:
        raise ConfigError(
            f"{path}: a synth mix has no splits (asked for {split!r}); "
            "make a test mix from sets of other seeds"
        )
    return SynthMix(Path(path), size=size, strict=strict)
