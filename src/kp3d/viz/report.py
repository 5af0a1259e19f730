"""The self-contained HTML report of a run (``kp3d report``).

One file, no external resources: the evaluation table, training curves, the method's learned
artifacts (the skeleton with its edge weights and the canonical 3D shape drawn in an interactive
viewer, drag to rotate; every artifact listed), and samples with what the method predicts on them
(keypoints and skeleton on the image, depth map, 3D keypoints); for methods with a canonical
surface (``unsup3d``), an animated turntable of it for the first samples
(:mod:`kp3d.viz.turntable`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from kp3d.data.schema import Sample, collate
from kp3d.engine.monitor import read_metrics
from kp3d.evaluation import result_rows
from kp3d.methods.prediction import Prediction
from kp3d.viz import html
from kp3d.viz.overlay import draw_keypoints


def _progress(run_dir: Path, rows: Sequence[dict[str, Any]]) -> str:
    """`` · N steps, M min`` from the run's ``result.json`` (a finished session), else the last
    checkpoint or logged step, marked as not finished."""
    from kp3d.engine.run import RESULT_FILE, checkpoints

    path = run_dir / RESULT_FILE
    if path.is_file():
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            return (
                f" · {html.escape(result['steps'])} steps in "
                f"{html.escape(round(float(result['elapsed_s']) / 60, 1))} min"
            )
        except (OSError, ValueError, KeyError, TypeError):
            pass
    found = checkpoints(run_dir)
    step = found[-1][0] if found else (rows[-1].get("step") if rows else None)
    return "" if step is None else f" · step {html.escape(step)} (not finished)"


def training_curves(rows: Sequence[dict[str, Any]]) -> str:
    """Charts of every numeric series in the training log against the step."""
    rows = [r for r in rows if isinstance(r.get("step"), (int, float))]
    if not rows:
        return "<p class='muted'>no training log</p>"
    keys = sorted(
        {
            k
            for r in rows
            for k, v in r.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"
        }
    )
    loss_keys = [k for k in keys if "loss" in k]
    speed_keys = [k for k in keys if k.endswith("per_s") or "images" in k]
    other = [
        k
        for k in keys
        if k not in loss_keys and k not in speed_keys and k not in ("time", "elapsed_s", "epoch")
    ]

    def series(names: Sequence[str]) -> dict[str, tuple[list[float], list[float]]]:
        out = {}
        for k in names:
            pts = [(r["step"], float(r[k])) for r in rows if k in r]
            out[k] = ([p[0] for p in pts], [p[1] for p in pts])
        return out

    parts = []
    if loss_keys:
        parts.append(html.line_chart(series(loss_keys), title="losses (log10)", log_y=True))
    if speed_keys:
        parts.append(html.line_chart(series(speed_keys), title="throughput"))
    if other:
        parts.append(html.line_chart(series(other), title="other logged values"))
    return "<div class='grid'>" + "".join(parts) + "</div>"


def draw_overlay(
    image: torch.Tensor,
    kp2d: np.ndarray,
    edges: Sequence[tuple[int, int, float]],
    *,
    scale: int = 3,
    vis: np.ndarray | None = None,
) -> Image.Image:
    """An image (3, H, W) in [0, 1], enlarged ``scale`` times so small training images stay
    legible, with keypoints (K, 2) in pixels of the image and the skeleton drawn on it."""
    arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    big = Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    return draw_keypoints(big, np.asarray(kp2d, float) * scale, edges=edges, vis=vis)


FLAT_TRACKS = 0.25
"""Below this fraction of the ground truth's ``tracks_sv3``, the discovered keypoints are
called a flat template: what remains is within what noise and detection jitter give."""
SAME_DEPTH = 0.02
"""A 3D error within this relative margin of the mean-depth baseline counts as no better."""
ONE_POSE_DEG = 2.0
"""A rotation spread below this many degrees means the head gives every image one pose."""
FOLLOWS_NOTHING = 0.9
"""2D keypoints whose NME is above this fraction of the mean-layout baseline's follow (almost)
nothing in the images: an untrained or failed run, whose 3D numbers mean nothing either."""


def _value(results: dict[str, Any], name: str) -> float | None:
    """The number ``name`` of the first protocol group that has it, else None."""
    for group in results.values():
        if isinstance(group, dict):
            entry = group.get(name)
            if isinstance(entry, dict):
                entry = entry.get("value")
            if isinstance(entry, (int, float)) and not isinstance(entry, bool):
                return float(entry) if math.isfinite(entry) else None
    return None


def recovery_summary(results: dict[str, Any]) -> list[str]:
    """What a run did and did not recover in 3D, in plain sentences, from its evaluation.

    From ``kp3d evaluate``'s results (:mod:`kp3d.evaluation`, keypoint discovery): how much of
    the ground truth's third dimension the discovered keypoints' motion has (``tracks_sv3``
    over ``tracks_sv3_gt``), whether the 3D head's depth beats the mean depth
    (``nme3d_depth`` against ``nme3d_flat_baseline``), how the method's 3D keypoints compare
    with that baseline (``nme3d``), and whether the head turns at all
    (``rotation_spread_deg``). Sentences whose numbers are missing are left out; when the 2D
    keypoints are no better than the mean landmark layout (``FOLLOWS_NOTHING``), one sentence
    says so instead, since every 3D number of such a run is noise.

    Args:
        results: the ``results`` object of an evaluation JSON (protocol groups of metrics).

    Returns:
        Sentences, possibly none.
    """
    for name in ("nme68", "nme5", "nme"):
        nme, layout = _value(results, name), _value(results, f"{name}_mean_layout_baseline")
        if nme is not None and layout is not None:
            if nme > FOLLOWS_NOTHING * layout:
                sentence = (
                    f"The discovered keypoints do not follow the object yet: their 2D NME "
                    f"({nme:.2%}) is close to that of the mean landmark layout given to every "
                    f"image ({layout:.2%}), so the run is too short or failed, and its 3D "
                    f"numbers say nothing."
                )
                return [sentence]
            break
    out: list[str] = []
    sv3, sv3_gt = _value(results, "tracks_sv3"), _value(results, "tracks_sv3_gt")
    if sv3 is not None and sv3_gt is not None and sv3_gt > 0:
        ratio = sv3 / sv3_gt
        numbers = f"(tracks_sv3 {sv3:.3f} against {sv3_gt:.3f} for the ground truth)"
        if ratio < FLAT_TRACKS:
            out.append(
                f"The discovered keypoints move as one flat template: their motion has "
                f"{ratio:.2f} of the ground truth's third dimension {numbers}, so no 3D head "
                f"can add depth to them."
            )
        else:
            out.append(
                f"The discovered keypoints' motion needs a third dimension: {ratio:.2f} of the "
                f"ground truth's {numbers}."
            )
    depth, flat = _value(results, "nme3d_depth"), _value(results, "nme3d_flat_baseline")
    if depth is not None and flat is not None and flat > 0:
        numbers = f"(3D NME {depth:.2%} against {flat:.2%} at the mean depth)"
        if depth > flat * (1 + SAME_DEPTH):
            out.append(f"The 3D head's depth is worse than the mean depth {numbers}.")
        elif depth >= flat * (1 - SAME_DEPTH):
            out.append(f"The 3D head's depth adds nothing over the mean depth {numbers}.")
        else:
            out.append(
                f"The 3D head's depth recovers part of the true depth: {1 - depth / flat:.0%} "
                f"less 3D error than the mean depth {numbers}."
            )
    nme3d = _value(results, "nme3d")
    if nme3d is not None and flat is not None and flat > 0:
        out.append(
            f"The method's 3D keypoints: 3D NME {nme3d:.2%}, {nme3d / flat:.2f} times the "
            f"mean-depth baseline's."
        )
    spread = _value(results, "rotation_spread_deg")
    if spread is not None:
        if spread < ONE_POSE_DEG:
            out.append(
                f"The 3D head gives every image nearly the same rotation ({spread:.2f} degrees "
                f"from their mean): its 3D views all show one shape."
            )
        else:
            out.append(
                f"The 3D head's rotations spread {spread:.1f} degrees about their mean: it turns "
                f"with the images."
            )
    return out


def _evaluation_section(eval_doc: dict[str, Any] | None) -> str:
    if not eval_doc:
        return "<p class='muted'>not evaluated yet: run <code>kp3d evaluate</code></p>"
    results = eval_doc.get("results", {})
    rows = [{"metric": m, "value": v, "protocol": p} for m, v, p in result_rows(results)]
    counts = {k: r["counts"] for k, r in results.items() if isinstance(r, dict) and "counts" in r}
    if "counts" in results:  # a file written before protocols were grouped
        counts = {"": results["counts"]}
    skipped = "".join(
        f"; {html.escape(k)} skipped: {html.escape(r)}"
        for k, r in (eval_doc.get("skipped") or {}).items()
    )
    note = (
        f"<p class='muted'>fit: {html.escape(eval_doc.get('fit', ''))}; "
        f"test: {html.escape(eval_doc.get('test', ''))}; counts: {html.escape(counts)}"
        f"{skipped}</p>"
    )
    summary = recovery_summary(results)
    plain = (
        "<p><b>In plain words:</b> " + " ".join(html.escape(x) for x in summary) + "</p>"
        if summary
        else ""
    )
    return html.table(rows) + plain + note


def depth_image(depth: torch.Tensor, *, scale: int = 3) -> Image.Image:
    """A (1, H, W) depth map as a grey image (near = bright, min-max over its finite positive
    values), enlarged ``scale`` times."""
    d = depth[0].float()
    ok = d.isfinite() & (d > 0)
    grey = torch.zeros_like(d)
    if bool(ok.any()):
        lo, hi = d[ok].min(), d[ok].max()
        grey = torch.where(ok, (hi - d) / (hi - lo).clamp_min(1e-12), 0.0)
    arr = (grey.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)


def map_image(image: torch.Tensor, *, scale: int = 3) -> Image.Image:
    """An RGB (3, H, W) or grey (1, H, W) map in [0, 1] (a reconstruction, a mask), enlarged
    ``scale`` times."""
    arr = (image.float().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    return pil.resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)


def _first_view(t: torch.Tensor) -> torch.Tensor:
    """A sample's dense map (C, H, W), or the first view's of per-view maps (V, C, H, W)."""
    return t[0] if t.ndim == 4 else t


def _learned_section(artifacts: dict[str, np.ndarray], edges: list[tuple[int, int, float]]) -> str:
    """The learned skeleton and canonical shape drawn, every other artifact named with its
    shape."""
    weights, canonical = artifacts.get("skeleton"), artifacts.get("canonical_shape")
    body = ["<h2>Learned structure</h2><div class='grid'>"]
    if canonical is not None:
        body.append(
            "<figure>"
            + html.viewer(canonical, edges, uid="canonical")
            + "<figcaption>canonical 3D shape (drag to rotate)</figcaption></figure>"
        )
        if weights is not None:
            body.append(
                "<figure>"
                + html.skeleton_svg(canonical[:, :2], weights)
                + "<figcaption>skeleton on the canonical shape (front view), "
                "edge opacity = learned weight</figcaption></figure>"
            )
    body.append("</div>")
    others = [{"artifact": k, "shape": " x ".join(map(str, v.shape))} for k, v in artifacts.items()]
    return "".join(body) + html.table(others)


def _sample_cell(
    batch: Sample, pred: Prediction, b: int, edges: list[tuple[int, int, float]]
) -> str:
    """Sample ``b``: its image with the keypoints and skeleton (every view of a multi-view
    sample whose keypoints have a view axis, else the first view), its predicted depth,
    reconstruction and mask (first view), and its 3D keypoints (the first view's, for per-view
    keypoints) in a viewer."""
    cell = "<figure>"
    height = 192
    image = batch.image[b] if batch.image is not None else None
    kp = pred.kp2d[b] if pred.kp2d is not None else None
    views: list[tuple[Tensor, Tensor | None]] = []
    if image is not None and image.ndim == 4:  # views: each with its keypoints, or the first
        if kp is not None and kp.ndim == 3 and kp.shape[0] == image.shape[0]:
            views = [(image[v], kp[v]) for v in range(image.shape[0])]
        else:
            views = [(image[0], None)]
    elif image is not None:
        views = [(image, kp)]
    for view, points in views:
        xy = points.float().cpu().numpy() if points is not None else np.zeros((0, 2))
        overlay = draw_overlay(view.float().cpu(), xy, edges if points is not None else [])
        height = overlay.height
        cell += f"<img src='{html.png_data_uri(overlay)}' width='{overlay.width}'>"
    if pred.depth is not None:
        d = depth_image(pred.depth[b].cpu())
        cell += f"<img src='{html.png_data_uri(d)}' width='{d.width}' title='predicted depth'>"
    recon = pred.extras.get("reconstruction")
    if recon is not None and recon.ndim in (4, 5):
        r = map_image(_first_view(recon[b].cpu()))
        cell += f"<img src='{html.png_data_uri(r)}' width='{r.width}' title='reconstruction'>"
    if pred.mask is not None:
        m = map_image(_first_view(pred.mask[b].cpu()))
        cell += f"<img src='{html.png_data_uri(m)}' width='{m.width}' title='predicted mask'>"
    if pred.kp3d is not None:
        kp3d = pred.kp3d[b]
        kp3d = kp3d[0] if kp3d.ndim == 3 else kp3d
        cell += html.viewer(kp3d.float().cpu().numpy(), edges, size=height, uid=f"s{b}")
    name = batch.name[b] if isinstance(batch.name, list) else ""
    cell += f"<figcaption>{html.escape(Path(name).name if name else b)}</figcaption></figure>"
    return cell


TURNTABLES = 2
"""Samples whose canonical surface the report animates."""


def _turntable_section(pred: Prediction) -> str:
    """Turntables of the canonical shaded surface (extras ``canonical_depth``,
    ``canonical_image``, ``intrinsics``) of the first samples; empty for other methods."""
    from kp3d.viz.turntable import turntable_frames

    depth = pred.extras.get("canonical_depth")
    image = pred.extras.get("canonical_image")
    K = pred.extras.get("intrinsics")
    if depth is None or image is None or K is None:
        return ""
    cells = []
    for b in range(min(TURNTABLES, depth.shape[0])):
        frames = turntable_frames(depth[b], image[b], K[b], frames=12)
        cells.append(
            f"<figure><img src='{html.gif_data_uri(frames)}' width='{frames[0].width}'>"
            f"<figcaption>sample {b}</figcaption></figure>"
        )
    return (
        "<h2>Canonical surface</h2><p class='muted'>the canonical depth map with the shaded "
        "canonical image, turned about the vertical axis</p><div class='grid'>"
        + "".join(cells)
        + "</div>"
    )


def build_report(
    run_dir: Path,
    *,
    dataset: torch.utils.data.Dataset | None = None,
    eval_doc: dict[str, Any] | None = None,
    samples: int = 16,
) -> str:
    """The report page of ``run_dir`` as one HTML string.

    Args:
        run_dir: a run folder written by ``kp3d train``.
        dataset: data as the method reads it, to show predictions on (the first ``samples``);
            None shows none.
        eval_doc: the JSON written by ``kp3d evaluate`` (defaults to ``RUN/eval.json``).
    """
    from kp3d.engine import load_run

    run = load_run(run_dir)
    model = run.model.eval()
    if eval_doc is None and (run_dir / "eval.json").is_file():
        eval_doc = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    rows = read_metrics(run_dir / "metrics.jsonl")
    body = [
        "<p>",
        f"method <b>{html.escape(run.method_name)}</b>",
        f" · data <code>{html.escape((run.config.get('data') or {}).get('path', '?'))}</code>",
        _progress(run_dir, rows),
        f" · kp3d {html.escape((run.config.get('provenance') or {}).get('kp3d_version', '?'))}</p>",
        "<h2>Evaluation</h2>",
        _evaluation_section(eval_doc),
        "<h2>Training</h2>",
        training_curves(rows),
    ]

    artifacts = {k: v.detach().float().cpu().numpy() for k, v in model.artifacts().items()}
    weights = artifacts.get("skeleton")
    edges = html.spanning_edges(weights) if weights is not None else []
    if artifacts:
        body.append(_learned_section(artifacts, edges))

    if dataset is not None and len(dataset) > 0:
        n = min(samples, len(dataset))
        idx = np.linspace(0, len(dataset) - 1, n).round().astype(int)
        batch: Sample = collate([dataset[int(i)] for i in idx])
        with torch.no_grad():
            pred = model.predict(batch).detach_cpu()
        body.append(
            "<h2>Samples</h2><p class='muted'>predicted keypoints and learned skeleton, "
            "depth, reconstruction and mask where predicted, 3D keypoints (drag to rotate)"
            "</p><div class='grid'>"
        )
        body.extend(_sample_cell(batch, pred, b, edges) for b in range(n))
        body.append("</div>")
        body.append(_turntable_section(pred))
    title = f"kp3d report — {run.method_name} — {run_dir.name}"
    return html.page(title, "".join(body))


def montage(images: Sequence[Image.Image], *, columns: int = 8) -> Image.Image:
    """Tile equally sized images into one picture."""
    if not images:
        raise ValueError("montage: no images")
    w, h = images[0].size
    rows = math.ceil(len(images) / columns)
    out = Image.new("RGB", (w * min(columns, len(images)), h * rows), "white")
    for i, im in enumerate(images):
        out.paste(im, ((i % columns) * w, (i // columns) * h))
    return out
