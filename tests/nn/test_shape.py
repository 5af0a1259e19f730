"""kp3d.nn.shape.linear_shape against a plain loop, with shapes, errors and gradients."""

import pytest
import torch

from kp3d.nn.shape import linear_shape


def test_linear_shape_matches_loop_and_broadcasts() -> None:
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 3, generator=g, dtype=torch.float64)
    basis = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    alpha = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)  # two leading dims
    got = linear_shape(mean, basis, alpha)
    assert got.shape == (4, 3, 5, 3)
    for i in range(4):
        for j in range(3):
            for k in range(5):
                for c in range(3):
                    want = mean[k, c] + sum(alpha[i, j, n] * basis[n, k, c] for n in range(2))
                    assert got[i, j, k, c].item() == pytest.approx(want.item(), rel=1e-12)
    # No basis: the mean shape for every instance.
    rigid = linear_shape(mean, basis[:0], alpha[..., :0])
    assert torch.equal(rigid, mean.expand(4, 3, 5, 3))


def test_linear_shape_errors_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    basis = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_shape, (mean, basis, alpha))
    with pytest.raises(ValueError, match="linear_shape: alpha"):
        linear_shape(mean, basis, alpha[:, :1])
    with pytest.raises(ValueError, match="linear_shape: mean"):
        linear_shape(mean[:4], basis, alpha)
    with pytest.raises(ValueError, match="linear_shape: basis"):
        linear_shape(mean, basis[..., :2], alpha)
