"""Unsup3d's pure-PyTorch renderer: the warp of a canonical map to a viewpoint, and shading."""

from __future__ import annotations

import math

import pytest
import torch

from kp3d.data.synth.raster import rasterize
from kp3d.geometry.cameras import project_pinhole
from kp3d.geometry.depth_mesh import depth_to_points, grid_faces
from kp3d.geometry.rotations import axis_angle_to_matrix
from kp3d.metrics.surface import depth_to_normals, unsup3d_intrinsics
from kp3d.nn.depth_render import (
    euler_to_matrix,
    lambertian_shading,
    transform_about,
    warp_canonical,
)


def _naive_euler(a: float, b: float, c: float) -> torch.Tensor:
    """Rz(c) Ry(b) Rx(a) from axis-angle rotations about the coordinate axes."""

    def rot(axis: int, angle: float) -> torch.Tensor:
        v = torch.zeros(3, dtype=torch.float64)
        v[axis] = angle
        return axis_angle_to_matrix(v)

    return rot(2, c) @ rot(1, b) @ rot(0, a)


def test_euler_to_matrix_is_rz_ry_rx() -> None:
    angles = torch.tensor(
        [[0.3, -0.7, 1.1], [0.0, 0.0, 0.0], [-1.0, 0.2, -0.4]], dtype=torch.float64
    )
    R = euler_to_matrix(angles)
    for i, (a, b, c) in enumerate(angles.tolist()):
        torch.testing.assert_close(R[i], _naive_euler(a, b, c))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="angles must be"):
        euler_to_matrix(torch.zeros(2, 4))


def test_transform_about_keeps_the_centre_and_rotates_about_it() -> None:
    R = euler_to_matrix(torch.tensor([[0.1, 0.5, -0.2]], dtype=torch.float64))
    centre = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
    t = torch.tensor([[0.01, -0.02, 0.03]], dtype=torch.float64)
    torch.testing.assert_close(transform_about(centre, R, t, centre_depth=1.0), centre + t)
    p = torch.tensor([[[0.1, 0.2, 1.3]]], dtype=torch.float64)
    moved = transform_about(p, R, torch.zeros_like(t), centre_depth=1.0)
    torch.testing.assert_close((moved - centre).norm(), (p - centre).norm())


def _identity(B: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.eye(3, dtype=dtype).expand(B, 3, 3), torch.zeros(B, 3, dtype=dtype)


def test_the_identity_view_reproduces_the_canonical_image() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 12, 10, generator=g, dtype=torch.float64)
    depth = 1 + 0.1 * torch.rand(2, 1, 12, 10, generator=g, dtype=torch.float64)
    K = unsup3d_intrinsics(12, 10, dtype=torch.float64)
    w = warp_canonical(image, depth, *_identity(2, torch.float64), K)
    assert w.mask.shape == (2, 1, 12, 10) and bool(w.mask.all())
    torch.testing.assert_close(w.image, image)
    torch.testing.assert_close(w.depth, depth)
    assert w.grid.shape == (2, 12, 10, 2)


def test_culling_back_faces_changes_only_rays_that_meet_the_back() -> None:
    """Against a two-sided z-buffer of the same mesh: where its nearest face is a front face,
    the warp sees the same surface; only where it is a back face (a ray past the map's edge)
    does the warp see something farther, or nothing."""
    g = torch.Generator().manual_seed(3)
    B, S = 6, 32
    low = torch.rand(B, 1, 4, 4, generator=g, dtype=torch.float64)
    depth = 0.9 + 0.2 * torch.nn.functional.interpolate(low, size=(S, S), mode="bicubic")
    angles = (torch.rand(B, 3, generator=g, dtype=torch.float64) * 2 - 1) * math.radians(60)
    R, t = euler_to_matrix(angles), torch.zeros(B, 3, dtype=torch.float64)
    K = unsup3d_intrinsics(S, S, dtype=torch.float64)
    w = warp_canonical(torch.rand(B, 3, S, S, generator=g, dtype=torch.float64), depth, R, t, K)

    moved = transform_about(depth_to_points(depth, K), R, t, centre_depth=1.0)
    verts = torch.cat((project_pinhole(moved, K), moved[..., 2:]), -1)
    faces = grid_faces(S, S)
    both = rasterize(verts, faces, (S, S))  # two-sided
    tri = verts.gather(1, faces.reshape(1, -1, 1).expand(B, -1, 3)).view(B, -1, 3, 3)
    (u0, v0), (u1, v1), (u2, v2) = (tri[..., k, :2].unbind(-1) for k in range(3))
    front_face = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0) < 0  # (B, F), y down
    winner = both.face.clamp_min(0)
    front = both.mask & front_face.gather(1, winner.view(B, -1)).view(B, S, S)
    back = both.mask & ~front
    assert front.float().mean() > 0.7 and back.any()
    torch.testing.assert_close(w.depth[:, 0][front], both.depth[front])
    seen = w.mask[:, 0][back]
    assert bool((w.depth[:, 0][back][seen] > both.depth[back][seen]).all())


