import pytest
import torch

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


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    P = torch.randn(3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(3, 4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.8, 1.2], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(projection_loss, (P, p, s))


def test_errors():
    with pytest.raises(ValueError, match="points must be"):
        orthographic_project(torch.zeros(2, 2), torch.ones(2))
    with pytest.raises(ValueError, match="scales"):
        orthographic_project(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="kp2d must be"):
        projection_loss(torch.zeros(1, 4, 3), torch.zeros(1, 3, 2), torch.ones(2))
