"""``kp3d infer``: run a trained model on a folder of images (or one image).

Output ``--out``: one ``.npz`` or ``.json`` with, per image, its name (path relative to
``--input``), its size ``(W, H)`` and everything the method's ``predict`` returns: ``kp2d``
(K, 2) in pixels of the *original* image (continuous coordinates, :mod:`kp3d.geometry`),
``kp3d``, ``R``, ``T``, ``S``, ``alpha``, ... where the method has them (3D quantities in the
method's own units). Also the learned ``skeleton`` (K, K) and ``canonical_shape`` (K, 3) where
the method has them, and the images that could not be read (skipped with a warning, or an error
with ``--strict``).

Streaming: results are written batch by batch to ``OUT.parts/`` (each part atomically) and
merged into ``OUT`` at the end, so a crash or kill loses at most the batch in flight; running the
same command again skips what is done. The parts folder remembers the run, input and image size
it belongs to, and refuses to be mixed with another.

``--overlay`` writes each image with its keypoints and the learned skeleton drawn to
``OUT_overlay/`` (same relative names; ``.png`` appended to other extensions), at the image's
own resolution.

Videos are not read: extract frames first (``ffmpeg -i clip.mp4 frames/%06d.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kp3d.errors import ConfigError, DataError, UserError

log = logging.getLogger("kp3d.infer")

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
OUTPUT_SUFFIXES = (".npz", ".json")
MANIFEST = "manifest.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", type=Path, required=True, metavar="RUN", help="a run folder of `kp3d train`"
    )
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        metavar="PATH",
        help="a folder of images (searched recursively) or one image file",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="results file: .npz (arrays) or .json",
    )
    parser.add_argument(
        "--overlay",
        action="store_true",
        help="also write images with keypoints and skeleton drawn to OUT_overlay/",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="N",
        help="images per batch; a kill loses at most one batch (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="image-decoding worker processes (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to run the model (default: %(default)s)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="an unreadable image is an error instead of a logged skip",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


class _Images(Dataset[tuple[int, Any, Any, str | None]]):
    """Image ``i`` resized for the model: ``(i, tensor, (W, H), None)``, or ``(i, None, None,
    error)`` when it cannot be read."""

    def __init__(self, paths: list[Path], indices: list[int], size: int) -> None:
        self.paths, self.indices, self.size = paths, indices, size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[int, Any, Any, str | None]:
        from kp3d.data.images import load_image

        i = self.indices[j]
        try:
            image, original = load_image(self.paths[i], size=self.size)
        except DataError as e:
            return i, None, None, str(e)
        return i, image, original, None


def _input_files(path: Path) -> tuple[list[Path], list[str]]:
    """The image files of ``--input`` and their names (relative to it, POSIX style)."""
    from kp3d.data.images import IMAGE_EXTENSIONS, find_images

    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        ext = path.suffix.lower()
        if ext in VIDEO_EXTENSIONS:
            raise UserError(
                f"{path}: videos are not read directly; extract frames first, e.g. "
                f"ffmpeg -i {path} frames/%06d.png, and pass the folder"
            )
        if ext not in IMAGE_EXTENSIONS:
            raise DataError(f"{path}: not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return [path], [path.name]
    files = find_images(path)
    return files, [f.relative_to(path).as_posix() for f in files]


def _image_size(run: Any) -> int:
    from kp3d.commands.train import SIZE_FIELDS

    size = (run.config.get("data") or {}).get("size")
    if size is None:
        size = next(
            (getattr(run.method_config, f) for f in SIZE_FIELDS if hasattr(run.method_config, f)),
            None,
        )
    if size is None:
        raise UserError(f"{run.run_dir}: the run records no image size (config.json data.size)")
    return int(size)


class PartStore:
    """``OUT.parts/``: the results of finished batches, one atomic ``.npz`` per batch."""

    def __init__(self, out: Path, manifest: dict[str, Any]) -> None:
        self.folder = out.with_name(out.name + ".parts")
        self.manifest = manifest

    def open(self) -> None:
        """Create the folder, or check that an existing one belongs to this very job."""
        from kp3d.engine.atomic import atomic_write_json, remove_stale_temporaries

        path = self.folder / MANIFEST
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old = None
            if old != self.manifest:
                raise UserError(
                    f"{self.folder}: holds partial results of another inference (other run, "
                    "input, image size or weights); delete it or choose another --out"
                )
            remove_stale_temporaries(self.folder)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, self.manifest)

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.npz"))

    def done(self) -> set[str]:
        """Names of images already handled (predicted or skipped as unreadable)."""
        names: set[str] = set()
        for p in self.parts():
            with np.load(p, allow_pickle=False) as z:
                names.update(z["names"].tolist())
                names.update(z["skipped_names"].tolist())
        return names

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        from kp3d.engine.atomic import atomic_path

        index = len(self.parts())
        with atomic_path(self.folder / f"part-{index:06d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def merged(self, order: dict[str, int]) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
        """All parts' predictions in input order, and the skipped ``(name, error)`` pairs."""
        chunks: dict[str, list[np.ndarray]] = {}
        skipped: list[tuple[str, str]] = []
        for p in self.parts():
            with np.load(p, allow_pickle=False) as z:
                for key in z.files:
                    if key.startswith("skipped_"):
                        continue
                    chunks.setdefault(key, []).append(z[key])
                skipped += list(zip(z["skipped_names"].tolist(), z["skipped_errors"].tolist()))
        arrays = {k: np.concatenate(v) for k, v in chunks.items()}
        if "names" in arrays and len(arrays["names"]):
            perm = np.argsort([order[n] for n in arrays["names"].tolist()], kind="stable")
            arrays = {k: v[perm] for k, v in arrays.items()}
        return arrays, sorted(skipped, key=lambda s: order.get(s[0], 0))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_output(
    out: Path, arrays: dict[str, np.ndarray], extra: dict[str, Any], skipped: list[tuple[str, str]]
) -> None:
    from kp3d.engine.atomic import atomic_path, atomic_write_json

    if out.suffix.lower() == ".npz":
        payload = dict(arrays)
        payload.update({k: np.asarray(v) for k, v in extra.items() if v is not None})
        payload["skipped_names"] = np.array([s[0] for s in skipped], dtype=str)
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **payload)
        return
    names = arrays.get("names", np.array([], dtype=str)).tolist()
    keys = [k for k in arrays if k not in ("names", "image_size")]
    images = []
    for i, name in enumerate(names):
        w, h = arrays["image_size"][i].tolist()
        images.append(
            {"name": name, "width": w, "height": h, **{k: arrays[k][i].tolist() for k in keys}}
        )
    doc = {
        **{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in extra.items()},
        "images": images,
        "skipped": [{"name": n, "error": e} for n, e in skipped],
    }
    atomic_write_json(out, doc, indent=None)


