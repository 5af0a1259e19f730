"""The ground truth of lifting set ``discovered`` (``benchmarks/_discovered.py``): the surface
point under a keypoint from an exact depth buffer, against closed forms on planes, and the image
frame of the set. Needs no shared data."""

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch

BenchmarkModule = Callable[[str], ModuleType]
H = W = 12


def _camera(batch: int) -> torch.Tensor:
    K = torch.tensor([[20.0, 0.0, 6.0], [0.0, 22.0, 5.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return K.expand(batch, 3, 3).clone()


def _plane_depth(K: torch.Tensor, normal: torch.Tensor, offset: float, uv: torch.Tensor):
    """Camera z where the rays of pixels ``uv`` (..., 2) meet the plane ``n . X = offset``."""
    rays = torch.cat([uv, torch.ones_like(uv[..., :1])], -1) @ torch.linalg.inv(K[0]).T
    return offset / (rays @ normal), rays


def _plane_buffer(K: torch.Tensor, normal: torch.Tensor, offset: float) -> torch.Tensor:
    """(1, H, W) depth buffer of the plane at the pixel centres."""
    v, u = torch.meshgrid(
        torch.arange(H, dtype=torch.float64) + 0.5,
        torch.arange(W, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    return _plane_depth(K, normal, offset, torch.stack([u, v], -1))[0][None]


def test_points_on_a_tilted_plane_are_its_ray_intersections(
    benchmark_module: BenchmarkModule,
) -> None:
    disc = benchmark_module("_discovered")
    K = _camera(1)
    normal = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    depth = _plane_buffer(K, normal, 2.0)
    # Anywhere between the outermost pixel centres, so the four neighbours exist.
    g = torch.Generator().manual_seed(0)
    kp2d = 0.5 + torch.rand(1, 30, 2, generator=g, dtype=torch.float64) * (W - 1)
    got = disc.surface_points(kp2d, depth, K)
    z, rays = _plane_depth(K, normal, 2.0, kp2d)
    want = rays * z[..., None]
    assert got.points.shape == (1, 30, 3) and got.points.dtype == torch.float64
    assert bool(got.vis.all())
    torch.testing.assert_close(got.points, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.points @ normal, torch.full((1, 30), 2.0, dtype=torch.float64))


def test_off_the_surface_and_outside_the_image_are_invisible(
    benchmark_module: BenchmarkModule,
) -> None:
    disc = benchmark_module("_discovered")
    K = _camera(2)
    depth = torch.full((2, H, W), 3.0, dtype=torch.float64)
    depth[:, :, 6:] = 0  # columns 6.. are background
    kp2d = torch.tensor(
        [[[2.3, 4.1], [6.2, 4.0], [-0.1, 3.0], [3.0, 12.0]]] * 2, dtype=torch.float64
    )
    kp2d[1, 0] = float("nan")
    got = disc.surface_points(kp2d, depth, K)
    assert got.vis.tolist() == [[True, False, False, False], [False, False, False, False]]
    assert bool(got.points[~got.vis].isnan().all())
    # A fronto-parallel plane: z = 3 along the keypoint's own ray.
    x = (2.3 - 6.0) / 20.0 * 3.0
    y = (4.1 - 5.5) / 22.0 * 3.0
    torch.testing.assert_close(
        got.points[0, 0], torch.tensor([x, y, 3.0], dtype=torch.float64), rtol=1e-12, atol=1e-12
    )


def test_at_a_silhouette_the_containing_pixel_gives_the_depth(
    benchmark_module: BenchmarkModule,
) -> None:
    disc = benchmark_module("_discovered")
    K = _camera(1)
    depth = torch.full((1, H, W), 2.0, dtype=torch.float64)
    depth[0, :, 5] = 4.0  # a step: column 5 is farther
    depth[0, :, 7:] = 0  # and column 7.. is background
    kp2d = torch.tensor([[[5.3, 3.7], [6.9, 3.2], [4.6, 8.0]]], dtype=torch.float64)
    got = disc.surface_points(kp2d, depth, K)
    assert bool(got.vis.all())
    # Keypoint 0 lies in column 5 between centres 4.5 (z 2) and 5.5 (z 4): inverse depth is
    # interpolated, 1/z = 0.2 / 2 + 0.8 / 4. Keypoint 1 has a background neighbour (column 7):
    # its own pixel's depth. Keypoint 2: between columns 4 (z 2) and 5 (z 4),
    # 1/z = 0.9 / 2 + 0.1 / 4.
    want_z = torch.tensor(
        [[1 / (0.2 / 2 + 0.8 / 4), 2.0, 1 / (0.9 / 2 + 0.1 / 4)]], dtype=torch.float64
    )
    torch.testing.assert_close(got.points[..., 2], want_z, rtol=1e-12, atol=1e-12)
    rays = torch.cat([kp2d, torch.ones_like(kp2d[..., :1])], -1) @ torch.linalg.inv(K[0]).T
    torch.testing.assert_close(got.points, rays * want_z[..., None])


def test_bad_shapes_are_refused(benchmark_module: BenchmarkModule) -> None:
    disc = benchmark_module("_discovered")
    depth = torch.ones(2, H, W)
    with pytest.raises(ValueError, match="kp2d must be"):
        disc.surface_points(torch.zeros(2, 3, 3), depth, _camera(2))
    with pytest.raises(ValueError, match="depth must be"):
        disc.surface_points(torch.zeros(2, 3, 2), torch.ones(3, H, W), _camera(2))
    with pytest.raises(ValueError, match="K must be"):
        disc.surface_points(torch.zeros(2, 3, 2), depth, _camera(1))


def test_image_frame_of_an_orthographic_view(benchmark_module: BenchmarkModule) -> None:
    """Pixels that are the camera x, y times a per-image scale: the image frame is the points
    in pixels, z centred over the visible keypoints; invisible ones keep (u, v, 0)."""
    disc = benchmark_module("_discovered")
    g = torch.Generator().manual_seed(1)
    points = torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    scale = torch.tensor([10.0, 25.0, 40.0], dtype=torch.float64)[:, None, None]
    kp2d = points[..., :2] * scale + 32.0
    vis = torch.ones(3, 7, dtype=torch.bool)
    vis[1, 2] = vis[2, 0] = False
    hidden = points.masked_fill(~vis[..., None], float("nan"))
    got = disc.image_frame(kp2d, hidden, vis)
    torch.testing.assert_close(got[..., :2], kp2d)
    z = points[..., 2].masked_fill(~vis, 0.0)
    mean = z.sum(-1, keepdim=True) / vis.sum(-1, keepdim=True)
    want = torch.where(vis, (points[..., 2] - mean) * scale[..., 0], torch.zeros_like(z))
    torch.testing.assert_close(got[..., 2], want)
    assert bool(got.isfinite().all())


def test_a_set_with_visibility_writes_it_to_both_files(
    tmp_path, benchmark_module: BenchmarkModule
) -> None:
    lifting = benchmark_module("_lifting")
    train = torch.randn(5, 4, 3, dtype=torch.float64)
    test = torch.randn(3, 4, 3, dtype=torch.float64)
    train_vis, test_vis = torch.rand(5, 4) > 0.3, torch.rand(3, 4) > 0.3
    data = lifting.LiftingSet("discovered", "px", train, test, train_vis, test_vis)
    a, b = lifting.write_npz(lifting.scaled(data, 2.0), tmp_path)
    with np.load(a) as f:
        assert set(f.files) == {"kp2d", "vis"}
        np.testing.assert_array_equal(f["vis"], train_vis.numpy())
    with np.load(b) as f:
        assert set(f.files) == {"kp2d", "kp3d", "vis"}
        np.testing.assert_array_equal(f["vis"], test_vis.numpy())
        np.testing.assert_allclose(f["kp3d"], 2 * test.numpy(), rtol=1e-6)


def test_the_set_needs_a_cache_folder_and_the_face_model(
    tmp_path, benchmark_module: BenchmarkModule
) -> None:
    lifting = benchmark_module("_lifting")
    with pytest.raises(SystemExit, match="needs a cache folder"):
        lifting.load_set("discovered", tmp_path)
    with pytest.raises(SystemExit, match="assets/sfm is missing"):
        lifting.load_set("discovered", tmp_path, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing is built before the check
