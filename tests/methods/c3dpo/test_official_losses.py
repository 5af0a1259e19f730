"""kp3d's C3DPO losses against a transcription of the authors' code (facebookresearch/c3dpo_nrsfm).

The reference below restates, in plain loops, what ``model.py`` and ``tools/functions.py`` of the
official repository compute; the official layout is channels first, (B, 2, K) and (B, 3, K),
with column-vector rotations ``R X``. Known, intended differences, each pinned here:

- The official pseudo-Huber takes ``sqrt(max(1 + d^2 / delta^2, 0) + 1e-4)`` (a "safe" square
  root); kp3d uses the exact ``sqrt(1 + d^2 / delta^2)``. The two differ by at most
  ``delta * 5e-5`` per point (``sqrt(a + e) - sqrt(a) <= e / 2`` for ``a >= 1``).
- The official reprojection loss (``reprojection_normalization='kp_total_count'``, the default)
  averages over every visible point of the batch; kp3d averages per image, then over images,
  so each image weighs the same. The two agree when every image has the same number of
  visible points.
- Masked means clamp the visible count at 1e-4 (official) or 1e-8 (kp3d): the same for counts
  of 1 or more.
"""

from __future__ import annotations

import math

import pytest
import torch

from kp3d.geometry import random_rotation
from kp3d.losses.lifting import reprojection_loss
from kp3d.methods.c3dpo import C3DPO, C3DPOConfig

SAFE_SQRT_EPS = 1e-4  # tools/functions.py: safe_sqrt
VIS_MASS_EPS = 1e-4  # tools/functions.py: masked_kp_mean, argmin_translation


def ref_huber(sq: float, scaling: float, eps: float = SAFE_SQRT_EPS) -> float:
    """The official ``huber``: ``(safe_sqrt(1 + d^2 / scaling^2) - 1) * scaling``."""
    return (math.sqrt(max(1 + sq / (scaling * scaling), 0.0) + eps) - 1) * scaling


def ref_argmin_translation(x, y, v):
    """The official ``argmin_translation`` for one image: x, y lists of (2 coordinates, K)."""
    mass = max(sum(v), VIS_MASS_EPS)
    return [
        sum(vk * y[d][k] for k, vk in enumerate(v)) / mass
        - sum(vk * x[d][k] for k, vk in enumerate(v)) / mass
        for d in range(2)
    ]


def ref_reprojection(shape_camera_coord, kp_loc_norm, kp_vis, scaling, eps=SAFE_SQRT_EPS):
    """The official orthographic reprojection loss with ``argmin_translation`` and the
    ``kp_total_count`` normalisation: inputs (B, 3, K), (B, 2, K), (B, K) nested lists."""
    total, count = 0.0, 0.0
    for shape, kp, vis in zip(shape_camera_coord, kp_loc_norm, kp_vis, strict=True):
        proj = [shape[0], shape[1]]
        t = ref_argmin_translation(proj, kp, vis)
        for k, vk in enumerate(vis):
            sq = sum((proj[d][k] + t[d] - kp[d][k]) ** 2 for d in range(2))
            total += vk * ref_huber(sq, scaling, eps)
            count += vk
    return total / max(count, 1.0)


def ref_canonicalisation(unrotated, rotations, psi, shape_layer, scaling, eps=SAFE_SQRT_EPS):
    """The official ``canonicalization_loss`` (no class mask): ``avg_l2_huber`` of
    ``shape_layer(psi(R X))`` against ``X``, per-shape mean over points, then mean over shapes.
    ``unrotated`` (N, 3, K) and ``rotations`` (N, 3, 3) nested lists; ``psi`` maps one rotated
    (3, K) shape to coefficients, ``shape_layer`` coefficients to a (3, K) shape."""
    losses = []
    for X, R in zip(unrotated, rotations, strict=True):
        K = len(X[0])
        rotated = [[sum(R[i][j] * X[j][k] for j in range(3)) for k in range(K)] for i in range(3)]
        rebuilt = shape_layer(psi(rotated))
        per_point = [
            ref_huber(sum((rebuilt[d][k] - X[d][k]) ** 2 for d in range(3)), scaling, eps)
            for k in range(K)
        ]
        losses.append(sum(per_point) / K)
    return sum(losses) / len(losses)


def _channels_first(x: torch.Tensor) -> list:
    return x.transpose(-1, -2).tolist()


@pytest.mark.parametrize("delta", [0.01, 0.1, 1.0])
def test_reprojection_loss_matches_the_official_code(delta: float) -> None:
    g = torch.Generator().manual_seed(0)
    B, K = 5, 8
    shape_cam = torch.randn(B, K, 3, generator=g, dtype=torch.float64)
    kp = shape_cam[..., :2] + 0.3 * torch.randn(B, K, 2, generator=g, dtype=torch.float64) + 2
    # The same number of visible points in every image (see the module docstring).
    vis = torch.zeros(B, K, dtype=torch.bool)
    for b in range(B):
        vis[b, torch.randperm(K, generator=g)[:6]] = True
    ours = reprojection_loss(shape_cam, kp, vis, delta=delta).item()
    args = (_channels_first(shape_cam), _channels_first(kp), vis.double().tolist(), delta)
    assert ours == pytest.approx(ref_reprojection(*args, eps=0.0), rel=1e-12, abs=1e-15)
    assert abs(ours - ref_reprojection(*args)) <= delta * 5e-5


def test_canonicalisation_loss_matches_the_official_code() -> None:
    torch.manual_seed(0)
    cfg = C3DPOConfig(
        n_keypoints=6,
        n_basis=3,
        width=16,
        n_layers=1,
        huber_delta=0.1,
        canonicalisation_rotations=2,
    )
    model = C3DPO(cfg).double().eval()
    g = torch.Generator().manual_seed(1)
    X = model.net.shape_from_alpha(torch.randn(4, 3, generator=g, dtype=torch.float64)).detach()
    ours = model.canonicalisation_loss(X, generator=torch.Generator().manual_seed(7)).item()

    # The rotations that the loss draws: the same generator, shapes repeated rotation-major.
    R = random_rotation(8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    unrotated = _channels_first(X.repeat(2, 1, 1))

    def psi(rotated: list) -> torch.Tensor:  # kp3d's Psi reads point-major (K, 3) shapes
        flat = torch.tensor(rotated, dtype=torch.float64).T.reshape(1, -1)
        return model.canonicaliser(flat)

    def shape_layer(alpha: torch.Tensor) -> list:
        return model.net.shape_from_alpha(alpha)[0].T.tolist()

    with torch.no_grad():
        args = (unrotated, R.tolist(), psi, shape_layer, cfg.huber_delta)
        assert ours == pytest.approx(ref_canonicalisation(*args, eps=0.0), rel=1e-10)
        assert abs(ours - ref_canonicalisation(*args)) <= cfg.huber_delta * 5e-5
