"""COCO keypoints JSON, for any category (people, animals, objects labelled with CVAT & co).

Format: one JSON file with ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``,
``category_id``, ``keypoints`` = [x1, y1, v1, ..., xK, yK, vK], ``bbox`` = [x, y, w, h],
``iscrowd``) and ``categories`` (``id``, ``name``, ``keypoints`` = the K names). ``PATH`` is the
JSON file, or a folder holding it (also in ``annotations/``); ``split`` picks among several
files by the end of their name (``person_keypoints_val2017.json`` is split ``val2017``).

Images are looked for in ``images=`` if given, else next to the JSON, in ``<split>/``,
``images/<split>/`` or ``images/`` beside it or beside its folder (COCO's own layout).

Samples: one per annotated instance (``iscrowd`` instances and those with fewer than
``min_keypoints`` labelled keypoints are left out), ``kp2d`` (K, 2) and ``vis`` = ``v > 0``:
a keypoint is present when its location is labelled, whether visible (2) or occluded (1);
``v = 0`` keypoints get ``vis=False`` and coordinates 0. With several keypoint categories,
``category`` (name or id) chooses one.

``crop="none"`` (default) resizes the whole image, which suits one object per image; images
holding several instances are then repeated, once per instance, and a warning says so.
``crop="bbox"`` cuts the square of side ``max(w, h)`` around each instance's box (outside the
image filled with the background colour); keypoints outside it become invisible.

Errors name the JSON file and the annotation's index and id: keypoint lists whose length is not
3K, non-numbers, NaN, ``v`` not in {0, 1, 2}, unknown image ids, missing image files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Unpack, get_args

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
    raise_problems,
    square_box,
)
from kp3d.errors import ConfigError, DataError

NAME = "coco"
log = logging.getLogger("kp3d.data")
_HEAD = 1 << 20


def _is_coco_json(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
            if b'"images"' not in head and b'"annotations"' not in head:
                return False
            chunk = head
            while chunk:
                if b'"keypoints"' in chunk:
                    return True
                # Overlap the chunks so the key cannot straddle a boundary unseen.
                tail = chunk[-16:]
                chunk = f.read(_HEAD)
                chunk = tail + chunk if chunk else b""
    except OSError:
        return False
    return False


def _json_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if _is_coco_json(path) else []
    if not path.is_dir():
        return []
    return [
        p
        for d in (path, path / "annotations")
        if d.is_dir()
        for p in sorted(d.glob("*.json"))
        if _is_coco_json(p)
    ]


def detect(path: Path) -> bool:
    """A COCO-style JSON with keypoints (or a folder with one, also in ``annotations/``)."""
    return bool(_json_files(path))


def _split_name(json_path: Path) -> str:
    return json_path.stem.rsplit("_", 1)[-1]


def _choose_json(path: Path, split: str | None) -> Path:
    files = _json_files(path)
    if not files:
        raise DataError(
            f"{path}: no COCO keypoints JSON (needs images, annotations, categories with keypoints)"
        )
    if split is not None:
        chosen = [f for f in files if _split_name(f) == split or f.stem == split]
        if len(chosen) != 1:
            raise ConfigError(
                f"{path}: split {split!r} matches {len(chosen)} files; valid splits: "
                f"{', '.join(_split_name(f) for f in files)}"
            )
        return chosen[0]
    if len(files) > 1:
        raise ConfigError(
            f"{path}: several keypoint files; choose one with split=: "
            f"{', '.join(_split_name(f) for f in files)}"
        )
    return files[0]


def _image_dir(json_path: Path, file_name: str, images: Path | None) -> Path:
    if images is not None:
        return images
    here, split = json_path.parent, _split_name(json_path)
    candidates = [
        here,
        here / split,
        here / "images" / split,
        here / "images",
        here.parent / split,
        here.parent / "images" / split,
        here.parent / "images",
    ]
    for c in candidates:
        if (c / file_name).is_file():
            return c
    raise DataError(
        f"{json_path}: cannot find the image {file_name!r} in any of "
        f"{', '.join(str(c) for c in candidates)}; pass images=FOLDER"
    )


def _category(cats: list[dict[str, Any]], category: str | int | None, file: Path) -> dict[str, Any]:
    with_kp = [
        c
        for c in cats
        if isinstance(c, dict)
        and isinstance(c.get("keypoints"), list)
        and len(c["keypoints"]) > 0
        and "id" in c
    ]
    if not with_kp:
        raise DataError(f"{file}: no category has a non-empty 'keypoints' list")
    listing = ", ".join(f"{c.get('name', '?')} (id {c['id']})" for c in with_kp)
    if category is None:
        if len(with_kp) > 1:
            raise ConfigError(
                f"{file}: several keypoint categories; choose one with category=: {listing}"
            )
        return with_kp[0]
    for c in with_kp:
        if category in (c["id"], c.get("name"), str(c["id"])):
            return c
    raise ConfigError(f"{file}: no keypoint category {category!r}; valid: {listing}")


def parse(
    json_path: Path,
    *,
    category: str | int | None = None,
    images: Path | None = None,
    crop: Crop = "none",
    min_keypoints: int = 1,
) -> tuple[list[Entry], list[Problem], list[str], list[str]]:
    """Entries, problems, keypoint names and notes of one COCO keypoints file.

    Raises:
        DataError: not JSON, or not the COCO structure at all.
        ConfigError: ambiguous or unknown ``category``.
    """
    try:
        with json_path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{json_path}, line {e.lineno}: not valid JSON ({e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: cannot read ({e})") from e
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(
            f"{json_path}: expected an object with lists 'images', 'annotations', 'categories'"
        )
    cat = _category(data["categories"], category, json_path)
    names = [str(n) for n in cat["keypoints"]]
    k = len(names)

    problems: list[Problem] = []
    files: dict[Any, str] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            problems.append(Problem(json_path, None, f"images[{i}]: needs 'id' and 'file_name'"))
        elif im["id"] in files:
            problems.append(Problem(json_path, None, f"images[{i}]: id {im['id']} used twice"))
        else:
            files[im["id"]] = im["file_name"]

    selected: list[tuple[int, Any, np.ndarray, np.ndarray, Any]] = []
    dropped = 0
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or a.get("category_id") != cat["id"]:
            continue
        where = f"annotations[{i}] (id {a.get('id', '?')})"
        if a.get("iscrowd"):
            continue
        got = _keypoints(a.get("keypoints"), k)
        if isinstance(got, str):
            problems.append(Problem(json_path, None, f"{where}: {got}"))
            continue
        if a.get("image_id") not in files:
            problems.append(
                Problem(json_path, None, f"{where}: unknown image_id {a.get('image_id')!r}")
            )
            continue
        xy, vis = got
        if vis.sum() < min_keypoints:
            dropped += 1
            continue
        selected.append((i, a.get("id", i), xy, vis, a))

    per_image: dict[Any, int] = {}
    for _, _, _, _, a in selected:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    image_dir: Path | None = None
    entries: list[Entry] = []
    for i, ann_id, xy, vis, a in selected:
        where = f"annotations[{i}] (id {ann_id})"
        file_name = files[a["image_id"]]
        if image_dir is None:
            image_dir = _image_dir(json_path, file_name, images)
        path = image_dir / file_name
        if not path.is_file():
            problems.append(Problem(json_path, None, f"{where}: image {path} does not exist"))
            continue
        box = None
        if crop == "bbox":
            bbox = a.get("bbox")
            box = square_box(bbox) if _numbers(bbox, 4) else None
            if box is None:
                problems.append(
                    Problem(
                        json_path,
                        None,
                        f"{where}: bbox {bbox!r} is not 4 numbers with positive width and height",
                    )
                )
                continue
        name = file_name if per_image[a["image_id"]] == 1 else f"{file_name}#{ann_id}"
        entries.append(
            Entry(path=path, name=name, kp2d=xy, vis=vis, box=box, where=f"{json_path}: {where}")
        )
    notes = [f"category {cat.get('name', cat['id'])!r}: {k} keypoints"]
    if dropped:
        notes.append(
            f"{dropped} instances with fewer than {min_keypoints} labelled keypoints left out"
        )
    crowded = sum(1 for n in per_image.values() if n > 1)
    if crowded:
        notes.append(f"{crowded} images hold several instances")
    return entries, problems, names, notes


def _numbers(v: Any, n: int) -> bool:
    return (
        isinstance(v, list)
        and len(v) == n
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    )


def _keypoints(raw: Any, k: int) -> tuple[np.ndarray, np.ndarray] | str:
    if not isinstance(raw, list) or len(raw) != 3 * k:
        n = len(raw) if isinstance(raw, list) else type(raw).__name__
        return f"'keypoints' has {n} values, expected {3 * k} (x, y, v for {k} keypoints)"
    if not _numbers(raw, 3 * k):
        return "'keypoints' holds values that are not numbers"
    a = np.asarray(raw, dtype=np.float64).reshape(k, 3)
    v = a[:, 2]
    if not np.isin(v, (0, 1, 2)).all():
        return f"visibility flags must be 0, 1 or 2, got {sorted(set(v.tolist()) - {0, 1, 2})}"
    vis = v > 0
    if not np.isfinite(a[vis, :2]).all():
        return "a labelled keypoint has non-finite coordinates"
    return np.where(vis[:, None], a[:, :2], 0.0), vis


def scan(
    path: Path,
    *,
    split: str | None = None,
    category: str | int | None = None,
    images: str | Path | None = None,
    crop: Crop = "none",
    min_keypoints: int = 1,
) -> Scan:
    """Parse the chosen keypoints file (see :func:`parse`)."""
    check_choice(crop, get_args(Crop), "crop")
    json_path = _choose_json(Path(path), split)
    entries, problems, names, notes = parse(
        json_path,
        category=category,
        images=None if images is None else Path(images),
        crop=crop,
        min_keypoints=min_keypoints,
    )
    if not entries and not problems:
        problems.append(Problem(json_path, None, "no annotated instance with keypoints"))
    root = json_path.parent
    splits = {_split_name(f): 0 for f in _json_files(Path(path))}
    splits[_split_name(json_path)] = len(entries)
    return Scan(
        format=NAME,
        root=root,
        entries=entries,
        problems=problems,
        split=f"{_split_name(json_path)}-{category}-{crop}-{min_keypoints}",
        splits=splits,
        images=sorted({e.path for e in entries}),
        labelled=len(entries),
        keypoint_names=names,
        notes=notes,
    )


def open(
    path: Path,
    *,
    size: int | None = None,
    split: str | None = None,
    strict: bool = False,
    category: str | int | None = None,
    images: str | Path | None = None,
    crop: Crop = "none",
    min_keypoints: int = 1,
    **loading: Unpack[ImageOptions],
) -> AnnotatedImages:
    """One sample per annotated instance with ``kp2d`` (K, 2) and ``vis`` (see the module doc)."""
    s = scan(
        path, split=split, category=category, images=images, crop=crop, min_keypoints=min_keypoints
    )
    # Problems first (as open_scan would), so no warning precedes an error.
    raise_problems(s.problems)
    crowded = [n for n in s.notes if "several instances" in n]
    if crop == "none" and crowded:
        log.warning(
            "%s: %s; with crop='none' each instance is a sample of the whole image "
            "(crop='bbox' cuts each instance out)",
            path,
            crowded[0],
        )
    return open_scan(s, size=size, strict=strict, tag=f"{NAME}-{s.split}", **loading)
