"""``kp3d infer``: run a trained model on new data: images, or what the method reads.

``--input`` is what the run's method reads (``MethodSpec.inputs``): for image methods a folder of
images (searched recursively) or one image; for lifting methods a keypoint file (``.npz`` with
``kp2d`` (N, K, 2), the format of ``kp3d train --data``); for multi-view methods a multi-view
set (``kp3d synth ... --views V``). Images are named by their path relative to ``--input``,
dataset samples by their index (``000000``, ...).

Output ``--out``: one ``.npz`` or ``.json`` with, per input, its ``names``, ``image_size``
``(W, H)`` of the original image (image inputs only) and every field of the method's
prediction (:class:`kp3d.methods.prediction.Prediction`) it has, then its ``extras`` under their
own names; also the learned artifacts (``skeleton``, ``canonical_shape``, ``shape_basis``, ...
where the method has them) and the inputs that could not be read (skipped with a warning, or an
error with ``--strict``). Pixel-frame fields are mapped to the pixels of each *original* image
by ``Prediction.rescale`` (continuous coordinates, :mod:`kp3d.geometry`); for dataset inputs they
stay in the frame of the data as read (a keypoint file's own pixels; a multi-view set's views
resized to the model's size).

=============  ======================  ======  ===================================================
key            shape (per input)       unit    frame
=============  ======================  ======  ===================================================
kp2d           (K, 2) / (V, K, 2)      px      original image (u, v), continuous coordinates
vis            (K,) / (V, K)           --      visibility or confidence per keypoint
kp3d           (K, 3)                  method  camera frame (first view's for multi-view
                                               methods); lifters: x, y the input keypoints
kp3d_image     (K, 3) / (V, K, 3)      px      original image: x, y in pixels, z depth scaled
                                               like x, y
depth          (1, h, w)               method  camera z per pixel of the model's input view
normals        (3, h, w)               --      unit normals, camera frame
albedo         (3, h, w)               [0, 1]  model's input view
mask           (1, h, w)               [0, 1]  foreground probability, model's input view
R              (3, 3) / (V, 3, 3)      --      object-to-camera rotation
heatmaps       (K, h, w)               --      keypoint distributions (only with --heatmaps)
lifted_kp3d    (K, 3)                  method  --lift: the given 2D points in the camera frame
                                               of ``depth`` (NaN where not lifted)
lifted_valid   (K,)                    --      --lift: the point fell on the predicted surface
extras         method-specific         method  e.g. T, S, alpha, canonical, kp2d_normalised
=============  ======================  ======  ===================================================

Streaming: results are written batch by batch to ``OUT.parts/`` (each part atomically) and
merged into ``OUT`` at the end, so a crash or kill loses at most the batch in flight; running the
same command again skips what is done. The parts folder remembers the run, input, image size and
options it belongs to, and refuses to be mixed with another.

``--overlay [DIR]`` writes each input image with its keypoints and the learned skeleton drawn, at
the image's own resolution, to ``DIR`` (bare ``--overlay``: ``OUT_overlay/`` beside ``OUT``),
under the same relative names (``.png`` appended to other extensions); only image inputs have
overlays. Heatmaps are large and left out unless ``--heatmaps``.

``--lift FILE`` lifts 2D points through the predicted depth map (methods whose prediction has
``depth`` and ``extras["intrinsics"]``, e.g. ``unsup3d``): FILE is the results ``.npz`` or
``.json`` of another ``kp3d infer`` on the same inputs (any keypoint method), or any ``.npz`` with
``names`` (N,) and ``kp2d`` (N, K, 2) in pixels of the original images. Each input's points are
found by name, mapped to the depth map's pixels, read there (bilinear, foreground only:
:func:`kp3d.geometry.lift_points`) and unprojected with the intrinsics; this is how the 2D
keypoints of one method get 3D from another's depth.

``--mesh [DIR]`` writes each input's canonical surface (methods with ``extras["canonical_depth"]``
and ``extras["intrinsics"]``, e.g. ``unsup3d``) as a mesh coloured by ``extras["canonical_image"]``
(the shaded canonical image), twice: ``DIR/NAME.obj`` (Wavefront, ``v x y z r g b``) and
``DIR/NAME.ply`` (ASCII, uchar colours), by :func:`kp3d.geometry.depth_mesh.save_depth_mesh`
(bare ``--mesh``: ``OUT_mesh/`` beside ``OUT``; NAME is the input's name, extension kept).

Videos (``.mp4``, ``.mov``, ``.mkv``, ...; image methods): frames are decoded one at a time and
predicted in batches; the output has one entry per frame (``names`` ``frame_000000``, ...,
``time_s``), every pixel field in the frame's pixels. ``--smooth HZ`` runs a 1-euro filter
(:mod:`kp3d.geometry.filters`) over the keypoint tracks (``kp2d``, ``kp3d_image``): a lower cut-off
smooths more, ``--smooth-beta`` lets fast motion through with less lag. ``--overlay [FILE]``
writes the video with keypoints and skeleton drawn (bare: ``OUT_overlay.mp4``). A video's results
are written at the end (an interrupted video starts again).

``--backend onnx`` runs the graph of ``kp3d export`` (``RUN/model.onnx``, exported first when
missing or older than the weights) with onnxruntime instead of PyTorch.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError, UserError
from kp3d.methods.prediction import Prediction

log = logging.getLogger("kp3d.infer")

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
        help="what the method reads: a folder of images (searched recursively) or one image; "
        "a keypoint .npz for lifting methods; a multi-view set for multi-view methods",
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
        type=Path,
        nargs="?",
        const=True,
        default=None,
        metavar="DIR",
        help="also write the images with keypoints and skeleton drawn to DIR "
        "(bare --overlay: OUT_overlay/ beside OUT)",
    )
    parser.add_argument(
        "--heatmaps",
        action="store_true",
        help="also write the keypoint heatmaps (large; left out by default)",
    )
    parser.add_argument(
        "--lift",
        type=Path,
        default=None,
        metavar="FILE",
        help="lift 2D points through the predicted depth: FILE is another kp3d infer's results "
        "(.npz/.json) on the same inputs, or an .npz with names and kp2d (N, K, 2) in pixels of "
        "the original images; adds lifted_kp3d and lifted_valid",
    )
    parser.add_argument(
        "--mesh",
        type=Path,
        nargs="?",
        const=True,
        default=None,
        metavar="DIR",
        help="also write each input's canonical shaded surface as DIR/NAME.obj and DIR/NAME.ply "
        "(bare --mesh: OUT_mesh/ beside OUT)",
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
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="run the model with PyTorch or its ONNX graph (onnxruntime; kp3d[onnx]) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--smooth",
        type=float,
        default=None,
        metavar="HZ",
        help="videos: 1-euro filter over the keypoint tracks with this cut-off frequency at rest "
        "(lower = smoother; e.g. 1.0); default off",
    )
    parser.add_argument(
        "--smooth-beta",
        type=float,
        default=0.0,
        metavar="B",
        help="videos: the 1-euro filter's speed coefficient (per pixel/s; higher = less lag on "
        "fast motion) (default: %(default)s)",
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "output (per input):\n" + _OUTPUT_TABLE


_OUTPUT_TABLE = __doc__[__doc__.index("=====") : __doc__.rindex("=====") + 5] if __doc__ else ""


def _image_size(run: Any) -> int | None:
    """The image side the run's model takes: the training data's, else the method config's."""
    size = (run.config.get("data") or {}).get("size")
    return int(size) if size is not None else run.spec.inputs.image_size(run.method_config)


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
        entry: dict[str, Any] = {"name": name}
        if "image_size" in arrays:
            w, h = arrays["image_size"][i].tolist()
            entry.update(width=w, height=h)
        images.append({**entry, **{k: arrays[k][i].tolist() for k in keys}})
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


