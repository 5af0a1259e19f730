import math

import pytest
import torch

from kp3d.geometry.rotations import axis_angle_to_matrix, random_rotation
from kp3d.losses.lifting import (
    point_loss,
    pseudo_huber,
    reprojection_loss,
    rotation_loss,
    shape_prior_loss,
)


def test_pseudo_huber_limits_and_errors() -> None:
    delta = 0.1
    d = torch.tensor([1e-4, 100.0], dtype=torch.float64)
    rho = pseudo_huber(d.square(), delta)
    assert rho[0].item() == pytest.approx(d[0].item() ** 2 / (2 * delta), rel=1e-6)
    assert rho[1].item() == pytest.approx(d[1].item() - delta, rel=1e-4)
    assert pseudo_huber(torch.zeros(3), delta).eq(0).all()
    with pytest.raises(ValueError, match="positive"):
        pseudo_huber(d, 0.0)


def test_pseudo_huber_gradcheck() -> None:
    x = torch.rand(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pseudo_huber(t, 0.3), (x,))


def test_point_loss_matches_a_loop_and_ignores_masked_points() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 2, generator=g), torch.randn(3, 5, 2, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.4
    mask[1] = False  # a sample with nothing in its mask counts as 0
    delta = 0.05
    per_sample = []
    for i in range(3):
        terms = [
            pseudo_huber((a[i, k] - b[i, k]).square().sum(), delta) for k in range(5) if mask[i, k]
        ]
        per_sample.append(sum(terms) / len(terms) if terms else torch.tensor(0.0))
    expected = torch.stack(per_sample).mean()
    a.requires_grad_(True)
    loss = point_loss(a, b, mask, delta=delta)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert a.grad[~mask].eq(0).all() and a.grad[mask].ne(0).any()


def test_reprojection_loss_is_zero_for_exact_projections_with_any_translation() -> None:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    R = random_rotation(4, generator=g, dtype=torch.float64)
    cam = X @ R.transpose(-1, -2)
    kp2d = cam[..., :2] + torch.randn(4, 1, 2, generator=g, dtype=torch.float64)
    assert reprojection_loss(cam, kp2d, delta=0.01).item() == pytest.approx(0.0, abs=1e-12)
    noisy = kp2d + 0.1 * torch.randn(kp2d.shape, generator=g, dtype=torch.float64)
    assert reprojection_loss(cam, noisy, delta=0.01).item() > 1e-3


def test_reprojection_loss_ignores_invisible_points_entirely() -> None:
    g = torch.Generator().manual_seed(2)
    cam = torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kp2d = torch.randn(2, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    vis = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    loss = reprojection_loss(cam, kp2d, vis, delta=0.01)
    loss.backward()
    assert cam.grad[~vis].eq(0).all() and kp2d.grad[~vis].eq(0).all()
    moved = kp2d.detach().clone()
    moved[~vis] += 100.0
    cam_moved = cam.detach().clone()
    cam_moved[~vis] -= 50.0
    assert reprojection_loss(cam_moved, moved, vis, delta=0.01).item() == pytest.approx(loss.item())
    # The translation is the optimum over the visible points, so it is not a free parameter.
    cam64 = cam.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda c: reprojection_loss(c, kp2d.detach(), vis, delta=0.3), (cam64,)
    )


def test_rotation_loss_is_a_function_of_the_angle() -> None:
    delta = 0.1
    R = random_rotation(3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert rotation_loss(R, R, delta=delta).item() == pytest.approx(0.0, abs=1e-12)
    for angle in (0.1, 1.0, 3.0):
        rel = axis_angle_to_matrix(torch.tensor([0.0, angle, 0.0], dtype=torch.float64))
        frob = 2 * math.sqrt(2) * math.sin(angle / 2)
        expected = delta * (math.sqrt(1 + frob**2 / delta**2) - 1)
        assert rotation_loss(R @ rel, R, delta=delta).item() == pytest.approx(expected, rel=1e-9)


def test_shape_prior_is_zero_for_scaled_copies_and_grows_with_deformation() -> None:
    g = torch.Generator().manual_seed(4)
    base = torch.randn(7, 3, generator=g, dtype=torch.float64)
    scales = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    copies = scales[:, None, None] * base
    assert shape_prior_loss(copies).item() == pytest.approx(0.0, abs=1e-12)
    noise = torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    small, large = shape_prior_loss(copies + 0.01 * noise), shape_prior_loss(copies + 0.1 * noise)
    assert 0 < small < large


def test_shape_prior_groups_and_masks() -> None:
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    shapes = torch.stack([a, 2 * a, b, 3 * b])
    groups = torch.tensor([0, 0, 1, 1])
    # Each group is one shape up to scale: no deformation within a group.
    assert shape_prior_loss(shapes, groups).item() == pytest.approx(0.0, abs=1e-6)
    assert shape_prior_loss(shapes).item() > 0.1
    # Keypoints outside the mask are not part of the shape.
    junk = shapes.clone().requires_grad_(True)
    with torch.no_grad():
        junk[:, 4] += torch.randn(4, 3, generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, 4] = False
    loss = shape_prior_loss(junk, groups, mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert junk.grad[:, 4].eq(0).all()
