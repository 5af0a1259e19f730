"""Landmark CSVs beside image folders, in the layout of ``../shared/data/ytfaces68``.

Layout::

    ROOT/
      training/                  images
      training_landmarks.csv     header row, then: file name, x0, y0, x1, y1, ... (pixels)
      test/
      test_landmarks.csv

Each ``<split>_landmarks.csv`` describes the images of the folder ``<split>/`` beside it; file
names are relative to that folder, and two folders may reuse a file name for different images,
so a sample is always named ``<split>/<file>``. The first row is a header; its column count
fixes K = (columns - 1) / 2 for that file. Coordinates are continuous pixel coordinates of the
stored image.

Selections
    ``split=None``: every image of every paired folder (``training/`` and ``test/``, including
    images no CSV row mentions), *without* labels, for unsupervised training; every sample then
    has the same fields and batches collate. ``split="training"`` (or any ``<split>``): the
    images listed in ``<split>_landmarks.csv`` with ``kp2d`` (K, 2) scaled to ``size`` and
    ``vis`` all True.

Every CSV is validated when the dataset is opened, whatever the selection (see
:mod:`kp3d.data.adapters._common` for the policy): a short row, a non-number, NaN, a name listed
twice or an image that does not exist is a :class:`DataError` naming the CSV and its line. An
empty (or ``nan``) x, y pair is a missing landmark (``vis`` False); a row whose landmarks are all
missing is an unlabelled frame, left out of its split with a logged count, so that scoring uses
the labelled frames.
``PATH`` may also be one ``*_landmarks.csv`` file, which then is the only split.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Unpack

import numpy as np

from kp3d.data.adapters._common import (
    AnnotatedImages,
    Entry,
    ImageOptions,
    Problem,
    Scan,
    landmark_row,
    open_scan,
    parse_floats,
)
from kp3d.data.images import find_images
from kp3d.errors import ConfigError, DataError

log = logging.getLogger("kp3d.data")

NAME = "landmark_csv"
SUFFIX = "_landmarks.csv"


def _pairs(path: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (csv, image folder) for every ``<split>_landmarks.csv`` with its folder."""
    if path.is_file():
        candidates = [path] if path.name.endswith(SUFFIX) else []
    elif path.is_dir():
        candidates = sorted(path.glob(f"*{SUFFIX}"))
    else:
        candidates = []
    out = {}
    for c in candidates:
        split = c.name[: -len(SUFFIX)]
        if split and (c.parent / split).is_dir():
            out[split] = (c, c.parent / split)
    return out


def detect(path: Path) -> bool:
    """A ``<split>_landmarks.csv`` with its ``<split>/`` folder (or such a CSV file)."""
    return bool(_pairs(path))