def load_points(path: Path) -> dict[str, np.ndarray]:
    """``--lift FILE``: 2D points (K, 2) by input name, from the results of ``kp3d infer``
    (``.npz`` or ``.json``) or any ``.npz`` with ``names`` (N,) and ``kp2d`` (N, K, 2).

    Raises:
        DataError: unreadable file, missing keys, or points that are not (K, 2) of one K.
    """
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            images = doc.get("images") if isinstance(doc, dict) else None
            if not isinstance(images, list):
                raise DataError(f"--lift {path}: not the .json results of kp3d infer (no images)")
            names = [im.get("name") for im in images]
            if any("kp2d" not in im for im in images):
                raise DataError(f"--lift {path}: an entry has no kp2d")
            kp2d = np.asarray([im["kp2d"] for im in images], dtype=np.float64)
        else:
            with np.load(path, allow_pickle=False) as z:
                if "names" not in z.files or "kp2d" not in z.files:
                    raise DataError(f"--lift {path}: needs the arrays names and kp2d")
                names, kp2d = z["names"].tolist(), z["kp2d"].astype(np.float64)
    except (OSError, ValueError) as e:
        raise DataError(f"--lift {path}: cannot read it ({e})") from e
    if kp2d.ndim != 3 or kp2d.shape[-1] != 2 or len(names) != len(kp2d):
        raise DataError(
            f"--lift {path}: kp2d must be (N, K, 2) with one name each, got {kp2d.shape} "
            f"for {len(names)} names (multi-view points cannot be lifted)"
        )
    return dict(zip(names, kp2d))


