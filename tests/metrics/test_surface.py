import math

import numpy as np
import pytest
import torch

from kp3d.metrics import depth_to_normals, mad, normal_roughness, side, unsup3d_intrinsics


def _depth(*batch, H=8, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 0.1 * torch.rand(*batch, 1, H, W, generator=g, dtype=torch.float64)


def _naive_unsup3d_normals(depth, fov=10.0, eps=1e-7):
    """Unsup3d ``get_normal_from_depth`` on one S x S map, pixel by pixel, in its conventions."""
    S = depth.shape[0]
    f = (S - 1) / 2 / math.tan(math.radians(fov) / 2)
    c = (S - 1) / 2

    def point(row, col):  # integer pixel index, principal point (S - 1) / 2
        z = depth[row, col]
        return np.array([(col - c) / f * z, (row - c) / f * z, z])

    normals = np.zeros((S, S, 3))
    normals[..., 2] = 1.0
    for r in range(1, S - 1):
        for q in range(1, S - 1):
            n = np.cross(point(r, q + 1) - point(r, q - 1), point(r + 1, q) - point(r - 1, q))
            normals[r, q] = n / (np.sqrt((n**2).sum()) + eps)
    return normals


def _naive_side(p, g, m):
    d = [math.log(a) - math.log(b) for a, b, keep in zip(p.ravel(), g.ravel(), m.ravel()) if keep]
    mean = sum(d) / len(d)
    return math.sqrt(sum((x - mean) ** 2 for x in d) / len(d))


def test_depth_to_normals_matches_unsup3d_loop():
    depth = _depth(2, H=7, W=7)
    got = depth_to_normals(depth)
    assert got.shape == (2, 3, 7, 7)
    for b in range(2):
        ref = _naive_unsup3d_normals(depth[b, 0].numpy())
        np.testing.assert_allclose(got[b].permute(1, 2, 0).numpy(), ref, rtol=1e-9, atol=1e-12)


def test_depth_to_normals_of_a_plane_is_its_normal():
    # The plane n . P = 1 seen by a pinhole camera; central differences of points on a plane are
    # exact tangents, so every interior normal is n / |n| (pointing away from the camera, +z).
    H, W = 9, 12
    K = torch.tensor([[20.0, 0.0, 6.0], [0.0, 25.0, 4.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    n = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1).double() @ torch.linalg.inv(K).T
    depth = (1.0 / (rays @ n))[None]  # z = 1 / (n . K^-1 (u, v, 1))
    normals = depth_to_normals(depth, K, eps=0.0)
    interior = normals[:, 1:-1, 1:-1].reshape(3, -1).T
    torch.testing.assert_close(interior, (n / n.norm()).expand_as(interior))
    torch.testing.assert_close(normals[:, 0, 0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_depth_to_normals_batched_intrinsics_and_eps():
    depth = _depth(3)
    K = unsup3d_intrinsics(8, 8, dtype=torch.float64)
    torch.testing.assert_close(depth_to_normals(depth, K.expand(3, 3, 3)), depth_to_normals(depth))
    unit = depth_to_normals(depth, eps=0.0)
    torch.testing.assert_close(unit.norm(dim=-3), torch.ones(3, 8, 8, dtype=torch.float64))
    assert (
        depth_to_normals(depth)[..., 1:-1, 1:-1].norm(dim=-3) < 1
    ).all()  # Unsup3d's eps shortens them
    with pytest.raises(ValueError, match="1, H, W"):
        depth_to_normals(torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="eps"):
        depth_to_normals(depth, eps=-1.0)


def test_unsup3d_intrinsics_by_hand():
    K = unsup3d_intrinsics(64, 64)
    f = 31.5 / math.tan(math.radians(5))
    torch.testing.assert_close(K, torch.tensor([[f, 0.0, 32.0], [0.0, f, 32.0], [0.0, 0.0, 1.0]]))


def test_side_matches_loop_and_hand_value():
    pred, gt = _depth(4, seed=1), _depth(4, seed=2)
    mask = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.3
    got = side(pred, gt, mask, reduction="none")
    assert got.shape == (4,)
    for b in range(4):
        assert got[b].item() == pytest.approx(
            _naive_side(pred[b].numpy(), gt[b].numpy(), mask[b].numpy()), rel=1e-10
        )
    # Two pixels with log-ratios 0 and 2: standard deviation 1.
    gt2 = torch.ones(1, 1, 1, 2)
    pred2 = torch.tensor([[[[1.0, math.e**2]]]])
    assert side(pred2, gt2).item() == pytest.approx(1.0, rel=1e-6)


def test_side_scale_invariant_and_mask_excludes_pixels():
    pred, gt = _depth(2, seed=4), _depth(2, seed=5)
    torch.testing.assert_close(side(7.0 * pred, gt), side(pred, gt))
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    mask[..., :3, :] = False
    corrupted = pred.clone()
    corrupted[~mask] = -1.0  # invalid depth, but masked out
    torch.testing.assert_close(side(corrupted, gt, mask), side(pred, gt, mask))
    torch.testing.assert_close(side(pred, gt, mask.float()), side(pred, gt, mask))


def test_mad_hand_values_and_loop():
    z = torch.zeros(1, 3, 2, 2)
    z[:, 2] = 1.0
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0
    assert mad(z, z).item() == 0.0
    assert mad(z, x).item() == pytest.approx(90.0)
    assert mad(z, -z).item() == pytest.approx(180.0)
    diag = torch.zeros(1, 3, 2, 2)
    diag[:, 0] = diag[:, 2] = math.sqrt(0.5)
    mask = torch.tensor([[[[True, False], [False, False]]]])
    assert mad(z, diag, mask).item() == pytest.approx(45.0)

    pred, gt = depth_to_normals(_depth(3, seed=6)), depth_to_normals(_depth(3, seed=7))
    mask = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(8)) > 0.5
    got = mad(pred, gt, mask, reduction="none")
    for b in range(3):
        angles = [
            math.degrees(math.acos(max(-1.0, min(1.0, float(pred[b, :, i, j] @ gt[b, :, i, j])))))
            for i in range(8)
            for j in range(8)
            if mask[b, 0, i, j]
        ]
        assert got[b].item() == pytest.approx(sum(angles) / len(angles), rel=1e-10)


def test_mad_of_identical_maps_shows_unsup3d_eps_bias():
    # 64 x 64, depth 1, fov 10: the documented ~6 degree floor of Unsup3d's normals, 0 without eps.
    depth = torch.ones(1, 1, 64, 64, dtype=torch.float64)
    assert 5.0 < mad(depth_to_normals(depth), depth_to_normals(depth)).item() < 7.0
    assert mad(depth_to_normals(depth, eps=0.0), depth_to_normals(depth, eps=0.0)).item() < 1e-6


@pytest.mark.parametrize("fn, channels", [(side, 1), (mad, 3)])
def test_errors(fn, channels):
    a = torch.ones(2, channels, 4, 4)
    with pytest.raises(ValueError, match="empty"):
        fn(a, a, torch.zeros(2, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        fn(a, a, torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=f"{channels}, H, W"):
        fn(torch.ones(2, 2, 4, 4), torch.ones(2, 2, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        fn(a, a, reduction="sum")


def test_side_rejects_non_positive_depth():
    with pytest.raises(ValueError, match="> 0"):
        side(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))


def _naive_roughness(n, m):
    """Pixel by pixel: the mean angle over right and lower neighbour pairs inside ``m``."""
    angles = []
    H, W = m.shape
    for r in range(H):
        for q in range(W):
            for r2, q2 in ((r, q + 1), (r + 1, q)):
                if r2 < H and q2 < W and m[r, q] and m[r2, q2]:
                    cos = float(np.clip(np.dot(n[:, r, q], n[:, r2, q2]), -1, 1))
                    angles.append(math.degrees(math.acos(cos)))
    return sum(angles) / len(angles)


def test_normal_roughness_matches_a_pixel_loop():
    g = torch.Generator().manual_seed(3)
    n = torch.nn.functional.normalize(
        torch.randn(2, 3, 3, 6, 5, generator=g, dtype=torch.float64), dim=-3
    )
    m = torch.rand(2, 3, 1, 6, 5, generator=g) > 0.3
    got = normal_roughness(n, m, reduction="none")
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert got[i, j].item() == pytest.approx(
                _naive_roughness(n[i, j].numpy(), m[i, j, 0].numpy())
            )
    assert normal_roughness(n, m).item() == pytest.approx(got.mean().item())


def test_normal_roughness_of_a_plane_and_of_alternating_columns():
    plane = depth_to_normals(torch.ones(1, 1, 8, 8), eps=0)
    assert normal_roughness(plane[..., 1:-1, 1:-1]).item() == pytest.approx(0.0, abs=1e-5)
    theta = math.radians(30)
    a = torch.tensor([math.sin(theta / 2), 0.0, math.cos(theta / 2)], dtype=torch.float64)
    b = torch.tensor([-math.sin(theta / 2), 0.0, math.cos(theta / 2)], dtype=torch.float64)
    H, W = 4, 6
    n = torch.stack([a if q % 2 else b for q in range(W)], -1)[:, None, :].expand(3, H, W)
    # H (W - 1) horizontal pairs 30 degrees apart, (H - 1) W vertical pairs parallel.
    want = 30 * H * (W - 1) / (H * (W - 1) + (H - 1) * W)
    assert normal_roughness(n).item() == pytest.approx(want, rel=1e-5)
    assert normal_roughness(n.float()).dtype == torch.float32


@pytest.mark.parametrize(
    ("normals", "mask", "message"),
    [
        (torch.zeros(1, 2, 4, 4), None, r"\(\.\.\., 3, H, W\)"),
        (torch.zeros(1, 3, 1, 4), None, r"H, W >= 2"),
        (
            torch.zeros(1, 3, 4, 4),
            torch.zeros(1, 1, 4, 5, dtype=torch.bool),
            "mask must have shape",
        ),
        (
            torch.zeros(2, 3, 4, 4),
            torch.eye(4, dtype=torch.bool).expand(2, 1, 4, 4),
            r"no neighbouring pair in image\(s\) \[\[0\], \[1\]\]",
        ),
    ],
)
def test_normal_roughness_errors(normals, mask, message):
    with pytest.raises(ValueError, match=message):
        normal_roughness(normals, mask)
    with pytest.raises(ValueError, match="reduction"):
        normal_roughness(torch.zeros(1, 3, 4, 4), reduction="sum")