def _overlay(
    path: Path,
    target: Path,
    kp2d: np.ndarray,
    edges: list[tuple[int, int, float]],
    vis: np.ndarray | None,
) -> None:
    from PIL import Image

    from kp3d.data.images import decode_image
    from kp3d.engine.atomic import atomic_path
    from kp3d.viz.overlay import draw_keypoints

    image = Image.fromarray(decode_image(path, size=None).pixels)
    drawn = draw_keypoints(image, kp2d, edges=edges, vis=vis)
    with atomic_path(target) as tmp:
        drawn.save(tmp, format="PNG")


def _overlay_name(name: str) -> str:
    """``a/b.png`` -> ``a/b.png``; ``a/b.jpg`` -> ``a/b.jpg.png`` (unique, and always a PNG)."""
    return name if name.lower().endswith(".png") else name + ".png"


def _weights_signature(run_dir: Path) -> dict[str, int]:
    st = (run_dir / "model.safetensors").stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def run(args: argparse.Namespace) -> int:
    from kp3d.commands.train import setup_logging
    from kp3d.data.images import report_skipped
    from kp3d.data.schema import Sample
    from kp3d.engine import load_run
    from kp3d.engine.monitor import CONSOLE
    from kp3d.viz.overlay import skeleton_edges

    setup_logging()
    out: Path = args.out
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"--out {out}: the results file must end in {' or '.join(OUTPUT_SUFFIXES)}"
        )
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = (
        "cuda"
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    loaded = load_run(args.run, device=device)
    if loaded.spec.data != "images":
        raise UserError(
            f"{args.run}: method {loaded.method_name!r} takes {loaded.spec.data}, not images"
        )
    size = _image_size(loaded)
    files, names = _input_files(args.input)

    parts = PartStore(
        out,
        {
            "run": str(args.run.resolve()),
            "input": str(args.input.resolve()),
            "size": size,
            "weights": _weights_signature(args.run),
        },
    )
    if out.exists() and not parts.folder.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    parts.open()
    done = parts.done()
    todo = [i for i, n in enumerate(names) if n not in done]
    if done:
        log.info(
            "%s: %d of %d images already done; continuing", out, len(names) - len(todo), len(names)
        )

    model = loaded.model
    weights = model.skeleton()
    weights = weights.detach().float().cpu().numpy() if weights is not None else None
    edges = skeleton_edges(weights)
    overlay_dir = out.with_name(out.stem + "_overlay")
    loader = DataLoader(
        _Images(files, todo, size),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=list,
    )
    with torch.inference_mode():
        for items in loader:
            ok = [it for it in items if it[1] is not None]
            bad = [it for it in items if it[1] is None]
            if bad and args.strict:
                raise DataError(f"{bad[0][3]} (--strict)")
            arrays: dict[str, np.ndarray] = {
                "names": np.array([names[it[0]] for it in ok], dtype=str),
                "image_size": np.array([it[2] for it in ok], dtype=np.int64).reshape(-1, 2),
                "skipped_names": np.array([names[it[0]] for it in bad], dtype=str),
                "skipped_errors": np.array([it[3] for it in bad], dtype=str),
            }
            if ok:
                batch = Sample(image=torch.stack([it[1] for it in ok]).to(device))
                pred = {
                    k: v.detach().float().cpu().numpy() for k, v in model.predict(batch).items()
                }
                if "kp2d" in pred:
                    # Model pixels -> original pixels (continuous coordinates: a pure scale).
                    pred["kp2d"] = pred["kp2d"] * (arrays["image_size"][:, None, :] / size)
                arrays.update(pred)
                if args.overlay:
                    for j, it in enumerate(ok):
                        if "kp2d" in pred:
                            vis = pred["vis"][j] if "vis" in pred else None
                            _overlay(
                                files[it[0]],
                                overlay_dir / _overlay_name(names[it[0]]),
                                pred["kp2d"][j],
                                edges,
                                vis,
                            )
            parts.write(arrays)

    order = {n: i for i, n in enumerate(names)}
    arrays, skipped = parts.merged(order)
    report_skipped([(n, e) for n, e in skipped], len(names), strict=False)
    canonical = model.canonical_shape()
    extra = {
        "run": str(args.run),
        "method": loaded.method_name,
        "image_size_model": size,
        "skeleton": weights,
        "canonical_shape": canonical.detach().float().cpu().numpy()
        if canonical is not None
        else None,
    }
    _write_output(out, arrays, extra, skipped)
    parts.remove()
    n = len(arrays.get("names", []))
    CONSOLE.print(
        f"{n} images -> {out}"
        + (f" (overlays in {overlay_dir})" if args.overlay else "")
        + (f"; {len(skipped)} unreadable skipped" if skipped else ""),
        highlight=False,
    )
    return 0
