import pytest
import torch
import torch.nn.functional as F

from kp3d.geometry import (
    compose_extrinsics,
    invert_extrinsics,
    make_extrinsics,
    normalised_to_pixel,
    pixel_to_normalised,
    pixel_to_unit,
    project_orthographic,
    project_pinhole,
    project_points,
    project_weak_perspective,
    projection_matrix,
    random_rotation,
    transform_points,
    unit_to_pixel,
    unproject_pinhole,
)


def _intrinsics(batch: tuple[int, ...] = (), skew: float = 0.0) -> torch.Tensor:
    K = torch.tensor(
        [[500.0, skew, 320.0], [0.0, 450.0, 240.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    return K.expand(*batch, 3, 3)


def _points_in_front(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    X = torch.randn(*shape, 3, generator=g, dtype=torch.float64)
    X[..., 2] = X[..., 2].abs() + 2.0
    return X


def test_orthographic_and_weak_perspective(gen):
    X = torch.randn(2, 3, 5, 3, generator=gen(), dtype=torch.float64)
    assert project_orthographic(X).shape == (2, 3, 5, 2)
    torch.testing.assert_close(project_orthographic(X), X[..., :2])
    s = torch.rand(2, 3, generator=gen(1), dtype=torch.float64)
    t = torch.randn(2, 3, 2, generator=gen(2), dtype=torch.float64)
    uv = project_weak_perspective(X, s, t)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(uv[i, j], s[i, j] * X[i, j, :, :2] + t[i, j])
    # The Sample schema's ortho camera (s, tx, ty) with a plain float scale.
    torch.testing.assert_close(
        project_weak_perspective(X[0, 0], 2.0, torch.ones(2, dtype=torch.float64)),
        2 * X[0, 0, :, :2] + 1,
    )
    with pytest.raises(ValueError, match="K, 3"):
        project_orthographic(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="translation"):
        project_weak_perspective(X, s, t[..., :1])


def test_pinhole_convention_right_and_down():
    K = _intrinsics()
    X = torch.tensor([[0.0, 0.0, 2.0], [0.5, 0.0, 2.0], [0.0, 0.5, 2.0]], dtype=torch.float64)
    uv = project_pinhole(X, K)
    torch.testing.assert_close(uv[0], K[:2, 2])  # on the optical axis: the principal point
    assert uv[1, 0] > K[0, 2] and uv[1, 1] == K[1, 2]  # +x is to the right
    assert uv[2, 1] > K[1, 2] and uv[2, 0] == K[0, 2]  # +y is below


def test_pinhole_matches_formula_and_round_trips(gen):
    g = gen(3)
    X = _points_in_front((2, 4, 7), g)
    K = _intrinsics((2, 4), skew=3.0)
    uv = project_pinhole(X, K)
    assert uv.shape == (2, 4, 7, 2)
    fx, s, cx, fy, cy = 500.0, 3.0, 320.0, 450.0, 240.0
    x, y = X[..., 0] / X[..., 2], X[..., 1] / X[..., 2]
    torch.testing.assert_close(uv, torch.stack((fx * x + s * y + cx, fy * y + cy), -1))
    back = unproject_pinhole(uv, X[..., 2], K)
    torch.testing.assert_close(back, X)
    # A camera matrix scaled by any non-zero factor is the same camera.
    torch.testing.assert_close(unproject_pinhole(uv, X[..., 2], 3 * K), X)
    assert unproject_pinhole(uv.float(), X[..., 2].float(), K.float()).dtype == torch.float32


def test_pinhole_min_depth_and_errors():
    K = _intrinsics()
    behind = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    assert not torch.isfinite(project_pinhole(behind, K)).all()
    assert torch.isfinite(project_pinhole(behind, K, min_depth=1e-3)).all()
    with pytest.raises(ValueError, match="K must be"):
        project_pinhole(behind, K[:2])
    with pytest.raises(ValueError, match="depth"):
        unproject_pinhole(torch.zeros(4, 2), torch.ones(3), K)
    with pytest.raises(ValueError, match="K, 2"):
        unproject_pinhole(torch.zeros(4, 3), torch.ones(4), K)


def test_rigid_transforms_compose_and_invert(gen):
    g = gen(4)
    X = torch.randn(3, 6, 3, generator=g, dtype=torch.float64)
    R1, R2 = random_rotation((2, 3), generator=g, dtype=torch.float64)
    t1, t2 = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    Y = transform_points(X, R1, t1)
    for b in range(3):
        torch.testing.assert_close(Y[b], (R1[b] @ X[b].T).T + t1[b])  # X_cam = R X + t
    E1, E2 = make_extrinsics(R1, t1), make_extrinsics(R2, t2)
    assert E1.shape == (3, 3, 4)
    E21 = compose_extrinsics(E2, E1)
    torch.testing.assert_close(
        transform_points(X, E21[..., :3], E21[..., 3]), transform_points(Y, R2, t2)
    )
    inv = invert_extrinsics(E1)
    torch.testing.assert_close(transform_points(Y, inv[..., :3], inv[..., 3]), X)
    identity = make_extrinsics(
        torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    torch.testing.assert_close(compose_extrinsics(inv, E1), identity.expand(3, 3, 4))
    with pytest.raises(ValueError, match="3, 4"):
        compose_extrinsics(E1[..., :3], E1)
    with pytest.raises(ValueError, match="t must be"):
        transform_points(X, R1, t1[..., :2])


def test_projection_matrix_equals_transform_then_pinhole(gen):
    g = gen(5)
    X = torch.randn(2, 8, 3, generator=g, dtype=torch.float64)
    R = random_rotation(2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, -0.2, 6.0], dtype=torch.float64).expand(2, 3)
    K = _intrinsics((2,))
    P = projection_matrix(K, make_extrinsics(R, t))
    assert P.shape == (2, 3, 4)
    torch.testing.assert_close(project_points(X, P), project_pinhole(transform_points(X, R, t), K))
    with pytest.raises(ValueError, match="extrinsics"):
        projection_matrix(K, R)


def test_pixel_normalised_unit_conversions(gen):
    H, W = 6, 10
    corners = torch.tensor([[0.0, 0.0], [W, H], [W / 2, H / 2], [0.5, 0.5]], dtype=torch.float64)
    expected = torch.tensor(
        [[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [1 / W - 1, 1 / H - 1]], dtype=torch.float64
    )
    torch.testing.assert_close(pixel_to_normalised(corners, (H, W)), expected)
    torch.testing.assert_close(
        pixel_to_unit(corners, (H, W)), corners / torch.tensor([W, H], dtype=torch.float64)
    )
    uv = torch.rand(3, 4, 2, generator=gen(6), dtype=torch.float64) * 20 - 5
    torch.testing.assert_close(normalised_to_pixel(pixel_to_normalised(uv, (H, W)), (H, W)), uv)
    torch.testing.assert_close(unit_to_pixel(pixel_to_unit(uv, (H, W)), (H, W)), uv)
    for f in (pixel_to_normalised, normalised_to_pixel, pixel_to_unit, unit_to_pixel):
        with pytest.raises(ValueError, match="size"):
            f(uv, (H,))
        with pytest.raises(ValueError, match="size"):
            f(uv, (0, W))
        with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
            f(torch.zeros(3, 3), (H, W))


def test_normalised_convention_agrees_with_grid_sample(gen):
    # An image that is linear in the pixel-centre coordinates is reproduced exactly by bilinear
    # sampling, so grid_sample(align_corners=False) at pixel_to_normalised(uv) must return the
    # linear function evaluated at uv, for any uv between the first and last pixel centres.
    H, W = 7, 9
    v, u = torch.meshgrid(
        torch.arange(H, dtype=torch.float64) + 0.5,
        torch.arange(W, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    image = (3 * u - 2 * v + 1)[None, None]
    g = gen(7)
    uv = (
        torch.rand(1, 1, 50, 2, generator=g, dtype=torch.float64)
        * torch.tensor([W - 1, H - 1], dtype=torch.float64)
        + 0.5
    )
    sampled = F.grid_sample(
        image, pixel_to_normalised(uv, (H, W)), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(sampled[0, 0, 0], 3 * uv[0, 0, :, 0] - 2 * uv[0, 0, :, 1] + 1)