def test_a_rotated_plane_gives_the_analytic_warp() -> None:
    """A fronto-parallel plane at the rotation centre, rotated 20 degrees about y and moved:
    each pixel's ray meets the moved plane at an analytic point, whose canonical position and
    depth the warp must give. A canonical image linear in (u, v) is sampled exactly by bilinear
    interpolation, so the warped image is that linear function of the canonical position."""
    S, dtype = 32, torch.float64
    K = unsup3d_intrinsics(S, S, dtype=dtype)
    v, u = torch.meshgrid(
        torch.arange(S, dtype=dtype) + 0.5, torch.arange(S, dtype=dtype) + 0.5, indexing="ij"
    )
    image = torch.stack((u / S, v / S, 0.3 + 0.2 * u / S - 0.1 * v / S))[None]
    depth = torch.ones(1, 1, S, S, dtype=dtype)
    R = euler_to_matrix(torch.tensor([[0.0, math.radians(20), 0.0]], dtype=dtype))
    t = torch.tensor([[0.002, -0.003, 0.05]], dtype=dtype)
    w = warp_canonical(image, depth, R, t, K, centre_depth=1.0)

    # Ray r = K^-1 (u, v, 1) meets R (x, y, 0) + c + t where (R^T (lam r - c - t))_z = 0.
    rays = torch.stack((u, v, torch.ones_like(u)), -1) @ torch.linalg.inv(K).T  # (S, S, 3)
    ct = torch.tensor([0.0, 0.0, 1.0], dtype=dtype) + t[0]
    Rt = R[0].T
    lam = (Rt @ ct)[2] / (rays @ Rt.T)[..., 2]
    local = (lam[..., None] * rays - ct) @ Rt.T  # (x, y, 0) in the canonical frame
    uc = K[0, 0] * local[..., 0] + K[0, 2]
    vc = K[1, 1] * local[..., 1] + K[1, 2]
    # Compare where the canonical position is inside the mesh (between outer pixel centres).
    inside = (uc > 0.51) & (uc < S - 0.51) & (vc > 0.51) & (vc < S - 0.51)
    assert inside.sum() > S * S // 2
    assert bool(w.mask[0, 0][inside].all())
    expected = torch.stack((uc / S, vc / S, 0.3 + 0.2 * uc / S - 0.1 * vc / S))
    torch.testing.assert_close(w.image[0][:, inside], expected[:, inside])
    torch.testing.assert_close(w.depth[0, 0][inside], lam[inside])
    # Pixels the plane cannot reach are empty, with the background depth.
    outside = (uc < -1) | (uc > S + 1)
    assert outside.any() and not bool(w.mask[0, 0][outside].any())


