"""KeypointNet's losses against closed forms and naive loops (pi / pi^-1 round trips are in
tests/geometry/test_cameras.py)."""

from __future__ import annotations

import math

import pytest
import torch

from kp3d.geometry import axis_angle_to_matrix, procrustes, project_pinhole, unproject_pinhole
from kp3d.losses.keypointnet import (
    MASS_EPS,
    consistency_loss,
    relative_pose_loss,
    separation_loss,
    silhouette_loss,
    variance_loss,
)

SIZE = (32, 48)  # (H, W)


def _camera(b: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    K = torch.tensor([[40.0, 0.0, 24.0], [0.0, 38.0, 16.0], [0.0, 0.0, 1.0]], dtype=dtype)
    return K.expand(b, 3, 3)


def _scene(seed: int = 0, b: int = 3, n: int = 5):
    """Points in camera a (B, N, 3) at depth ~3, a rigid motion to camera b, intrinsics."""
    g = torch.Generator().manual_seed(seed)
    X_a = torch.randn(b, n, 3, generator=g, dtype=torch.float64) * 0.3
    X_a[..., 2] += 3.0
    R = axis_angle_to_matrix(0.4 * torch.randn(b, 3, generator=g, dtype=torch.float64))
    t = 0.2 * torch.randn(b, 3, generator=g, dtype=torch.float64)
    return X_a, R, t, _camera(b)


def _views(X_a, R, t, K):
    X_b = X_a @ R.transpose(-1, -2) + t[:, None]
    return project_pinhole(X_a, K), X_a[..., 2], project_pinhole(X_b, K), X_b[..., 2], X_b


def test_consistency_is_zero_for_exact_projections_of_one_point_set() -> None:
    X_a, R, t, K = _scene()
    uv_a, z_a, uv_b, z_b, _ = _views(X_a, R, t, K)
    loss = consistency_loss(uv_a, z_a, uv_b, z_b, K, K, R, t, size=SIZE)
    assert loss.abs() < 1e-20


def test_consistency_matches_a_naive_loop() -> None:
    X_a, R, t, K = _scene(1, b=2, n=4)
    uv_a, z_a, uv_b, z_b, _ = _views(X_a, R, t, K)
    g = torch.Generator().manual_seed(5)
    uv_a = uv_a + torch.randn(uv_a.shape, generator=g, dtype=torch.float64)
    z_b = z_b + 0.1 * torch.randn(z_b.shape, generator=g, dtype=torch.float64)
    H, W = SIZE
    total = 0.0
    for i in range(2):
        Ki = K[i].inverse()
        s = 0.0
        for k in range(4):
            # a -> b: back-project the pixel at its depth, move, project; then b -> a.
            ray = Ki @ torch.tensor([uv_a[i, k, 0], uv_a[i, k, 1], 1.0], dtype=torch.float64)
            Xb = R[i] @ (ray / ray[2] * z_a[i, k]) + t[i]
            pb = K[i] @ (Xb / Xb[2])
            ray = Ki @ torch.tensor([uv_b[i, k, 0], uv_b[i, k, 1], 1.0], dtype=torch.float64)
            Xa = R[i].T @ (ray / ray[2] * z_b[i, k] - t[i])
            pa = K[i] @ (Xa / Xa[2])
            both = torch.stack(
                (uv_a[i, k, 0], uv_a[i, k, 1], uv_b[i, k, 0], uv_b[i, k, 1])
            ) - torch.stack((pa[0], pa[1], pb[0], pb[1]))
            both = both * torch.tensor([2 / W, 2 / H, 2 / W, 2 / H], dtype=torch.float64)
            s += float(both.square().sum())
        total += s / (2 * 4)
    got = consistency_loss(uv_a, z_a, uv_b, z_b, K, K, R, t, size=SIZE)
    assert float(got) == pytest.approx(total / 2, rel=1e-10)


def test_consistency_rejects_mismatched_depths() -> None:
    X_a, R, t, K = _scene()
    uv_a, z_a, uv_b, z_b, _ = _views(X_a, R, t, K)
    with pytest.raises(ValueError, match="consistency_loss: need uv"):
        consistency_loss(uv_a, z_a[:, :2], uv_b, z_b, K, K, R, t, size=SIZE)


def test_relative_pose_is_zero_at_the_true_rotation_and_the_paper_formula_elsewhere() -> None:
    X_a, R, t, K = _scene(2)
    *_, X_b = _views(X_a, R, t, K)
    assert float(relative_pose_loss(X_a, X_b, R)) < 1e-6
    # A wrong R: the loss is 2 arcsin(||R^ - R||_F / (2 sqrt 2)) with R^ from Procrustes.
    wrong = axis_angle_to_matrix(torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64)) @ R
    R_hat = procrustes(X_a, X_b, mode="orthogonal").R
    paper = 2 * torch.asin(torch.linalg.matrix_norm(R_hat - wrong) / (2 * math.sqrt(2)))
    torch.testing.assert_close(relative_pose_loss(X_a, X_b, wrong), paper.mean())


