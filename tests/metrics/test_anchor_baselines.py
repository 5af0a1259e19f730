"""The metrics reproduce the trivial baselines of ``../shared/ANCHORS.md`` on the real data.

These pin the protocols (units, normalisers, centring, reductions) to the numbers the peers'
code was measured with. They need the shared data folder (``$KP3D_SHARED``, default
``../shared`` beside the repository) and are skipped, with that reason, without it.
"""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kp3d.metrics import (
    INTER_OCULAR_68,
    INTER_PUPIL_MAFL5,
    mafl5_from_ibug68,
    mpjpe,
    nme_2d,
    p_mpjpe,
    pixel_to_unit,
    stress,
)

SHARED = Path(os.environ.get("KP3D_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
AFLW = SHARED / "data/aflw2000_3d/AFLW2000-3D.pts68.npy"
YTFACES = SHARED / "data/ytfaces68"


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set KP3D_SHARED)")


def _unit_landmarks(csv_name: str, folder: str) -> torch.Tensor:
    """(N, 68, 2) landmarks in unit coordinates of their own (resized-to-square) image."""
    out = []
    with open(YTFACES / csv_name, newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            W, H = Image.open(YTFACES / folder / row[0]).size
            lm = torch.tensor([float(v) for v in row[1:]], dtype=torch.float64).reshape(68, 2)
            out.append(pixel_to_unit(lm, (H, W)))
    return torch.stack(out)


def test_ytfaces_mean_shape_baseline():
    # One constant keypoint: the bias-free regression then predicts the mean training shape.
    _require(YTFACES)
    fit_lm = _unit_landmarks("training_landmarks.csv", "training")
    test_lm = _unit_landmarks("test_landmarks.csv", "test")
    fit_kp = torch.full((len(fit_lm), 1, 2), 0.5, dtype=torch.float64)
    test_kp = torch.full((len(test_lm), 1, 2), 0.5, dtype=torch.float64)
    nme5 = nme_2d(
        fit_kp, mafl5_from_ibug68(fit_lm), test_kp, mafl5_from_ibug68(test_lm), INTER_PUPIL_MAFL5
    )
    nme68 = nme_2d(fit_kp, fit_lm, test_kp, test_lm, INTER_OCULAR_68)
    torch.testing.assert_close(nme68.pred[0], fit_lm.mean(0))
    assert round(100 * nme5.nme.item(), 2) == 36.20
    assert round(100 * nme68.nme.item(), 2) == 27.35


def test_aflw2000_3d_flat_baseline():
    # C3DPO protocol of ANCHORS.md: per face, centre the 2D points, divide all coordinates by the
    # RMS 2D radius s; the flat prediction keeps x, y and sets z = 0; pixels = per-face error * s.
    _require(AFLW)
    pts = torch.from_numpy(np.load(AFLW).astype(np.float64)).transpose(1, 2)[1600:]  # (400, 68, 3)
    xy = pts[..., :2] - pts[..., :2].mean(dim=1, keepdim=True)
    s = xy.square().sum(-1).mean(1).sqrt()
    gt = torch.cat([xy, pts[..., 2:]], dim=-1) / s[:, None, None]
    flat = torch.cat([gt[..., :2], torch.zeros_like(gt[..., 2:])], dim=-1)
    anchors = {  # metric: (normalised, pixels)
        "mpjpe": (mpjpe(flat, gt, flip_z=True, reduction="none"), 0.4831, 34.64),
        "stress": (stress(flat, gt, reduction="none"), 0.2544, 18.10),
        "p_mpjpe": (p_mpjpe(flat, gt, reduction="none"), 0.4699, 33.64),
    }
    for name, (per_face, norm, px) in anchors.items():
        assert round(per_face.mean().item(), 4) == norm, name
        assert round((per_face * s).mean().item(), 2) == px, name
