import math

import numpy as np
import pytest
import torch

from kp3d.data.synth import scene
from kp3d.geometry.cameras import project_pinhole


def test_rng_streams_depend_only_on_seed_and_index() -> None:
    a = scene.rng_for(3, 7).uniform(size=4)
    assert np.array_equal(a, scene.rng_for(3, 7).uniform(size=4))
    assert not np.array_equal(a, scene.rng_for(3, 8).uniform(size=4))
    assert not np.array_equal(a, scene.rng_for(4, 7).uniform(size=4))


@pytest.mark.parametrize("fn,axis", [(scene.rot_x, 0), (scene.rot_y, 1), (scene.rot_z, 2)])
def test_axis_rotations_are_right_handed(fn, axis: int) -> None:
    R = fn(torch.tensor([math.pi / 2, 0.3]))
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2))
    e = torch.eye(3)
    # A quarter turn about an axis maps the next axis to the one after (x->y about z, ...).
    assert torch.allclose(R[0] @ e[(axis + 1) % 3], e[(axis + 2) % 3], atol=1e-6)


def test_matmul_and_apply_match_torch() -> None:
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(4, 3, 3, generator=g), torch.randn(4, 3, 3, generator=g)
    X, t = torch.randn(4, 5, 3, generator=g), torch.randn(4, 3, generator=g)
    assert torch.allclose(scene.matmul(A, B), A @ B, atol=1e-6)
    assert torch.allclose(scene.apply(A, X, t), X @ A.transpose(-1, -2) + t[:, None], atol=1e-6)


def test_orbit_camera_looks_at_the_centre_with_y_down() -> None:
    az = torch.tensor([0.0, 1.0, 2.5, -2.0])
    el = torch.tensor([0.0, 0.4, -0.2, 1.0])
    R = scene.orbit_rotation(az, el, torch.zeros(4))
    assert torch.allclose(torch.linalg.det(R), torch.ones(4), atol=1e-6)
    # The camera sits at distance d along (cos e sin a, sin e, cos e cos a) from the origin:
    # X_cam = R (X - C) puts the origin straight ahead at depth d.
    C = 5 * torch.stack((el.cos() * az.sin(), el.sin(), el.cos() * az.cos()), -1)
    origin = scene.apply(R, -C[:, None])[:, 0]
    assert torch.allclose(origin, torch.tensor([0.0, 0.0, 5.0]).expand(4, 3), atol=1e-5)
    # World up points up in the image (negative camera y) when there is no roll.
    up = scene.apply(R, torch.tensor([[[0.0, 1.0, 0.0]]]).expand(4, 1, 3))[:, 0]
    assert (up[:, 1] < 0).all()
    # Azimuth 0 and elevation 0: a creature facing +z faces the camera; its left (+x) appears
    # on the image's right.
    assert torch.allclose(R[0], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6)


def test_intrinsics_and_projection_follow_the_geometry_conventions() -> None:
    K = scene.intrinsics(torch.tensor([math.radians(60.0)]), 64)
    assert torch.allclose(K[0, :2, 2], torch.tensor([32.0, 32.0]))
    # A point on the edge of the field of view projects onto the image edge.
    X = torch.tensor([[[math.tan(math.radians(30.0)), 0.0, 1.0], [0.1, -0.2, 2.0]]])
    uv = scene.project(X, K)
    assert torch.allclose(uv[0, 0], torch.tensor([64.0, 32.0]), atol=1e-4)
    assert torch.allclose(uv, project_pinhole(X, K), atol=1e-5)


def test_frame_object_fills_and_centres() -> None:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 200, 3, generator=g) * torch.tensor([0.3, 1.0, 0.2]) + torch.tensor(
        [0.5, 0.2, 6.0]
    )
    K = scene.intrinsics(torch.full((3,), 0.7), 64)
    fill = torch.tensor([0.5, 0.6, 0.75])
    shift = torch.tensor([[0.0, 0.0], [0.05, -0.05], [0.0, 0.02]])
    t = torch.zeros(3, 3)
    for _ in range(2):
        t = t + scene.frame_object(X + t[:, None], K, 64, fill, shift)
    uv = scene.project(X + t[:, None], K)
    lo, hi = uv.amin(1), uv.amax(1)
    assert torch.allclose((hi - lo).amax(-1) / 64, fill, atol=0.01)
    assert torch.allclose(((lo + hi) / 2 - 32) / 64, shift, atol=0.01)


def test_visibility_rules() -> None:
    depth = torch.zeros(1, 4, 4)
    depth[0, 1, 1] = 2.0  # a surface at depth 2 in pixel (1, 1)
    kp2d = torch.tensor([[[1.5, 1.5], [1.2, 1.9], [1.5, 1.5], [2.5, 2.5], [-0.1, 1.0], [1.5, 1.5]]])
    z = torch.tensor([[2.5, 4.0, 2.05, 7.0, 1.0, 4.0]])
    tol = torch.full((1, 6), 0.6)
    own = torch.tensor([[False, False, False, False, False, True]])
    vis = scene.visibility(kp2d, z, depth, tol, own=own)
    # within tolerance behind the surface / far behind it / in front / on background /
    # outside the image / far behind but on its own surface
    assert vis.tolist() == [[True, False, True, True, False, True]]


def test_unproject_pixels_inverts_projection_at_pixel_centres() -> None:
    K = scene.intrinsics(torch.tensor([0.8]), 16)
    depth = torch.full((1, 16, 16), 3.0)
    kp = torch.tensor([[[4.5, 9.5], [4.9, 9.1]]])  # same pixel
    X = scene.unproject_pixels(kp, depth, K)
    assert torch.allclose(X[0, 0], X[0, 1])
    assert torch.allclose(scene.project(X, K)[0, 0], torch.tensor([4.5, 9.5]), atol=1e-5)


def test_background_ranges_change_only_their_own_draws() -> None:
    a = scene.sample_background(scene.rng_for(0, 0))
    b = scene.sample_background(scene.rng_for(0, 0), saturation=(0.1, 0.6), fine=(0.0, 0.04))
    assert all(np.array_equal(a[k], b[k]) for k in a)  # the defaults, spelled out
    c = scene.sample_background(scene.rng_for(0, 0), saturation=(0.9, 1.0), fine=(0.1, 0.2))
    assert np.array_equal(a["bg_angle"], c["bg_angle"])
    assert np.array_equal(np.sign(a["bg_coarse"]), np.sign(c["bg_coarse"]))
    # The same colours, less mixed with grey; the same noise, stronger.
    assert np.ptp(c["bg_colors"]) > np.ptp(a["bg_colors"])
    assert np.abs(c["bg_fine"]).mean() > np.abs(a["bg_fine"]).mean()


def test_backgrounds_are_deterministic_images() -> None:
    p = scene.stack_params([scene.sample_background(scene.rng_for(0, i)) for i in range(3)])
    img = scene.render_background(p, 32)
    assert img.shape == (3, 3, 32, 32) and img.min() >= 0 and img.max() <= 1
    assert torch.equal(img, scene.render_background(p, 32))
    assert not torch.equal(img[0], img[1])
