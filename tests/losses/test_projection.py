import pytest
import torch
import torch.nn.functional as F

from kp3d.losses.projection import orthographic_project, projection_loss


def test_projection_is_the_matrix_product_with_pi():
    g = torch.Generator().manual_seed(0)
    P = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    s = torch.tensor([1.5, 0.7], dtype=torch.float64)
    Pi = torch.tensor([[1.5, 0.0], [0.0, 0.7], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(orthographic_project(P, s), P @ Pi)


def test_loss_is_mean_euclidean_residual_and_ignores_depth():
    P = torch.tensor([[[1.0, 2.0, 5.0], [0.0, 0.0, -3.0]]])
    p = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    s = torch.ones(2)
    torch.testing.assert_close(projection_loss(P, p, s), torch.tensor([2.5]), atol=1e-5, rtol=0)
    assert projection_loss(P[:, :1], p[:, :1], s).item() == pytest.approx(0.0, abs=1e-5)


def test_relative_loss_is_scale_invariant_and_divides_by_the_spread():
    g = torch.Generator().manual_seed(2)
    P = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    p = torch.randn(4, 6, 2, generator=g, dtype=torch.float64)
    s = torch.tensor([1.1, 0.9], dtype=torch.float64)
    rel = projection_loss(P, p, s, relative=True)
    centred = p - p.mean(1, keepdim=True)
    torch.testing.assert_close(
        rel, projection_loss(P, p, s) / centred.square().sum(-1).mean(-1).sqrt()
    )
    shift = torch.tensor([0.3, -0.2], dtype=torch.float64)
    torch.testing.assert_close(projection_loss(2.5 * P, 2.5 * p, s, relative=True), rel)
    torch.testing.assert_close(
        projection_loss(P + F.pad(shift / s, (0, 1)), p + shift, s, relative=True), rel
    )


def test_relative_loss_exerts_no_shrinking_force_at_a_least_squares_scale():
    # Fit the scale of P's projection to p by least squares (squared loss analogue):
    # the relative squared residual is then stationary under scaling p about its centroid.
    g = torch.Generator().manual_seed(3)
    P = torch.randn(6, 3, generator=g, dtype=torch.float64)
    p0 = torch.randn(6, 2, generator=g, dtype=torch.float64)
    s = torch.ones(2, dtype=torch.float64)

    def loss(c):
        p = c * (p0 - p0.mean(0)) + p0.mean(0)
        q = P[:, :2] - P[:, :2].mean(0)
        centred = p - p.mean(0)
        S = (q * centred).sum() / (q * q).sum()
        fitted = torch.cat([S * q + p.mean(0), P[:, 2:]], -1)
        return projection_loss(fitted, p, s, relative=True)

    c = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    loss(c).backward()
    assert abs(c.grad.item()) < 1e-9


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    P = torch.randn(3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(3, 4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.8, 1.2], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(projection_loss, (P, p, s))
    torch.autograd.gradcheck(lambda *a: projection_loss(*a, relative=True), (P, p, s))


def test_errors():
    with pytest.raises(ValueError, match="points must be"):
        orthographic_project(torch.zeros(2, 2), torch.ones(2))
    with pytest.raises(ValueError, match="scales"):
        orthographic_project(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="kp2d must be"):
        projection_loss(torch.zeros(1, 4, 3), torch.zeros(1, 3, 2), torch.ones(2))