def parse_csv(csv_path: Path, folder: Path) -> tuple[list[Entry], list[Problem]]:
    """Read one landmark CSV; entries are named ``<folder name>/<file>``.

    Never raises for a malformed file: every problem is returned, naming the CSV and line.
    """
    problems: list[Problem] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return [], [Problem(csv_path, None, f"cannot read as a CSV text file ({e})")]
    if not rows:
        return [], [Problem(csv_path, None, "empty file (expected a header row)")]
    ncols = len(rows[0])
    if ncols < 5 or (ncols - 1) % 2:
        return [], [
            Problem(
                csv_path,
                1,
                f"header has {ncols} columns; expected a file name column "
                "then an x, y column pair per landmark (at least 2)",
            )
        ]
    k = (ncols - 1) // 2
    unlabelled = 0
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != ncols:
            problems.append(
                Problem(
                    csv_path,
                    line,
                    f"{len(row)} columns, expected {ncols} (file name + {k} x, y pairs)",
                )
            )
            continue
        name = row[0].strip()
        if not name:
            problems.append(Problem(csv_path, line, "empty file name"))
            continue
        if name in seen:
            problems.append(
                Problem(csv_path, line, f"{name} is listed twice (first on line {seen[name]})")
            )
            continue
        seen[name] = line
        # An empty or NaN cell is a missing landmark; a row missing every one is a frame
        # nobody labelled, left out of the split (and counted) rather than failing the set.
        cells = ["nan" if not c.strip() else c for c in row[1:]]
        values = parse_floats(cells, csv_path, line, name)
        if isinstance(values, Problem):
            problems.append(values)
            continue
        if np.isinf(values).any():
            bad = int(np.flatnonzero(np.isinf(values))[0])
            problems.append(
                Problem(
                    csv_path,
                    line,
                    f"{name}: landmark {bad // 2} has an infinite {'xy'[bad % 2]} ({values[bad]})",
                )
            )
            continue
        present = ~np.isnan(values.reshape(k, 2))
        if (present[:, 0] != present[:, 1]).any():
            bad = int(np.flatnonzero(present[:, 0] != present[:, 1])[0])
            problems.append(
                Problem(csv_path, line, f"{name}: landmark {bad} has only one coordinate")
            )
            continue
        if not present.any():
            unlabelled += 1
            continue
        got = landmark_row(
            folder / name, f"{folder.name}/{name}", values.reshape(k, 2), csv_path, line
        )
        if isinstance(got, Problem):
            problems.append(got)
        else:
            got.vis = present[:, 0]
            got.kp2d = np.where(present, got.kp2d, 0.0)
            entries.append(got)
    if unlabelled:
        log.warning(
            "%s: %d of %d rows have no landmarks (unlabelled frames); left out of the split",
            csv_path,
            unlabelled,
            unlabelled + len(entries),
        )
    return entries, problems


def scan(path: Path, *, split: str | None = None) -> Scan:
    """Parse every CSV; select all images unlabelled (``split=None``) or one labelled split.

    Raises:
        DataError: ``path`` has no CSV/folder pair.
        ConfigError: unknown ``split`` (the message lists the valid ones).
    """
    path = Path(path)
    pairs = _pairs(path)
    if not pairs:
        raise DataError(f"{path}: no <split>{SUFFIX} file with a <split>/ image folder beside it")
    if split is not None and split not in pairs:
        raise ConfigError(f"{path}: unknown split {split!r}; valid splits: {', '.join(pairs)}")
    root = path if path.is_dir() else path.parent
    labelled: dict[str, list[Entry]] = {}
    problems: list[Problem] = []
    images: list[Path] = []
    notes: list[str] = []
    for name, (csv_path, folder) in pairs.items():
        entries, p = parse_csv(csv_path, folder)
        labelled[name], problems = entries, problems + p
        try:
            files = find_images(folder)
        except DataError as e:
            problems.append(Problem(folder, None, str(e)))
            files = []
        images += files
        notes.append(
            f"{folder.name}/: {len(files)} images, {len(entries)} labelled in {csv_path.name}"
        )
    if split is None:
        entries = [Entry(path=f, name=f.relative_to(root).as_posix()) for f in images]
    else:
        entries = labelled[split]
        if not entries and not problems:
            problems.append(Problem(pairs[split][0], None, "no rows after the header"))
    k = {len(e.kp2d) for es in labelled.values() for e in es if e.kp2d is not None}
    if len(k) > 1:
        problems.append(
            Problem(root, None, f"the CSVs disagree on the number of landmarks: {sorted(k)}")
        )
    return Scan(
        format=NAME,
        root=root,
        entries=entries,
        problems=problems,
        split=split or "all",
        num_keypoints=min(k) if k else None,
        splits={name: len(es) for name, es in labelled.items()},
        images=images,
        notes=notes,
        labelled=sum(len(es) for es in labelled.values()),
    )


def open(
    path: Path,
    *,
    size: int | None = None,
    split: str | None = None,
    strict: bool = False,
    **loading: Unpack[ImageOptions],
) -> AnnotatedImages:
    """All images unlabelled (``split=None``) or the labelled images of one CSV."""
    s = scan(path, split=split)
    hint = " (to train on the images alone, open the folder with format='image_folder')"
    return open_scan(
        s,
        size=size,
        strict=strict,
        tag=f"{NAME}-{split or 'all'}",
        hint=hint if split is None else "",
        **loading,
    )
