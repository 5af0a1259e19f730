"""Depth maps as meshes: unprojection, the grid triangulation, and OBJ / PLY export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kp3d.geometry.depth_mesh import depth_to_points, grid_faces, pixel_grid, save_depth_mesh
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