def _lift(
    pred: Prediction, points: list[np.ndarray], sizes: list[tuple[int, int]] | None, flag: Path
) -> dict[str, np.ndarray]:
    """``lifted_kp3d`` and ``lifted_valid`` of one batch: ``points`` (K, 2) per sample in pixels
    of the original images of ``sizes`` (W, H) (None: the model's input frame)."""
    from kp3d.geometry import lift_points

    K = pred.extras.get("intrinsics")
    if pred.depth is None or K is None:
        raise UserError(f"--lift {flag}: this method predicts no depth map with intrinsics")
    h, w = pred.depth.shape[-2:]
    uv = torch.as_tensor(np.stack(points), dtype=torch.float64)
    if sizes is not None:
        scale = torch.tensor([[w, h]], dtype=torch.float64) / torch.tensor(sizes).double()
    else:
        ih, iw = pred.image_size or (h, w)
        scale = torch.tensor([[w / iw, h / ih]], dtype=torch.float64)
    lifted = lift_points(uv * scale[:, None, :], pred.depth.double(), K.double(), mask=pred.mask)
    return {
        "lifted_kp3d": lifted.points.float().numpy(),
        "lifted_valid": lifted.valid.numpy(),
    }


def _write_meshes(pred: Prediction, names: list[str], folder: Path) -> None:
    """``--mesh``: each sample's canonical surface as ``folder/NAME.obj`` and ``.ply``."""
    from kp3d.geometry.depth_mesh import save_depth_mesh

    depth, K = pred.extras.get("canonical_depth"), pred.extras.get("intrinsics")
    if depth is None or K is None:
        raise UserError("--mesh: this method predicts no canonical depth map with intrinsics")
    colors = pred.extras.get("canonical_image")
    for j, name in enumerate(names):
        for suffix in (".obj", ".ply"):
            save_depth_mesh(
                folder / (name + suffix),
                depth[j],
                K[j],
                colors=None if colors is None else colors[j].clamp(0, 1),
            )


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from kp3d.commands.train import setup_logging
    from kp3d.data.images import report_skipped
    from kp3d.data.schema import collate
    from kp3d.data.video import is_video
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
    size = _image_size(loaded)
    predict = _predictor(args, loaded)
    if is_video(args.input):
        if args.lift is not None or args.mesh is not None:
            raise UserError(f"--input {args.input}: --lift and --mesh take images, not videos")
        return _infer_video(args, loaded, predict, size)
    lift_points = load_points(args.lift) if args.lift is not None else None
    source = loaded.spec.inputs.inference_source(args.input, size=size)
    names = source.names

    parts = PartStore(
        out,
        {
            "run": str(args.run.resolve()),
            "input": str(args.input.resolve()),
            "size": size,
            "heatmaps": bool(args.heatmaps),
            "lift": None if args.lift is None else str(args.lift.resolve()),
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
            "%s: %d of %d inputs already done; continuing", out, len(names) - len(todo), len(names)
        )

    model = loaded.model.eval()
    artifacts = {k: v.detach().float().cpu().numpy() for k, v in model.artifacts().items()}
    edges = skeleton_edges(artifacts.get("skeleton"))
    overlay_dir: Path | None = None
    if args.overlay is not None:
        overlay_dir = out.with_name(out.stem + "_overlay") if args.overlay is True else args.overlay
    mesh_dir: Path | None = None
    if args.mesh is not None:
        mesh_dir = out.with_name(out.stem + "_mesh") if args.mesh is True else args.mesh
    no_overlay = False
    loader = DataLoader(
        source.items(todo),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=list,
    )
    with (
        torch.no_grad(),
        Progress(
            TextColumn("infer"),
            BarColumn(),
            MofNCompleteColumn(),
            console=CONSOLE,
            transient=True,
            disable=not todo,
        ) as bar,
    ):
        task = bar.add_task("infer", total=len(todo))
        for items in loader:
            ok = [it for it in items if it.sample is not None]
            bad = [it for it in items if it.sample is None]
            if bad and args.strict:
                raise DataError(f"{bad[0].error} (--strict)")
            arrays: dict[str, np.ndarray] = {
                "names": np.array([names[it.index] for it in ok], dtype=str),
                "skipped_names": np.array([names[it.index] for it in bad], dtype=str),
                "skipped_errors": np.array([it.error for it in bad], dtype=str),
            }
            sizes = [it.size for it in ok]
            known = bool(ok) and all(s is not None for s in sizes)
            if known:
                arrays["image_size"] = np.array(sizes, dtype=np.int64).reshape(-1, 2)
            if ok:
                batch = collate([it.sample for it in ok]).to(device)
                pred = predict(batch).detach_cpu()
                ok_names = [names[it.index] for it in ok]
                if mesh_dir is not None:
                    _write_meshes(pred, ok_names, mesh_dir)
                if lift_points is not None:
                    missing = [n for n in ok_names if n not in lift_points]
                    if missing:
                        raise DataError(f"--lift {args.lift}: no points for input {missing[0]!r}")
                    arrays.update(
                        _lift(
                            pred,
                            [lift_points[n] for n in ok_names],
                            sizes if known else None,
                            args.lift,
                        )
                    )
                if known and pred.image_size is not None:
                    pred = pred.rescale(torch.tensor(sizes))
                if not args.heatmaps:
                    pred = pred.replace(heatmaps=None)
                for key, value in pred.items():
                    if key in arrays:
                        raise UserError(
                            f"{args.run}: the prediction's {key!r} clashes with "
                            "an output column of kp3d infer"
                        )
                    arrays[key] = value.numpy()
                if overlay_dir is not None and pred.kp2d is not None and pred.kp2d.ndim == 3:
                    for j, it in enumerate(ok):
                        file = source.image_file(it.index)
                        if file is None:
                            no_overlay = True
                            continue
                        _overlay(
                            file,
                            overlay_dir / _overlay_name(names[it.index]),
                            arrays["kp2d"][j],
                            edges,
                            arrays["vis"][j] if "vis" in arrays else None,
                        )
            parts.write(arrays)
            bar.advance(task, len(items))
    if no_overlay:
        log.warning("--overlay: only image inputs are drawn; %s has none", args.input)

    order = {n: i for i, n in enumerate(names)}
    arrays, skipped = parts.merged(order)
    report_skipped([(n, e) for n, e in skipped], len(names), strict=False)
    extra: dict[str, Any] = {
        "run": str(args.run),
        "method": loaded.method_name,
        "image_size_model": size,
        **artifacts,
    }
    _write_output(out, arrays, extra, skipped)
    parts.remove()
    n = len(arrays.get("names", []))
    CONSOLE.print(
        f"{n} inputs -> {out}"
        + (f" (overlays in {overlay_dir})" if overlay_dir is not None and not no_overlay else "")
        + (f" (meshes in {mesh_dir})" if mesh_dir is not None else "")
        + (f"; {len(skipped)} unreadable skipped" if skipped else ""),
        highlight=False,
    )
    return 0


def _predictor(args: argparse.Namespace, loaded: Any) -> Callable[[Sample], Prediction]:
    """``predict(batch)`` of the chosen backend."""
    if args.backend == "torch":
        return loaded.model.predict
    from kp3d.engine.export import run_graph

    return run_graph(args.run).predict


def _infer_video(
    args: argparse.Namespace,
    loaded: Any,
    predict: Callable[[Sample], Prediction],
    size: int | None,
) -> int:
    """``kp3d infer`` on one video file (see the module doc)."""
    from PIL import Image

    from kp3d.data.video import VideoWriter, probe
    from kp3d.engine.monitor import CONSOLE
    from kp3d.geometry.filters import OneEuroFilter
    from kp3d.viz.overlay import draw_keypoints, skeleton_edges

    out: Path = args.out
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    frames = loaded.spec.inputs.video_frames(args.input, size=size)
    info = probe(args.input)
    model = loaded.model.eval()
    artifacts = {k: v.detach().float().cpu().numpy() for k, v in model.artifacts().items()}
    edges = skeleton_edges(artifacts.get("skeleton"))
    filters: dict[str, OneEuroFilter] = {}
    if args.smooth is not None:
        filters = {
            k: OneEuroFilter(fps=info.fps or 25.0, min_cutoff=args.smooth, beta=args.smooth_beta)
            for k in ("kp2d", "kp3d_image")
        }
    overlay: Path | None = None
    if args.overlay is not None:
        overlay = out.with_name(out.stem + "_overlay.mp4") if args.overlay is True else args.overlay
    columns: dict[str, list[np.ndarray]] = {}
    writer = VideoWriter(overlay, fps=info.fps, size=info.size) if overlay else None
    try:
        with torch.no_grad():
            for chunk in _chunks(frames, args.batch_size):
                batch = Sample(image=torch.stack([f.image for f in chunk]))
                pred = predict(batch).detach_cpu()
                pred = pred.rescale(torch.tensor([info.size] * len(chunk)))
                if not args.heatmaps:
                    pred = pred.replace(heatmaps=None)
                for j, frame in enumerate(chunk):
                    row = {k: v[j] for k, v in pred.items()}
                    for k, f in filters.items():
                        if k in row:
                            row[k] = f(row[k])
                    row["time_s"] = torch.tensor(frame.time_s)
                    for k, v in row.items():
                        columns.setdefault(k, []).append(v.numpy())
                    if writer is not None and "kp2d" in row:
                        vis = row["vis"].numpy() if "vis" in row else None
                        drawn = draw_keypoints(
                            Image.fromarray(frame.pixels), row["kp2d"].numpy(), edges=edges, vis=vis
                        )
                        writer.write(np.asarray(drawn.convert("RGB")))
    except BaseException as e:
        if writer is not None:
            writer.close(e)
        raise
    if writer is not None:
        writer.close()
    n = len(columns.get("time_s", []))
    arrays = {k: np.stack(v) for k, v in columns.items()}
    arrays["names"] = np.array([f"frame_{i:06d}" for i in range(n)], dtype=str)
    arrays["image_size"] = np.array([info.size] * n, dtype=np.int64).reshape(-1, 2)
    extra: dict[str, Any] = {
        "run": str(args.run),
        "method": loaded.method_name,
        "image_size_model": size,
        "fps": info.fps,
        **artifacts,
    }
    _write_output(out, arrays, extra, [])
    CONSOLE.print(
        f"{n} frames -> {out}" + (f" (overlay video {overlay})" if overlay else ""),
        highlight=False,
    )
    return 0


def _chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
