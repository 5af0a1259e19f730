import math

import pytest
import torch

from kp3d.geometry import (
    make_extrinsics,
    project_points,
    projection_matrix,
    random_rotation,
    reprojection_residuals,
    triangulate_dlt,
    unproject_pinhole,
)


def _ring_rig(
    V: int, radius: float = 3.0, f: float = 800.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """V pinhole cameras on a ring around the origin, looking at it: (K, extrinsics, P), float64."""
    Ks, Es = [], []
    for v in range(V):
        a = 2 * math.pi * v / V + 0.3
        C = torch.tensor(
            [radius * math.cos(a), 0.3 * radius, radius * math.sin(a)], dtype=torch.float64
        )
        z = -C / C.norm()
        x = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), z)
        x = x / x.norm()
        R = torch.stack((x, torch.linalg.cross(z, x), z))  # rows: camera axes in world coordinates
        Ks.append(
            torch.tensor([[f, 0.0, 320.0], [0.0, f, 240.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        )
        Es.append(make_extrinsics(R, -R @ C))
    K, E = torch.stack(Ks), torch.stack(Es)
    return K, E, projection_matrix(K, E)


def _naive_homogeneous_dlt(points: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Textbook DLT, one point at a time: last right singular vector of the stacked equations."""
    V, K = points.shape[:2]
    out = torch.zeros(K, 3, dtype=torch.float64)
    for k in range(K):
        rows = []
        for v in range(V):
            u, w = points[v, k]
            rows += [u * P[v, 2] - P[v, 0], w * P[v, 2] - P[v, 1]]
        X = torch.linalg.svd(torch.stack(rows)).Vh[-1]
        out[k] = X[:3] / X[3]
    return out


@pytest.mark.parametrize("V", [2, 3, 5])
def test_recovers_exact_points(V, gen):
    _, _, P = _ring_rig(V)
    X = torch.randn(10, 3, generator=gen(V), dtype=torch.float64) * 0.5
    uv = project_points(X[None], P)  # (V, K, 2)
    torch.testing.assert_close(triangulate_dlt(uv, P), X, atol=1e-9, rtol=0)
    torch.testing.assert_close(
        triangulate_dlt(uv, P), _naive_homogeneous_dlt(uv, P), atol=1e-9, rtol=0
    )


def test_leading_dims_broadcast_and_dtype(gen):
    _, _, P = _ring_rig(4)
    X = torch.randn(2, 3, 6, 3, generator=gen(1), dtype=torch.float64) * 0.5
    uv = project_points(X[..., None, :, :], P)  # (2, 3, V, K, 2), one rig shared by the batch
    assert uv.shape == (2, 3, 4, 6, 2)
    out = triangulate_dlt(uv, P, weights=torch.ones(3, 4, 6, dtype=torch.float64))
    assert out.shape == (2, 3, 6, 3)
    torch.testing.assert_close(out, X, atol=1e-9, rtol=0)
    out32 = triangulate_dlt(uv.float(), P.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, X.float(), atol=1e-4, rtol=0)


def test_invariant_to_the_scale_of_each_camera_matrix_and_of_the_weights(gen):
    _, _, P = _ring_rig(4)
    g = gen(2)
    X = torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.5
    uv = project_points(X[None], P) + torch.randn(4, 8, 2, generator=g, dtype=torch.float64)
    w = torch.rand(4, 8, generator=g, dtype=torch.float64) + 0.1
    ref = triangulate_dlt(uv, P, weights=w)
    scales = torch.tensor([1.0, -3.0, 1e-3, 250.0], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(triangulate_dlt(uv, scales * P, weights=w), ref)
    torch.testing.assert_close(triangulate_dlt(uv, P, weights=5 * w), ref)


def test_zero_weight_drops_a_corrupted_view(gen):
    _, _, P = _ring_rig(4)
    X = torch.randn(5, 3, generator=gen(3), dtype=torch.float64) * 0.5
    uv = project_points(X[None], P)
    uv[2] += 40.0
    w = torch.ones(4, 5, dtype=torch.float64)
    w[2] = 0
    torch.testing.assert_close(triangulate_dlt(uv, P, weights=w), X, atol=1e-9, rtol=0)
    assert (triangulate_dlt(uv, P) - X).norm(dim=-1).min() > 1e-3


def test_noisy_views_beat_a_single_view_guess(gen):
    # Single-view baseline: unproject one view's noisy observation at the TRUE depth (it even knows
    # the depth); triangulating all views averages the pixel noise down.
    K, E, P = _ring_rig(8)
    g = gen(4)
    X = torch.randn(200, 3, generator=g, dtype=torch.float64) * 0.5
    uv = project_points(X[None], P) + 2.0 * torch.randn(8, 200, 2, generator=g, dtype=torch.float64)
    tri_err = (triangulate_dlt(uv, P) - X).norm(dim=-1).mean()
    X_cam0 = X @ E[0, :, :3].T + E[0, :, 3]
    single = unproject_pinhole(uv[0], X_cam0[:, 2], K[0])
    single_world = (single - E[0, :, 3]) @ E[0, :, :3]
    single_err = (single_world - X).norm(dim=-1).mean()
    assert tri_err < 0.75 * single_err
    # On noisy data it agrees with the textbook homogeneous DLT to well below the noise level.
    naive = _naive_homogeneous_dlt(uv[:, :20], P)
    assert (triangulate_dlt(uv[:, :20], P) - naive).norm(dim=-1).max() < 0.1 * tri_err


def test_fewer_than_two_weighted_views_stays_finite_on_the_ray(gen):
    _, _, P = _ring_rig(3)
    X = torch.randn(4, 3, generator=gen(5), dtype=torch.float64) * 0.5
    uv = project_points(X[None], P)
    w = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        w[1, :2] = 1.0  # points 0, 1: one view; points 2, 3: none
    out = triangulate_dlt(uv, P, weights=w)
    assert torch.isfinite(out).all()
    # A single view's answer lies on its ray: it reprojects onto the observation in that view.
    torch.testing.assert_close(project_points(out[:2], P[1]), uv[1, :2], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[2:], torch.zeros(2, 3, dtype=torch.float64))
    out.sum().backward()
    assert torch.isfinite(w.grad).all()


def test_errors():
    _, _, P = _ring_rig(3)
    uv = torch.zeros(3, 4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="at least 2 views"):
        triangulate_dlt(uv[:1], P[:1])
    with pytest.raises(ValueError, match="views"):
        triangulate_dlt(uv, P[:2])
    with pytest.raises(ValueError, match="points"):
        triangulate_dlt(uv[..., :1], P)
    with pytest.raises(ValueError, match="projections"):
        triangulate_dlt(uv, P[..., :3])
    with pytest.raises(ValueError, match="weights"):
        triangulate_dlt(uv, P, weights=torch.ones(3, 5))


def test_gradcheck(gen):
    _, _, P = _ring_rig(3, f=2.0)  # small focal length keeps finite differences well scaled
    g = gen(6)
    X = torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.5
    uv = (
        project_points(X[None], P) + 0.01 * torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    ).requires_grad_()
    w = (torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    Pr = P.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: triangulate_dlt(a, b, weights=c), (uv, Pr, w))


def test_reprojection_residuals(gen):
    _, _, P = _ring_rig(3)
    g = gen(7)
    X = torch.randn(2, 5, 3, generator=g, dtype=torch.float64) * 0.5
    uv = project_points(X[:, None], P)  # (2, V, K, 2)
    noise = torch.randn(2, 3, 5, 2, generator=g, dtype=torch.float64)
    res = reprojection_residuals(X, uv + noise, P)
    assert res.shape == (2, 3, 5, 2)
    torch.testing.assert_close(res, -noise)  # projected minus observed
    torch.testing.assert_close(
        reprojection_residuals(X, uv, P), torch.zeros_like(res), atol=1e-9, rtol=0
    )
    for b in range(2):
        for v in range(3):
            for k in range(5):
                p = P[v] @ torch.cat((X[b, k], torch.ones(1, dtype=torch.float64)))
                torch.testing.assert_close(res[b, v, k], p[:2] / p[2] - (uv + noise)[b, v, k])
    with pytest.raises(ValueError, match="X must be"):
        reprojection_residuals(X[:, :4], uv, P)


def test_affine_cameras(gen):
    # Orthographic views from three directions: P = [[s R_1 | tx], [s R_2 | ty], [0 0 0 1]].
    g = gen(8)
    R = random_rotation(3, generator=g, dtype=torch.float64)
    P = torch.zeros(3, 3, 4, dtype=torch.float64)
    P[:, :2, :3] = 100 * R[:, :2]
    P[:, :2, 3] = torch.tensor([320.0, 240.0], dtype=torch.float64)
    P[:, 2, 3] = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)  # any non-zero scale
    X = torch.randn(6, 3, generator=g, dtype=torch.float64)
    uv = project_points(X[None], P)
    torch.testing.assert_close(triangulate_dlt(uv, P), X, atol=1e-9, rtol=0)
