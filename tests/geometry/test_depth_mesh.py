"""Depth maps as meshes: unprojection, the grid triangulation, and OBJ / PLY export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kp3d.geometry.cameras import project_pinhole
from kp3d.geometry.depth_mesh import (
    LiftedPoints,
    depth_to_points,
    grid_faces,
    lift_points,
    pixel_grid,
    sample_depth,
    save_depth_mesh,
)
from kp3d.metrics.surface import unsup3d_intrinsics


def _sphere_cap(S: int) -> torch.Tensor:
    """(1, 1, S, S) depth of a bump: 1 - 0.1 sqrt(1 - r^2) inside the unit disc, 1 outside."""
    v, u = torch.meshgrid(torch.linspace(-1.2, 1.2, S), torch.linspace(-1.2, 1.2, S), indexing="ij")
    r2 = (u.square() + v.square()).clamp_max(1)
    return (1 - 0.1 * (1 - r2).sqrt()).double()[None, None]


def test_depth_to_points_is_the_pinhole_inverse() -> None:
    depth = _sphere_cap(7)
    K = unsup3d_intrinsics(7, 7, dtype=torch.float64)
    pts = depth_to_points(depth, K)
    assert pts.shape == (1, 49, 3)
    uv = pixel_grid(7, 7, like=depth).reshape(49, 2)
    z = depth.reshape(49)
    torch.testing.assert_close(pts[0, :, 0], (uv[:, 0] - K[0, 2]) * z / K[0, 0])
    torch.testing.assert_close(pts[0, :, 1], (uv[:, 1] - K[1, 2]) * z / K[1, 1])
    torch.testing.assert_close(pts[0, :, 2], z)
    assert pixel_grid(2, 3, like=depth)[1, 2].tolist() == [2.5, 1.5]
    with pytest.raises(ValueError, match="depth must be"):
        depth_to_points(depth[0], K)


def test_grid_faces_cover_the_grid_facing_the_camera() -> None:
    faces = grid_faces(3, 4)
    assert faces.shape == (2 * 2 * 3, 3) and faces.dtype == torch.int64
    assert set(faces.flatten().tolist()) == set(range(12))
    # A flat map: every triangle's normal (v1 - v0) x (v2 - v0) points at the camera (-z).
    pts = depth_to_points(torch.ones(1, 1, 3, 4), unsup3d_intrinsics(3, 4))[0]
    tri = pts[faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert bool((normal[:, 2] < 0).all())
    # Each interior diagonal / edge is shared by exactly two triangles.
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(-1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    with pytest.raises(ValueError, match="at least 2 x 2"):
        grid_faces(1, 4)


def _read_obj(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    verts, faces = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:]])
        elif line.startswith("f "):
            faces.append([int(x) - 1 for x in line.split()[1:]])
    v = torch.tensor(verts, dtype=torch.float64)
    return v[:, :3], v[:, 3:], torch.tensor(faces)


def _read_ply(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lines = path.read_text().splitlines()
    end = lines.index("end_header")
    n_v = int(next(x for x in lines if x.startswith("element vertex")).split()[-1])
    n_f = int(next(x for x in lines if x.startswith("element face")).split()[-1])
    rows = lines[end + 1 : end + 1 + n_v]
    v = torch.tensor([[float(x) for x in s.split()] for s in rows], dtype=torch.float64)
    f = [[int(x) for x in s.split()] for s in lines[end + 1 + n_v :]]
    assert len(f) == n_f and all(row[0] == 3 for row in f)
    return v[:, :3], v[:, 3:] / 255, torch.tensor([row[1:] for row in f])


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_a_known_depth_map_exported_and_read_back(tmp_path: Path, suffix: str) -> None:
    S = 9
    depth = _sphere_cap(S)
    K = unsup3d_intrinsics(S, S, dtype=torch.float64)
    colors = torch.rand(3, S, S, generator=torch.Generator().manual_seed(0))
    path = save_depth_mesh(tmp_path / f"cap{suffix}", depth[0], K, colors=colors)
    verts, rgb, faces = (_read_obj if suffix == ".obj" else _read_ply)(path)
    torch.testing.assert_close(verts, depth_to_points(depth, K)[0], rtol=1e-6, atol=1e-7)
    assert torch.equal(faces, grid_faces(S, S))
    tol = 1e-4 if suffix == ".obj" else 0.5 / 255 + 1e-6
    torch.testing.assert_close(rgb, colors.reshape(3, -1).T.double(), rtol=0, atol=tol)
    # The cap's apex (the middle pixel) is the nearest vertex.
    assert int(verts[:, 2].argmin()) == (S // 2) * S + S // 2


def test_save_depth_mesh_errors(tmp_path: Path) -> None:
    K = unsup3d_intrinsics(4, 4)
    with pytest.raises(ValueError, match="suffix must be .obj or .ply"):
        save_depth_mesh(tmp_path / "m.stl", torch.ones(4, 4), K)
    with pytest.raises(ValueError, match="colors must be"):
        save_depth_mesh(tmp_path / "m.obj", torch.ones(4, 4), K, colors=torch.ones(3, 4, 5))
    plain = save_depth_mesh(tmp_path / "m.ply", torch.ones(4, 4), K)
    assert "red" not in plain.read_text()


# ------------------------------------------------------------------------- lifting points


def _naive_bilinear(depth: torch.Tensor, mask: torch.Tensor, u: float, v: float) -> float | None:
    """Loop twin of sample_depth for one point: the four pixel centres around (u, v), border
    pixels repeated, weights w m; None where sum(w m) < 0.5 or (u, v) is outside the map."""
    H, W = depth.shape
    if not (0 <= u <= W and 0 <= v <= H):
        return None
    x, y = u - 0.5, v - 0.5
    i0, j0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
    fx, fy = x - i0, y - j0
    num = den = 0.0
    for di, wx in ((0, 1 - fx), (1, fx)):
        for dj, wy in ((0, 1 - fy), (1, fy)):
            i = min(max(i0 + di, 0), W - 1)
            j = min(max(j0 + dj, 0), H - 1)
            w = wx * wy * float(mask[j, i])
            num += w * float(depth[j, i])
            den += w
    return None if den < 0.5 else num / den


def test_sample_depth_matches_a_loop_and_ignores_the_background() -> None:
    g = torch.Generator().manual_seed(0)
    depth = 1 + torch.rand(2, 1, 5, 6, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 1, 5, 6, dtype=torch.float64)
    mask[0, :, :, 4:] = 0  # right columns: background of a very different depth
    depth[0, :, :, 4:] = 50.0
    uv = torch.rand(2, 40, 2, generator=g, dtype=torch.float64) * 7.0 - 0.5
    uv[..., 1] *= 5 / 6
    z, valid = sample_depth(depth, uv, mask=mask)
    assert z.shape == valid.shape == (2, 40)
    for b in range(2):
        for k in range(40):
            ref = _naive_bilinear(depth[b, 0], mask[b, 0], *uv[b, k].tolist())
            assert bool(valid[b, k]) == (ref is not None)
            if ref is not None:
                assert float(z[b, k]) == pytest.approx(ref, rel=1e-12)
            else:
                assert torch.isnan(z[b, k])
    assert bool((z[valid] < 3).all())  # no background depth leaked in
    # Without a mask every point of the map is valid, at the pixel centres exactly the pixel.
    centres = pixel_grid(5, 6, like=depth).reshape(1, 30, 2).expand(2, -1, -1)
    z, valid = sample_depth(depth, centres)
    assert bool(valid.all())
    torch.testing.assert_close(z, depth.reshape(2, 30))


def test_lift_points_puts_points_on_a_plane() -> None:
    # A plane z = 1 + 0.2 x (camera frame): its depth map, lifted, stays on the plane, and the
    # points reproject to the input pixels.
    S = 16
    K = unsup3d_intrinsics(S, S, dtype=torch.float64)
    uv = pixel_grid(S, S, like=K).reshape(1, S * S, 2)
    ray_x = (uv[0, :, 0] - K[0, 2]) / K[0, 0]
    z = 1 / (1 - 0.2 * ray_x)  # z = 1 + 0.2 z ray_x
    depth = z.reshape(1, 1, S, S)
    g = torch.Generator().manual_seed(1)
    query = 2 + torch.rand(1, 30, 2, generator=g, dtype=torch.float64) * (S - 4)
    out = lift_points(query, depth, K)
    assert isinstance(out, LiftedPoints) and out.points.shape == (1, 30, 3)
    assert bool(out.valid.all())
    # Bilinear interpolation of a plane's depth map is not exactly the plane (1/z is linear in
    # u, z is not): the error bound of linear interpolation over one pixel, h^2 / 8 max|z''|,
    # with z'' = 2 c^2 z^3 for z = 1 / (1 - c (u - cx)), c = 0.2 / f.
    c = 0.2 / float(K[0, 0])
    bound = c**2 * float(z.max()) ** 3 / 4
    x, zz = out.points[0, :, 0], out.points[0, :, 2]
    torch.testing.assert_close(zz, 1 + 0.2 * x, atol=1.01 * bound, rtol=0)
    assert float((zz - 1 - 0.2 * x).abs().max()) > 0.1 * bound  # the bound is not vacuous
    torch.testing.assert_close(project_pinhole(out.points, K), query)
    torch.testing.assert_close(out.depth, out.points[..., 2])


def test_lift_points_marks_outside_and_missing_points() -> None:
    depth = torch.ones(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 1
    K = unsup3d_intrinsics(4, 4)
    uv = torch.tensor([[[2.0, 2.0], [-1.0, 2.0], [0.5, 0.5], [float("nan"), 1.0], [2.0, 4.0]]])
    out = lift_points(uv, depth, K, mask=mask)
    assert out.valid.tolist() == [[True, False, False, False, False]]
    assert bool(out.points[0, 0].isfinite().all()) and bool(out.points[0, 1:].isnan().all())
    assert lift_points(uv, depth, K).valid.tolist() == [[True, False, True, False, True]]
    with pytest.raises(ValueError, match="uv must be"):
        lift_points(uv[0], depth, K)
    with pytest.raises(ValueError, match="depth must be"):
        lift_points(uv, depth[0], K)
    with pytest.raises(ValueError, match="mask must be"):
        lift_points(uv, depth, K, mask=mask[0])
    with pytest.raises(ValueError, match="K must be"):
        lift_points(uv, depth, K[:2])


def test_lift_points_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    depth = (1 + torch.rand(1, 1, 5, 5, generator=g, dtype=torch.float64)).requires_grad_()
    uv = (1 + 3 * torch.rand(1, 4, 2, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    mask[..., 0] = 0.7
    K = unsup3d_intrinsics(5, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda d, p: lift_points(p, d, K, mask=mask).points, (depth, uv)
    )
