import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from kp3d.geometry import (
    axis_angle_to_matrix,
    geodesic_distance,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    random_rotation,
    rotation_6d_to_matrix,
    rotation_spread,
)


def _assert_rotations(R: torch.Tensor) -> None:
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=R.dtype))


def test_6d_to_matrix_is_gram_schmidt_of_the_first_two_columns(gen):
    x = torch.randn(2, 3, 6, generator=gen(), dtype=torch.float64)
    R = rotation_6d_to_matrix(x)
    assert R.shape == (2, 3, 3, 3)
    _assert_rotations(R)
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True)
    naive = torch.stack((b1, b2, torch.linalg.cross(b1, b2)), dim=-1)  # as columns
    torch.testing.assert_close(R, naive)


def test_6d_round_trip_and_errors(gen):
    R = random_rotation((4, 5), generator=gen(1), dtype=torch.float64)
    x = matrix_to_rotation_6d(R)
    assert x.shape == (4, 5, 6)
    torch.testing.assert_close(x[..., :3], R[..., :, 0])
    torch.testing.assert_close(rotation_6d_to_matrix(x), R)
    with pytest.raises(ValueError, match="6"):
        rotation_6d_to_matrix(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="3, 3"):
        matrix_to_rotation_6d(torch.zeros(3, 4))