def test_the_warp_is_differentiable_in_image_depth_and_view() -> None:
    """float64 gradcheck: the face choice is fixed, barycentrics and sampling differentiable."""
    g = torch.Generator().manual_seed(1)
    S, dtype = 6, torch.float64
    K = unsup3d_intrinsics(S, S, dtype=dtype)
    image = torch.rand(1, 2, S, S, generator=g, dtype=dtype, requires_grad=True)
    depth = (1 + 0.03 * torch.rand(1, 1, S, S, generator=g, dtype=dtype)).requires_grad_()
    angles = torch.tensor([[0.05, 0.13, -0.04]], dtype=dtype, requires_grad=True)
    t = torch.tensor([[0.003, -0.002, 0.01]], dtype=dtype, requires_grad=True)

    def f(
        image: torch.Tensor, depth: torch.Tensor, angles: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w = warp_canonical(image, depth, euler_to_matrix(angles), t, K)
        return w.image, w.depth

    assert torch.autograd.gradcheck(f, (image, depth, angles, t), eps=1e-6, atol=1e-5)
    # Gradients do reach the depth and the view (not only the image).
    out = f(image, depth, angles, t)[0].sum()
    gd, ga = torch.autograd.grad(out, (depth, angles))
    assert gd.abs().sum() > 0 and ga.abs().sum() > 0


def test_descending_the_reconstruction_error_recovers_a_known_yaw() -> None:
    """The signal Unsup3d's viewpoint network learns from: a textured bump seen at yaw 15 degrees
    is matched again by gradient descent on the yaw alone, started from the front."""
    g = torch.Generator().manual_seed(3)
    S = 32
    K = unsup3d_intrinsics(S, S)
    v, u = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    depth = (1.05 - 0.12 * torch.exp(-(u.square() + v.square()) / 0.3))[None, None]
    texture = torch.nn.functional.avg_pool2d(torch.rand(1, 3, S, S, generator=g), 3, 1, 1)
    zero = torch.zeros(1, 3)

    def render(yaw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.stack((torch.zeros(()), yaw, torch.zeros(())))[None]
        w = warp_canonical(texture, depth, euler_to_matrix(angles), zero, K, background=1.2)
        return w.image, w.mask

    target, target_mask = render(torch.tensor(math.radians(15.0)))
    yaw = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([yaw], lr=0.02)
    for _ in range(60):
        image, mask = render(yaw)
        both = (mask & target_mask).float()
        loss = ((image - target).abs() * both).sum() / both.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(math.degrees(yaw.item()) - 15.0) < 1.0


def test_warp_errors() -> None:
    K = unsup3d_intrinsics(4, 4)
    R, t = _identity(1)
    with pytest.raises(ValueError, match="depth .B, 1, H, W."):
        warp_canonical(torch.rand(1, 3, 4, 4), torch.ones(1, 2, 4, 4), R, t, K)
    with pytest.raises(ValueError, match="share B, H, W"):
        warp_canonical(torch.rand(1, 3, 4, 5), torch.ones(1, 1, 4, 4), R, t, K)
    with pytest.raises(ValueError, match="R must be"):
        warp_canonical(torch.rand(1, 3, 4, 4), torch.ones(1, 1, 4, 4), R[0], t, K)


def test_shading_of_a_plane_under_a_known_light() -> None:
    """A tilted plane n . X = 1 has the unit normal +-n everywhere (away from the camera, as
    depth_to_normals); its shading is ambient + diffuse max(0, <n, l>)."""
    S, dtype = 16, torch.float64
    K = unsup3d_intrinsics(S, S, dtype=dtype)
    n = torch.tensor([0.2, -0.1, 1.0], dtype=dtype)  # plane n . X = 1 in front of the camera
    v, u = torch.meshgrid(
        torch.arange(S, dtype=dtype) + 0.5, torch.arange(S, dtype=dtype) + 0.5, indexing="ij"
    )
    rays = torch.stack((u, v, torch.ones_like(u)), -1) @ torch.linalg.inv(K).T
    depth = (1 / (rays @ n))[None, None]  # z of the point on the ray: ray z is 1
    normals = depth_to_normals(depth, K, eps=0.0)
    unit = n / n.norm()
    torch.testing.assert_close(
        normals[0, :, 1:-1, 1:-1], unit[:, None, None].expand(3, S - 2, S - 2)
    )

    lights = torch.nn.functional.normalize(
        torch.tensor([[0.3, 0.4, 1.0], [0.0, 0.0, -1.0]], dtype=dtype), dim=1
    )
    ambient = torch.tensor([0.2, 0.3], dtype=dtype)
    diffuse = torch.tensor([0.7, 0.5], dtype=dtype)
    shading = lambertian_shading(normals.expand(2, -1, -1, -1), lights, ambient, diffuse)
    assert shading.shape == (2, 1, S, S)
    expected = ambient + diffuse * (lights @ unit).clamp_min(0)
    torch.testing.assert_close(
        shading[:, 0, 1:-1, 1:-1], expected[:, None, None].expand(2, S - 2, S - 2)
    )
    assert float(expected[1]) == pytest.approx(0.3)  # lit from behind: ambient only
    with pytest.raises(ValueError, match="normals must be"):
        lambertian_shading(normals[:, :2], lights[:1], ambient[:1], diffuse[:1])
