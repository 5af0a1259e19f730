"""CelebA and MAFL: 5 facial landmarks, in the "wild" or the "aligned" images.

Files (each looked for in ``ROOT``, ``ROOT/Anno``, ``ROOT/Eval`` and ``ROOT/MAFL``)::

    img_celeba/ or img_align_celeba/    (also under ROOT/Img/) images, 000001.jpg ...
    list_landmarks_celeba.txt           wild images:    count, header, "name x y x y ..." rows
    list_landmarks_align_celeba.txt     aligned images: same layout
    list_bbox_celeba.txt                wild images:    count, header, "name x y w h" rows
    list_imsize_celeba.txt              optional: "name width height" rows (saves header reads)
    MAFL/training.txt, MAFL/testing.txt the MAFL regression-fit and test lists (19000 / 1000)
    MAFL/celebA_training.txt            optional: the unsupervised training list

Landmarks (K = 5, in the order of the files): left eye, right eye, nose, left mouth corner, right
mouth corner, in pixels of the stored image.

Variants
    ``variant="wild"`` (default when ``img_celeba`` and its lists exist) is the "CelebA-wild"
    preparation of AutoLink (He et al. 2022) and Wang, Cao & Bernard: the *whole* in-the-wild
    image is resized to size x size (no crop) and only faces whose bounding box covers at least
    ``min_face_fraction`` (0.3) of the image area are kept, ``w_box * h_box >= 0.3 * W * H``.
    Landmarks are scaled exactly, ``x' = x * size / W``, ``y' = y * size / H``.
    ``variant="aligned"``: the 178x218 aligned images, whole image resized, no filter.

``autolink_swap=True`` reproduces AutoLink's published preprocessing exactly, including its
axis mix-up: it reads ``list_imsize_celeba.txt`` (columns: width, height) into variables named
``h, w`` and computes ``row = y * S / h``, ``col = x * S / w``, i.e. it scales **x by S / H and
y by S / W** (S the output size). On non-square images (nearly all of CelebA) its landmarks are
therefore off by the factor W / H along each axis; use the flag only to compare with numbers
produced by that code. The filter is symmetric in W and H and is unaffected.

Splits
    ``"train"``: ``MAFL/celebA_training.txt`` when present, else every annotated image not in
    ``MAFL/testing.txt`` (the unsupervised training set of the MAFL protocol);
    ``"mafl_train"``, ``"mafl_test"``: the MAFL lists; ``"all"``: every annotated image.
    Default: ``"train"`` when the MAFL lists exist, else ``"all"``. The wild filter applies to
    every split, as in AutoLink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Unpack

import numpy as np

from kp3d.data.adapters._common import (
    AnnotatedImages,
    Entry,
    ImageOptions,
    Problem,
    Scan,
    check_choice,
    exact_scale,
    landmark_row,
    open_scan,
    parse_floats,
    read_lines,
)
from kp3d.data.images import image_size
from kp3d.errors import ConfigError, DataError

NAME = "celeba"
Variant = Literal["wild", "aligned"]
SPLITS = ("train", "mafl_train", "mafl_test", "all")
_LISTS = {
    "wild": ("img_celeba", "list_landmarks_celeba.txt"),
    "aligned": ("img_align_celeba", "list_landmarks_align_celeba.txt"),
}


def _find(root: Path, name: str) -> Path | None:
    for d in (root, root / "Anno", root / "Eval", root / "MAFL", root / "Img"):
        if (d / name).exists():
            return d / name
    return None


def _variants(root: Path) -> list[Variant]:
    found: list[Variant] = []
    for v, (images, landmarks) in _LISTS.items():
        if root.is_dir() and _find(root, images) is not None and _find(root, landmarks) is not None:
            found.append(v)  # type: ignore[arg-type]
    return found


def detect(path: Path) -> bool:
    """An image folder (img_celeba or img_align_celeba) with its landmark list."""
    return bool(_variants(path))


def parse_list(
    path: Path, fields: int
) -> tuple[list[str], dict[str, tuple[np.ndarray, int]], list[Problem]]:
    """Read a CelebA list: a count line, a header line, then ``name v1 ... v<fields>`` rows.

    Returns the header names, name -> (values, line) and the problems (never raises).
    """
    lines = read_lines(path)
    if isinstance(lines, Problem):
        return [], {}, [lines]
    problems: list[Problem] = []
    if len(lines) < 2:
        return [], {}, [Problem(path, None, "expected a count line and a header line")]
    try:
        count = int(lines[0].strip())
    except ValueError:
        got = lines[0].strip()
        return [], {}, [Problem(path, 1, f"first line should be the number of rows, got {got!r}")]
    header = lines[1].split()
    if header and header[0] == "image_id":
        header = header[1:]
    if len(header) != fields:
        problems.append(
            Problem(path, 2, f"header has {len(header)} column names, expected {fields}")
        )
    rows: dict[str, tuple[np.ndarray, int]] = {}
    for line, text in enumerate(lines[2:], start=3):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != fields + 1:
            problems.append(
                Problem(
                    path,
                    line,
                    f"{len(parts)} fields, expected {fields + 1} (file name + {fields} numbers)",
                )
            )
            continue
        values = parse_floats(parts[1:], path, line, parts[0])
        if isinstance(values, Problem):
            problems.append(values)
        elif not np.isfinite(values).all():
            problems.append(Problem(path, line, f"{parts[0]}: non-finite value"))
        elif parts[0] in rows:
            problems.append(
                Problem(path, line, f"{parts[0]} listed twice (first on line {rows[parts[0]][1]})")
            )
        else:
            rows[parts[0]] = (values, line)
    n_rows = sum(1 for text in lines[2:] if text.strip())
    if count != n_rows:
        problems.append(Problem(path, 1, f"says {count} rows, but the file has {n_rows}"))
    return header, rows, problems


def _read_names(path: Path) -> list[str]:
    try:
        return [
            t.split()[0] for t in path.read_text(encoding="utf-8-sig").splitlines() if t.strip()
        ]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as a list of file names ({e})") from e


def scan(
    path: Path,
    *,
    split: str | None = None,
    variant: Variant | None = None,
    min_face_fraction: float = 0.3,
) -> Scan:
    """Parse the lists, select ``split`` of ``variant``, apply the wild filter.

    Raises:
        DataError: a required file is missing.
        ConfigError: unknown split or variant.
    """
    root = Path(path)
    variants = _variants(root)
    if not variants:
        raise DataError(f"{root}: no img_celeba/ or img_align_celeba/ with its landmark list")
    if variant is None:
        variant = "wild" if "wild" in variants else "aligned"
    check_choice(variant, list(_LISTS), "CelebA variant")
    if variant not in variants:
        raise DataError(f"{root}: variant {variant!r} needs {' and '.join(_LISTS[variant])}")
    images_dir = _find(root, _LISTS[variant][0])
    landmark_file = _find(root, _LISTS[variant][1])
    assert images_dir is not None and landmark_file is not None
    header, landmarks, problems = parse_list(landmark_file, 10)
    names = [h.removesuffix("_x") for h in header[::2]] if len(header) == 10 else None

    lists = {
        s: _find(root, f)
        for s, f in (
            ("mafl_train", "training.txt"),
            ("mafl_test", "testing.txt"),
            ("celeba_train", "celebA_training.txt"),
        )
    }
    selections: dict[str, list[str]] = {"all": sorted(landmarks)}
    if lists["mafl_train"] and lists["mafl_test"]:
        selections["mafl_train"] = _read_names(lists["mafl_train"])
        selections["mafl_test"] = _read_names(lists["mafl_test"])
        if lists["celeba_train"]:
            selections["train"] = _read_names(lists["celeba_train"])
        else:
            test = set(selections["mafl_test"])
            selections["train"] = [n for n in selections["all"] if n not in test]
    split = split or ("train" if "train" in selections else "all")
    if split not in SPLITS:
        raise ConfigError(f"unknown CelebA split {split!r}; valid splits: {', '.join(SPLITS)}")
    if split not in selections:
        raise DataError(f"{root}: split {split!r} needs MAFL/training.txt and MAFL/testing.txt")
    for s, listed in selections.items():
        missing = [n for n in listed if n not in landmarks]
        if missing:
            where = lists["celeba_train" if s == "train" else s] if s != "all" else landmark_file
            problems.append(
                Problem(
                    where or landmark_file,
                    None,
                    f"{len(missing)} names have no row in {landmark_file.name} (e.g. {missing[0]})",
                )
            )

    notes: list[str] = []
    chosen = [n for n in selections[split] if n in landmarks]
    if variant == "wild":
        chosen, wild_notes, wild_problems = _wild_filter(
            root, images_dir, chosen, min_face_fraction
        )
        notes += wild_notes
        problems += wild_problems
    entries: list[Entry] = []
    for n in chosen:
        values, line = landmarks[n]
        got = landmark_row(images_dir / n, n, values.reshape(5, 2), landmark_file, line)
        if isinstance(got, Problem):
            problems.append(got)
        else:
            entries.append(got)
    notes.insert(0, f"variant {variant}: {images_dir}")
    return Scan(
        format=NAME,
        root=root,
        entries=entries,
        problems=problems,
        split=f"{split}-{variant}",
        splits={s: len(v) for s, v in selections.items()},
        images=[e.path for e in entries],
        labelled=len(landmarks),
        keypoint_names=names,
        notes=notes,
    )


def _wild_filter(
    root: Path, images_dir: Path, names: list[str], fraction: float
) -> tuple[list[str], list[str], list[Problem]]:
    bbox_file = _find(root, "list_bbox_celeba.txt")
    if bbox_file is None:
        raise DataError(f"{root}: the wild variant needs list_bbox_celeba.txt")
    _, boxes, problems = parse_list(bbox_file, 4)
    sizes: dict[str, tuple[float, float]] = {}
    imsize_file = _find(root, "list_imsize_celeba.txt")
    if imsize_file is not None:
        _, rows, p = parse_list(imsize_file, 2)
        problems += p
        sizes = {n: (float(v[0]), float(v[1])) for n, (v, _) in rows.items()}
    kept = []
    for n in names:
        if n not in boxes:
            problems.append(Problem(bbox_file, None, f"no bounding box for {n}"))
            continue
        if n not in sizes:
            try:
                sizes[n] = image_size(images_dir / n)
            except DataError:
                kept.append(n)  # the dataset reports (and skips) it as an unreadable image
                continue
        w, h = sizes[n]
        box = boxes[n][0]
        if box[2] * box[3] >= fraction * w * h:
            kept.append(n)
    notes = [
        f"wild filter (face box >= {fraction:g} of the image): kept {len(kept)} of {len(names)}"
    ]
    return kept, notes, problems


def autolink_scale(w: float, h: float, size: int) -> tuple[float, float]:
    """AutoLink's scaling: x by size / H, y by size / W (see the module doc)."""
    return size / h, size / w


def open(
    path: Path,
    *,
    size: int | None = None,
    split: str | None = None,
    strict: bool = False,
    variant: Variant | None = None,
    min_face_fraction: float = 0.3,
    autolink_swap: bool = False,
    **loading: Unpack[ImageOptions],
) -> AnnotatedImages:
    """CelebA/MAFL samples with ``kp2d`` (5, 2) scaled to ``size`` (see the module doc)."""
    if autolink_swap and size is None:
        raise ConfigError("autolink_swap reproduces a resize; it needs a size")
    s = scan(path, split=split, variant=variant, min_face_fraction=min_face_fraction)
    return open_scan(
        s,
        size=size,
        strict=strict,
        tag=f"{NAME}-{s.split}-{min_face_fraction:g}",
        keypoint_scale=autolink_scale if autolink_swap else exact_scale,
        **loading,
    )
