"""Keypoints and the learned skeleton drawn over an image at its own resolution (``kp3d infer
--overlay``).

Coordinates follow :mod:`kp3d.geometry` (continuous pixel coordinates, pixel ``(i, j)`` covers
``[i, i + 1) x [j, j + 1)``), which is also Pillow's drawing convention, so points are drawn
where they are with no half-pixel shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from kp3d.viz.html import keypoint_colour, spanning_edges


def skeleton_edges(
    weights: np.ndarray | None, *, min_weight: float = 0.5
) -> list[tuple[int, int, float]]:
    """Edges ``(i, j, w)``, ``i < j``, of a (K, K) weight matrix to draw: the maximum spanning
    tree plus those of at least ``min_weight`` times the largest
    (:func:`kp3d.viz.html.spanning_edges`); none without weights."""
    return (
        []
        if weights is None
        else spanning_edges(np.asarray(weights, dtype=np.float64), min_weight=min_weight)
    )


def draw_keypoints(
    image: Image.Image,
    kp2d: np.ndarray,
    *,
    edges: Sequence[tuple[int, int, float]] = (),
    vis: np.ndarray | None = None,
    radius: float | None = None,
) -> Image.Image:
    """A copy of ``image`` (RGB) with the skeleton and the keypoints drawn on it.

    Args:
        image: any Pillow image; converted to RGB.
        kp2d: (K, 2) keypoints in pixels of ``image``.
        edges: ``(i, j, weight)``; drawn white, opacity and width growing with the weight.
        vis: (K,) visibility; invisible keypoints are drawn as hollow circles.
        radius: keypoint radius in pixels (default: about 1/60 of the shorter side, >= 2).

    Returns:
        The RGB image with the drawing.
    """
    base = image.convert("RGBA")
    w, h = base.size
    r = radius if radius is not None else max(2.0, min(w, h) / 60)
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    p = np.asarray(kp2d, dtype=np.float64).reshape(-1, 2)
    wmax = max((e[2] for e in edges), default=1.0) or 1.0
    for i, j, weight in edges:
        if not (np.isfinite(p[i]).all() and np.isfinite(p[j]).all()):
            continue
        f = max(0.0, min(1.0, weight / wmax))
        draw.line(
            [tuple(p[i]), tuple(p[j])],
            fill=(255, 255, 255, int(60 + 180 * f)),
            width=max(1, round(r * (0.3 + 0.5 * f))),
        )
    for k, (x, y) in enumerate(p):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        colour = keypoint_colour(k)
        filled = vis is None or bool(vis[k])
        draw.ellipse(
            [x - r, y - r, x + r, y + r],
            fill=colour if filled else None,
            outline="white" if filled else colour,
            width=max(1, round(r / 3)),
        )
    return Image.alpha_composite(base, layer).convert("RGB")