def test_relative_pose_noise_is_drawn_from_the_generator() -> None:
    X_a, R, t, K = _scene(3)
    *_, X_b = _views(X_a, R, t, K)
    one = relative_pose_loss(X_a, X_b, R, noise=0.01, generator=torch.Generator().manual_seed(0))
    two = relative_pose_loss(X_a, X_b, R, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert one == two and one > 0
    with pytest.raises(ValueError, match="noise must be >= 0"):
        relative_pose_loss(X_a, X_b, R, noise=-1.0)


def test_relative_pose_gradcheck_through_the_svd() -> None:
    X_a, R, t, K = _scene(4, b=2, n=5)
    *_, X_b = _views(X_a, R, t, K)
    g = torch.Generator().manual_seed(1)
    # Away from the true rotation (the loss has a cusp at 0, as any angle does).
    X_a = (X_a + 0.2 * torch.randn(X_a.shape, generator=g, dtype=torch.float64)).requires_grad_()
    X_b = X_b.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: relative_pose_loss(a, b, R), (X_a, X_b))


def test_separation_matches_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    X = 0.1 * torch.randn(3, 6, 3, generator=g, dtype=torch.float64)
    delta = 0.12
    total = 0.0
    for b in range(3):
        s = 0.0
        for i in range(6):
            for j in range(6):
                if i != j:
                    s += max(0.0, delta**2 - float((X[b, i] - X[b, j]).square().sum()))
        total += s / 36
    assert float(separation_loss(X, delta)) == pytest.approx(total / 3, rel=1e-12)
    apart = (
        torch.arange(6, dtype=X.dtype)[:, None] * torch.tensor([1.01 * delta, 0.0, 0.0]).double()
    )
    assert float(separation_loss(apart[None], delta)) == 0  # farther than delta: no push
    assert float(separation_loss(apart[None] * 0.5, delta)) > 0
    with pytest.raises(ValueError, match="delta must be > 0"):
        separation_loss(X, 0.0)


def test_silhouette_matches_a_naive_loop_and_is_zero_on_the_object() -> None:
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    prob = prob / prob.sum((-2, -1), keepdim=True)
    mask = (torch.rand(2, 1, 4, 5, generator=g) > 0.4).double()
    total = 0.0
    for b in range(2):
        for i in range(3):
            mass = sum(
                float(mask[b, 0, y, x] * prob[b, i, y, x]) for y in range(4) for x in range(5)
            )
            total += -math.log(mass + MASS_EPS) / 3
    assert float(silhouette_loss(prob, mask)) == pytest.approx(total / 2, rel=1e-12)
    assert float(silhouette_loss(prob, torch.ones(2, 1, 4, 5))) == pytest.approx(0, abs=1e-7)
    # A mask at twice the resolution is area-averaged to the maps'.
    big = mask.repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(silhouette_loss(prob, big), silhouette_loss(prob, mask))
    with pytest.raises(ValueError, match="silhouette_loss"):
        silhouette_loss(prob, mask[:, :, 0])


def test_variance_matches_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(2)
    prob = torch.rand(2, 3, 4, 6, generator=g, dtype=torch.float64)
    prob = prob / prob.sum((-2, -1), keepdim=True)
    uv = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) - 0.5
    total = 0.0
    for b in range(2):
        for i in range(3):
            for y in range(4):
                for x in range(6):
                    px, py = (2 * x + 1) / 6 - 1, (2 * y + 1) / 4 - 1
                    d2 = (px - float(uv[b, i, 0])) ** 2 + (py - float(uv[b, i, 1])) ** 2
                    total += float(prob[b, i, y, x]) * d2 / 3
    assert float(variance_loss(prob, uv)) == pytest.approx(total / 2, rel=1e-12)


def test_the_losses_alone_bring_free_keypoints_to_the_true_relative_pose() -> None:
    # Free 2D keypoints and depths of two views, optimised under L_con + L_pose + L_sep only:
    # the losses' optimum is one 3D point set seen from both cameras, so R^ becomes R.
    _, R, t, K = _scene(6, b=4, n=8)
    K = K.float()
    R, t = R.float(), t.float()
    g = torch.Generator().manual_seed(0)
    uv_a = (24 + 4 * torch.randn(4, 8, 2, generator=g)).requires_grad_()
    uv_b = (24 + 4 * torch.randn(4, 8, 2, generator=g)).requires_grad_()
    z_a = (3 + 0.1 * torch.randn(4, 8, generator=g)).requires_grad_()
    z_b = (3 + 0.1 * torch.randn(4, 8, generator=g)).requires_grad_()
    opt = torch.optim.Adam([uv_a, uv_b, z_a, z_b], lr=0.05)

    def angle() -> float:
        with torch.no_grad():
            P_a = unproject_pinhole(uv_a, z_a, K)
            P_b = unproject_pinhole(uv_b, z_b, K)
            return math.degrees(float(relative_pose_loss(P_a, P_b, R)))

    before = angle()
    for _ in range(300):
        P_a, P_b = unproject_pinhole(uv_a, z_a, K), unproject_pinhole(uv_b, z_b, K)
        loss = (
            consistency_loss(uv_a, z_a, uv_b, z_b, K, K, R, t, size=SIZE)
            + 0.2 * relative_pose_loss(P_a, P_b, R, noise=1e-4, generator=g)
            + 100 * (separation_loss(P_a, 0.1) + separation_loss(P_b, 0.1)) / 2
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 10 and angle() < 2
