"""Self-contained HTML building blocks for ``kp3d report``: inline SVG charts, an interactive
3D point viewer (plain JavaScript on a canvas, no external files) and base64-embedded images.

Everything here returns strings of HTML; nothing is fetched from the network when the page opens.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

PALETTE: tuple[str, ...] = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#800000",
    "#aaffc3",
    "#808000",
    "#000075",
)


def keypoint_colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def escape(text: object) -> str:
    return html.escape(str(text))


def png_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def gif_data_uri(frames: Sequence[Image.Image], *, duration_ms: int = 100) -> str:
    """An animated GIF (looping) of equally sized ``frames`` as a data URI."""
    if not frames:
        raise ValueError("gif_data_uri: no frames")
    buf = io.BytesIO()
    first, *rest = [f.convert("RGB") for f in frames]
    first.save(buf, format="GIF", save_all=True, append_images=rest, duration=duration_ms, loop=0)
    return "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def table(rows: Sequence[Mapping[str, object]], *, columns: Sequence[str] | None = None) -> str:
    """An HTML table; floats are shown with 4 significant digits."""
    if not rows:
        return "<p><em>nothing to show</em></p>"
    columns = list(columns or rows[0].keys())

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return escape(v)

    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    width: int = 520,
    height: int = 220,
    title: str = "",
    log_y: bool = False,
) -> str:
    """An inline SVG line chart of named (x, y) series sharing the axes."""
    pts = {
        k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items() if len(x)
    }
    if not pts:
        return "<p><em>no data</em></p>"
    if log_y:
        pts = {k: (x, np.log10(np.clip(y, 1e-12, None))) for k, (x, y) in pts.items()}
    finite = [(x[np.isfinite(y)], y[np.isfinite(y)]) for x, y in pts.values()]
    xs = np.concatenate([x for x, _ in finite])
    ys = np.concatenate([y for _, y in finite])
    if xs.size == 0:
        return "<p><em>no finite data</em></p>"
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = float(ys.min()), float(ys.max())
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    m = 36

    def sx(v: np.ndarray) -> np.ndarray:
        return m + (v - x0) / (x1 - x0) * (width - 2 * m)

    def sy(v: np.ndarray) -> np.ndarray:
        return height - m + (v - y0) / (y1 - y0) * (2 * m - height)

    parts = [
        (
            f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            'xmlns="http://www.w3.org/2000/svg" class="chart">'
        ),
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="12">{escape(title)}</text>',
        f'<line x1="{m}" y1="{height - m}" x2="{width - m}" y2="{height - m}" stroke="#888"/>',
        f'<line x1="{m}" y1="{m}" x2="{m}" y2="{height - m}" stroke="#888"/>',
    ]
    label = (lambda v: f"1e{v:.1f}") if log_y else (lambda v: f"{v:.3g}")
    for v in (y0, y1):
        parts.append(
            f'<text x="{m - 4}" y="{float(sy(np.array(v))) + 4:.1f}" text-anchor="end" '
            f'font-size="10">{label(v)}</text>'
        )
    for v in (x0, x1):
        parts.append(
            f'<text x="{float(sx(np.array(v))):.1f}" y="{height - m + 14}" text-anchor="middle" '
            f'font-size="10">{v:.0f}</text>'
        )
    for i, (name, (x, y)) in enumerate(pts.items()):
        ok = np.isfinite(y)
        poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(sx(x[ok]), sy(y[ok])))
        colour = keypoint_colour(i)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{poly}"/>'
        )
        parts.append(
            f'<text x="{width - m}" y="{m + 12 * i}" text-anchor="end" font-size="10" '
            f'fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def skeleton_svg(
    points: np.ndarray,
    weights: np.ndarray,
    *,
    size: int = 260,
    min_weight: float = 0.05,
    names: Sequence[str] | None = None,
) -> str:
    """The learned skeleton: 2D points (K, 2) (x right, y down) with every edge i<j drawn with
    opacity and width proportional to its weight (K, K); edges under ``min_weight`` times the
    largest weight are omitted."""
    p = np.asarray(points, float)
    w = np.asarray(weights, float)
    lo, hi = p.min(0), p.max(0)
    scale = (size - 40) / max(float((hi - lo).max()), 1e-9)
    q = (p - (lo + hi) / 2) * scale + size / 2
    wmax = float(w.max()) if w.size and w.max() > 0 else 1.0
    parts = [
        (
            f'<svg width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
            'xmlns="http://www.w3.org/2000/svg" class="skeleton">'
        )
    ]
    k = len(q)
    for i in range(k):
        for j in range(i + 1, k):
            a = w[i, j] / wmax
            if a < min_weight:
                continue
            parts.append(
                f'<line x1="{q[i, 0]:.1f}" y1="{q[i, 1]:.1f}" x2="{q[j, 0]:.1f}" y2="{q[j, 1]:.1f}" '
                f'stroke="#222" stroke-opacity="{a:.2f}" stroke-width="{0.5 + 3.5 * a:.2f}"/>'
            )
    for i in range(k):
        title = escape(names[i]) if names else str(i)
        parts.append(
            f'<circle cx="{q[i, 0]:.1f}" cy="{q[i, 1]:.1f}" r="5" fill="{keypoint_colour(i)}">'
            f"<title>{title}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


VIEWER_JS = """
function kp3dViewer(canvas, pts, edges) {
  // pts: [[x,y,z],...] in the camera convention (x right, y down, z forward); edges: [[i,j,w],...]
  // Drag (mouse or one finger) rotates; each point is labelled with its keypoint index.
  const ctx = canvas.getContext('2d');
  const n = pts.length;
  const c = [0, 1, 2].map(a => pts.reduce((s, p) => s + p[a], 0) / n);
  const q = pts.map(p => [p[0] - c[0], p[1] - c[1], p[2] - c[2]]);
  const r = Math.max(1e-9, ...q.map(p => Math.hypot(p[0], p[1], p[2])));
  const css = canvas.width;  // the size asked for, in CSS pixels; the bitmap follows the screen
  let yaw = 0.6, pitch = -0.3, drag = null;
  function resize() {
    const shown = Math.min(css, canvas.parentElement ? canvas.parentElement.clientWidth || css : css);
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = canvas.style.height = shown + 'px';
    canvas.width = canvas.height = Math.round(shown * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    draw();
  }
  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const W = canvas.width / dpr, H = canvas.height / dpr, s = 0.42 * Math.min(W, H) / r;
    const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
    const v = q.map(p => {
      const x = cy * p[0] + sy * p[2], z = -sy * p[0] + cy * p[2];
      return [W / 2 + s * x, H / 2 + s * (cp * p[1] - sp * z), sp * p[1] + cp * z];
    });
    ctx.clearRect(0, 0, W, H);
    const wmax = Math.max(1e-9, ...edges.map(e => e[2]));
    for (const [i, j, w] of edges) {
      ctx.strokeStyle = `rgba(30,30,30,${(w / wmax).toFixed(2)})`;
      ctx.lineWidth = 0.5 + 3 * w / wmax;
      ctx.beginPath(); ctx.moveTo(v[i][0], v[i][1]); ctx.lineTo(v[j][0], v[j][1]); ctx.stroke();
    }
    const order = [...v.keys()].sort((a, b) => v[b][2] - v[a][2]);
    ctx.font = '10px system-ui, sans-serif';
    for (const i of order) {
      ctx.fillStyle = PALETTE[i % PALETTE.length];
      ctx.beginPath(); ctx.arc(v[i][0], v[i][1], 4, 0, 2 * Math.PI); ctx.fill();
      ctx.fillStyle = '#333';
      ctx.fillText(String(i), v[i][0] + 5, v[i][1] - 5);
    }
  }
  canvas.addEventListener('pointerdown', e => { drag = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener('pointerup', () => { drag = null; });
  canvas.addEventListener('pointercancel', () => { drag = null; });
  canvas.addEventListener('pointermove', e => {
    if (!drag) return;
    yaw += (e.clientX - drag[0]) * 0.01; pitch += (e.clientY - drag[1]) * 0.01;
    drag = [e.clientX, e.clientY]; draw();
  });
  window.addEventListener('resize', resize);
  resize();
}
"""


def viewer_script() -> str:
    """The JavaScript the 3D viewers need; include once per page."""
    return f"<script>const PALETTE = {json.dumps(list(PALETTE))};{VIEWER_JS}</script>"


def viewer(
    points: np.ndarray, edges: Iterable[tuple[int, int, float]], *, size: int = 260, uid: str
) -> str:
    """A canvas showing 3D points (K, 3) and weighted edges; drag to rotate."""
    data = json.dumps(np.asarray(points, float).round(5).tolist())
    e = json.dumps([[int(i), int(j), round(float(w), 4)] for i, j, w in edges])
    return (
        f'<canvas id="{uid}" width="{size}" height="{size}" class="viewer" '
        'title="drag to rotate"></canvas>'
        f'<script>kp3dViewer(document.getElementById("{uid}"), {data}, {e});</script>'
    )


def spanning_edges(weights: np.ndarray, *, min_weight: float = 0.5) -> list[tuple[int, int, float]]:
    """The edges to draw for a learned skeleton: its maximum spanning tree, plus every edge of
    at least ``min_weight`` times the largest weight and twice the median; sorted, i < j.

    Early in training AutoLink's edge weights are nearly uniform, and a plain threshold draws
    all K(K-1)/2 edges; the spanning tree always connects every keypoint through its strongest
    links, which is what a skeleton picture is for, and the median test keeps a near-uniform
    matrix to that tree.
    """
    w = np.asarray(weights, float)
    k = w.shape[0]
    finite = [
        (float(w[i, j]), i, j) for i in range(k) for j in range(i + 1, k) if math.isfinite(w[i, j])
    ]
    parent = list(range(k))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    chosen: set[tuple[int, int]] = set()
    for _, i, j in sorted(finite, reverse=True):  # Kruskal, strongest first
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[ri] = rj
            chosen.add((i, j))
    if finite:
        values = np.array([v for v, _, _ in finite])
        floor = max(min_weight * float(values.max()), 2.0 * float(np.median(values)))
        if values.max() > 0:
            chosen |= {(i, j) for v, i, j in finite if v >= floor}
    return [(i, j, float(w[i, j])) for i, j in sorted(chosen)]


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:16px;color:#222}
h1{font-size:22px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto} table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px} figure{margin:0;text-align:center;font-size:11px}
canvas.viewer{border:1px solid #ddd;cursor:grab;background:#fafafa;touch-action:none;max-width:100%}
img,svg{max-width:100%;height:auto} .muted{color:#777;font-size:12px}
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{PAGE_CSS}</style>{viewer_script()}</head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
