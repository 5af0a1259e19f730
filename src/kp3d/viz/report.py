"""The self-contained HTML report of a run (``kp3d report``).

One file, no external resources: the evaluation table, training curves, the learned skeleton
(edges drawn with their weights), the canonical 3D shape in an interactive viewer (drag to
rotate), and sample images with their discovered keypoints, skeleton and per-image 3D keypoints.
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

from kp3d.data.schema import Sample, collate
from kp3d.engine.monitor import read_metrics
from kp3d.evaluation import format_value
from kp3d.viz import html
from kp3d.viz.overlay import draw_keypoints


def training_curves(rows: Sequence[dict[str, Any]]) -> str:
    """Charts of every numeric series in the training log against the step."""
    rows = [r for r in rows if isinstance(r.get("step"), (int, float))]
    if not rows:
        return "<p class='muted'>no training log</p>"
    keys = sorted({k for r in rows for k, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"})
    loss_keys = [k for k in keys if "loss" in k]
    speed_keys = [k for k in keys if k.endswith("per_s") or "images" in k]
    other = [k for k in keys if k not in loss_keys and k not in speed_keys and k not in ("time", "elapsed_s", "epoch")]

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


def _evaluation_section(eval_doc: dict[str, Any] | None) -> str:
    if not eval_doc:
        return "<p class='muted'>not evaluated yet: run <code>kp3d evaluate</code></p>"
    rows = []
    for name, r in eval_doc.get("results", {}).items():
        if name == "counts":
            continue
        if "value" in r:
            rows.append({"metric": name, "value": format_value(name, r["value"]),
                         "protocol": r["protocol"]})
        else:
            for metric, v in r.items():
                rows.append({"metric": f"{name}: {metric}",
                             "value": f"{v['norm']:.4f} / {v['input_units']:.3f}",
                             "protocol": "normalised / input units"})
    counts = eval_doc.get("results", {}).get("counts", {})
    note = (f"<p class='muted'>fit: {html.escape(eval_doc.get('fit', ''))}; "
            f"test: {html.escape(eval_doc.get('test', ''))}; counts: {html.escape(counts)}</p>")
    return html.table(rows) + note


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
        dataset: images to show predictions on (the first ``samples``); None shows none.
        eval_doc: the JSON written by ``kp3d evaluate`` (defaults to ``RUN/eval.json``).
    """
    from kp3d.engine import load_run

    run = load_run(run_dir)
    model = run.model
    if eval_doc is None and (run_dir / "eval.json").is_file():
        eval_doc = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    rows = read_metrics(run_dir / "metrics.jsonl")
    last = rows[-1] if rows else {}
    body = [
        "<p>", f"method <b>{html.escape(run.method_name)}</b>",
        f" · data <code>{html.escape((run.config.get('data') or {}).get('path', '?'))}</code>",
        f" · steps {html.escape(last.get('step', '?'))}" if last else "",
        f" · kp3d {html.escape((run.config.get('provenance') or {}).get('kp3d_version', '?'))}</p>",
        "<h2>Evaluation</h2>", _evaluation_section(eval_doc),
        "<h2>Training</h2>", training_curves(rows),
    ]

    skeleton = model.skeleton()
    canonical = model.canonical_shape()
    weights = skeleton.detach().float().cpu().numpy() if skeleton is not None else None
    edges = html.spanning_edges(weights) if weights is not None else []
    if canonical is not None or weights is not None:
        body.append("<h2>Learned structure</h2><div class='grid'>")
        if canonical is not None:
            c = canonical.detach().float().cpu().numpy()
            body.append("<figure>" + html.viewer(c, edges, uid="canonical") +
                        "<figcaption>canonical 3D shape (drag to rotate)</figcaption></figure>")
            if weights is not None:
                body.append("<figure>" + html.skeleton_svg(c[:, :2], weights) +
                            "<figcaption>skeleton on the canonical shape (front view), "
                            "edge opacity = learned weight</figcaption></figure>")
        body.append("</div>")

    if dataset is not None and len(dataset) > 0:
        n = min(samples, len(dataset))
        idx = np.linspace(0, len(dataset) - 1, n).round().astype(int)
        batch: Sample = collate([dataset[int(i)] for i in idx])
        with torch.no_grad():
            pred = model.predict(batch)
        body.append("<h2>Samples</h2><p class='muted'>discovered keypoints and learned skeleton; "
                    "beside each, its 3D keypoints (drag to rotate)</p><div class='grid'>")
        for b in range(n):
            kp = pred["kp2d"][b].float().cpu().numpy()
            overlay = draw_overlay(batch.image[b].float(), kp, edges)
            cell = f"<figure><img src='{html.png_data_uri(overlay)}' width='{overlay.width}'>"
            if "kp3d" in pred:
                cell += html.viewer(pred["kp3d"][b].float().cpu().numpy(), edges,
                                    size=overlay.height, uid=f"s{b}")
            name = batch.name[b] if isinstance(batch.name, list) else ""
            cell += f"<figcaption>{html.escape(Path(name).name if name else b)}</figcaption></figure>"
            body.append(cell)
        body.append("</div>")
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
