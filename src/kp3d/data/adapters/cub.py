"""CUB-200-2011: birds with 15 part locations and their visibility.

Layout (``PATH`` is the ``CUB_200_2011`` folder or its parent)::

    images.txt               "<image_id> <relative path under images/>"
    images/                  001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ...
    parts/parts.txt          "<part_id> <part name>"   (15 parts: back, beak, belly, ...)
    parts/part_locs.txt      "<image_id> <part_id> <x> <y> <visible>"   (pixels; 0 0 0 if absent)
    bounding_boxes.txt       "<image_id> <x> <y> <width> <height>"
    train_test_split.txt     "<image_id> <1 train | 0 test>"
    image_class_labels.txt   optional: "<image_id> <class_id 1..200>" -> ``category`` (0-based)

Samples: ``kp2d`` (15, 2), ``vis`` (15,) from the ``visible`` flag (absent parts have
coordinates 0), ``category`` when the class list exists. ``split``: ``"train"``, ``"test"``, or
None for all 11 788 images.

Crops
    ``crop="none"`` (default): the whole image resized to size x size, like every adapter.
    ``crop="bbox"``: the square of side ``max(w, h)`` centred on the bird's box, as in the
    part-discovery literature, but *not* clipped to the image: the part outside is filled with
    the background colour so the bird keeps its aspect ratio. Parts outside the square become
    invisible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack, get_args

import numpy as np

from kp3d.data.adapters._common import (
    AnnotatedImages,
    Crop,
    Entry,
    ImageOptions,
    Problem,
    Scan,
    check_choice,
    open_scan,
    read_lines,
    square_box,
)
from kp3d.errors import ConfigError, DataError

NAME = "cub"
SPLITS = ("train", "test")


def _root(path: Path) -> Path | None:
    for r in (path, path / "CUB_200_2011"):
        if (r / "images.txt").is_file() and (r / "parts" / "part_locs.txt").is_file():
            return r
    return None


def detect(path: Path) -> bool:
    """A folder with ``images.txt`` and ``parts/part_locs.txt`` (or its ``CUB_200_2011``)."""
    return path.is_dir() and _root(path) is not None


def read_table(
    path: Path, types: str, problems: list[Problem], *, required: bool = True
) -> list[tuple[int, list]]:
    """Rows ``(line, values)`` of a whitespace-separated table, parsed by ``types``.

    ``types`` has one letter per column: ``i`` integer, ``f`` finite-or-not float, ``s`` the
    rest of the line as a string (last column only). Bad rows are appended to ``problems``.

    Raises:
        DataError: the file is missing and ``required``.
    """
    if not path.is_file():
        if required:
            raise DataError(f"{path}: missing (a CUB-200-2011 folder needs it)")
        return []
    lines = read_lines(path)
    if isinstance(lines, Problem):
        problems.append(lines)
        return []
    rows = []
    for line, text in enumerate(lines, start=1):
        fields = text.split(maxsplit=len(types) - 1) if types.endswith("s") else text.split()
        if not fields:
            continue
        if len(fields) != len(types):
            problems.append(Problem(path, line, f"{len(fields)} fields, expected {len(types)}"))
            continue
        try:
            rows.append((line, [_PARSE[t](f) for t, f in zip(types, fields)]))
        except ValueError:
            problems.append(
                Problem(
                    path,
                    line,
                    f"{text.strip()!r} does not match the columns {types!r} "
                    "(i: integer, f: number, s: text)",
                )
            )
    return rows


_PARSE = {"i": int, "f": float, "s": str.strip}


def _by_id(
    path: Path, rows: list[tuple[int, list]], problems: list[Problem]
) -> dict[int, tuple[int, list]]:
    out: dict[int, tuple[int, list]] = {}
    for line, (i, *rest) in rows:
        if i in out:
            problems.append(Problem(path, line, f"id {i} listed twice (first on line {out[i][0]})"))
        else:
            out[i] = (line, rest)
    return out


def scan(path: Path, *, split: str | None = None, crop: Crop = "none") -> Scan:
    """Parse the CUB tables and select ``split``.

    Raises:
        DataError: a required table is missing.
        ConfigError: unknown split or crop.
    """
    path = Path(path)
    root = _root(path)
    if root is None:
        raise DataError(f"{path}: no images.txt with parts/part_locs.txt (CUB-200-2011 layout)")
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown CUB split {split!r}; valid splits: {', '.join(SPLITS)}")
    check_choice(crop, get_args(Crop), "crop")
    problems: list[Problem] = []

    def table(name: str, types: str, required: bool = True) -> dict[int, tuple[int, list]]:
        return _by_id(
            root / name, read_table(root / name, types, problems, required=required), problems
        )

    images = table("images.txt", "is")
    parts = table("parts/parts.txt", "is")
    is_train = table("train_test_split.txt", "ii")
    boxes = table("bounding_boxes.txt", "iffff")
    labels = table("image_class_labels.txt", "ii", required=False)
    k = len(parts)
    if sorted(parts) != list(range(1, k + 1)):
        problems.append(Problem(root / "parts/parts.txt", None, f"part ids should be 1..{k}"))
        k = max(parts, default=0)
    names = [parts[i][1][0] if i in parts else f"part{i}" for i in range(1, k + 1)]

    f_locs = root / "parts" / "part_locs.txt"
    kp = {i: np.zeros((k, 2)) for i in images}
    vis = {i: np.zeros(k, dtype=bool) for i in images}
    seen = {i: np.zeros(k, dtype=bool) for i in images}
    for line, (img, part, x, y, v) in read_table(f_locs, "iifff", problems):
        if img not in images or not 1 <= part <= k:
            problems.append(Problem(f_locs, line, f"unknown image id {img} or part id {part}"))
        elif v not in (0.0, 1.0):
            problems.append(Problem(f_locs, line, f"visible is {v:g}, expected 0 or 1"))
        elif v and not np.isfinite([x, y]).all():
            problems.append(
                Problem(f_locs, line, f"visible part {part} has non-finite coordinates")
            )
        elif seen[img][part - 1]:
            problems.append(Problem(f_locs, line, f"part {part} of image {img} listed twice"))
        else:
            seen[img][part - 1] = True
            if v:
                kp[img][part - 1], vis[img][part - 1] = (x, y), True
    incomplete = [i for i in images if not seen[i].all()]
    if incomplete:
        problems.append(
            Problem(
                f_locs,
                None,
                f"{len(incomplete)} images lack some of the {k} parts "
                f"(e.g. image id {incomplete[0]})",
            )
        )

    entries: list[Entry] = []
    counts = {"train": 0, "test": 0}
    for i, (line, (rel,)) in sorted(images.items()):
        if i not in is_train:
            problems.append(
                Problem(root / "train_test_split.txt", None, f"image id {i} has no train/test flag")
            )
            continue
        train = is_train[i][1][0] == 1
        counts["train" if train else "test"] += 1
        if split is not None and train != (split == "train"):
            continue
        box = None
        if crop == "bbox":
            if i not in boxes:
                problems.append(
                    Problem(root / "bounding_boxes.txt", None, f"image id {i} has no bounding box")
                )
                continue
            box = square_box(boxes[i][1])
            if box is None:
                problems.append(
                    Problem(root / "bounding_boxes.txt", boxes[i][0], "empty or non-finite box")
                )
                continue
        image = root / "images" / rel
        if not image.is_file():
            problems.append(Problem(root / "images.txt", line, f"image {image} does not exist"))
            continue
        entries.append(
            Entry(
                path=image,
                name=rel,
                kp2d=kp[i],
                vis=vis[i],
                box=box,
                category=(labels[i][1][0] - 1) if i in labels else None,
                where=f"{f_locs} (image id {i})",
            )
        )
    if labels and any(e.category is None for e in entries):
        problems.append(Problem(root / "image_class_labels.txt", None, "some images have no class"))
    return Scan(
        format=NAME,
        root=root,
        entries=entries,
        problems=problems,
        split=split or "all",
        splits=counts,
        images=[e.path for e in entries],
        labelled=len(images),
        keypoint_names=names,
    )


def open(
    path: Path,
    *,
    size: int | None = None,
    split: str | None = None,
    strict: bool = False,
    crop: Crop = "none",
    **loading: Unpack[ImageOptions],
) -> AnnotatedImages:
    """CUB samples with ``kp2d`` (15, 2), ``vis`` and ``category`` (see the module doc)."""
    s = scan(path, split=split, crop=crop)
    return open_scan(s, size=size, strict=strict, tag=f"{NAME}-{s.split}-{crop}", **loading)