def test_6d_gradcheck_and_degenerate_input(gen):
    x = torch.randn(3, 6, generator=gen(2), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (x,))
    zero = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    rotation_6d_to_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_axis_angle_matches_scipy_and_round_trips(gen):
    rotvec = torch.randn(4, 3, 3, generator=gen(3), dtype=torch.float64)
    rotvec = (
        rotvec
        / rotvec.norm(dim=-1, keepdim=True)
        * torch.rand(4, 3, 1, generator=gen(4), dtype=torch.float64)
        * 3
    )
    R = axis_angle_to_matrix(rotvec)
    assert R.shape == (4, 3, 3, 3)
    scipy_R = Rotation.from_rotvec(rotvec.reshape(-1, 3).numpy()).as_matrix().reshape(4, 3, 3, 3)
    np.testing.assert_allclose(R.numpy(), scipy_R, atol=1e-12)
    torch.testing.assert_close(matrix_to_axis_angle(R), rotvec)
    # The angle of the returned vector is in [0, pi] even for longer input vectors.
    long = torch.tensor([0.0, 0.0, 1.5 * math.pi], dtype=torch.float64)
    torch.testing.assert_close(
        matrix_to_axis_angle(axis_angle_to_matrix(long)),
        torch.tensor([0, 0, -0.5 * math.pi], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="3"):
        axis_angle_to_matrix(torch.zeros(4))


def test_axis_angle_gradient_finite_at_zero():
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_quaternions_match_scipy_in_both_orders(gen):
    R = random_rotation(10, generator=gen(5), dtype=torch.float64)
    q = matrix_to_quaternion(R)
    assert q.shape == (10, 4) and (q[:, 3] >= 0).all()
    scipy_q = Rotation.from_matrix(R.numpy()).as_quat()  # scalar last
    scipy_q = scipy_q * np.sign(scipy_q[:, 3:])
    np.testing.assert_allclose(q.numpy(), scipy_q, atol=1e-12)
    q_wxyz = matrix_to_quaternion(R, order="wxyz")
    torch.testing.assert_close(q_wxyz, q[:, [3, 0, 1, 2]])
    torch.testing.assert_close(quaternion_to_matrix(q), R)
    torch.testing.assert_close(quaternion_to_matrix(q_wxyz, order="wxyz"), R)
    # Any non-zero multiple, including -q, is the same rotation.
    torch.testing.assert_close(quaternion_to_matrix(-3 * q), R)


def test_quaternion_errors():
    with pytest.raises(ValueError, match="4"):
        quaternion_to_matrix(torch.zeros(3))
    with pytest.raises(ValueError, match="order"):
        quaternion_to_matrix(torch.zeros(4), order="zyxw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order"):
        matrix_to_quaternion(torch.eye(3), order="WXYZ")  # type: ignore[arg-type]


def test_random_rotation_shapes_reproducibility_and_uniformity(gen):
    R = random_rotation((2, 3), generator=gen(6))
    assert R.shape == (2, 3, 3, 3) and R.dtype == torch.float32
    assert random_rotation(4).shape == (4, 3, 3) and random_rotation().shape == (3, 3)
    _assert_rotations(random_rotation(5, dtype=torch.float64))
    torch.testing.assert_close(
        random_rotation(3, generator=gen(7)), random_rotation(3, generator=gen(7))
    )
    # Haar measure on SO(3): each entry has mean 0 and variance 1/3; the rotation angle has density
    # (1 - cos a) / pi on [0, pi], whose mean is pi / 2 + 2 / pi.
    n = 20000
    R = random_rotation(n, generator=gen(8), dtype=torch.float64)
    tol = 5 / math.sqrt(n)
    assert R.mean(0).abs().max() < tol
    assert (R.square().mean(0) - 1 / 3).abs().max() < tol
    angle = matrix_to_axis_angle(R).norm(dim=-1)
    assert abs(angle.mean().item() - (math.pi / 2 + 2 / math.pi)) < 2 * tol


def test_geodesic_distance_matches_angle_of_relative_rotation(gen):
    g = gen(9)
    R1 = random_rotation((4, 5), generator=g, dtype=torch.float64)
    rotvec = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    angles = torch.linspace(0, math.pi, 20, dtype=torch.float64).reshape(4, 5)
    rotvec = rotvec / rotvec.norm(dim=-1, keepdim=True) * angles[..., None]
    R2 = R1 @ axis_angle_to_matrix(rotvec)
    d = geodesic_distance(R1, R2)
    assert d.shape == (4, 5)
    torch.testing.assert_close(d, angles)
    torch.testing.assert_close(geodesic_distance(R2, R1), angles)
    # Broadcasting one rotation against a batch.
    torch.testing.assert_close(
        geodesic_distance(torch.eye(3, dtype=torch.float64), R1),
        matrix_to_axis_angle(R1).norm(dim=-1),
    )
    with pytest.raises(ValueError, match="3, 3"):
        geodesic_distance(torch.eye(3), torch.eye(4))


def test_geodesic_distance_is_accurate_and_has_finite_gradients_at_the_ends(gen):
    small = axis_angle_to_matrix(torch.tensor([1e-7, 0.0, 0.0], dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64)
    assert geodesic_distance(eye, small).item() == pytest.approx(1e-7, rel=1e-6)
    for R in (
        eye,
        axis_angle_to_matrix(torch.tensor([0.0, math.pi - 1e-6, 0.0], dtype=torch.float64)),
    ):
        R = R.clone().requires_grad_()
        geodesic_distance(eye, R).backward()
        assert torch.isfinite(R.grad).all()
    x = torch.randn(2, 6, generator=gen(10), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: geodesic_distance(rotation_6d_to_matrix(x[0]), rotation_6d_to_matrix(x[1])), (x,)
    )


def test_rotation_spread_is_the_mean_angle_from_the_mean_rotation() -> None:
    g = torch.Generator().manual_seed(0)
    base = random_rotation(1, generator=g, dtype=torch.float64)
    angle = 0.3
    axis = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    R = torch.cat([base @ axis_angle_to_matrix(s * angle * axis) for s in (1.0, -1.0)])
    assert float(rotation_spread(R)) == pytest.approx(angle, abs=1e-9)
    assert float(rotation_spread(base.expand(5, 3, 3))) == pytest.approx(0.0, abs=1e-6)
    spread = float(rotation_spread(random_rotation(2000, generator=g, dtype=torch.float64)))
    assert spread > 1.5  # uniform rotations: far from any single pose
    with pytest.raises(ValueError, match="rotation_spread"):
        rotation_spread(torch.zeros(0, 3, 3))
    with pytest.raises(ValueError, match="rotation_spread"):
        rotation_spread(torch.eye(3))
