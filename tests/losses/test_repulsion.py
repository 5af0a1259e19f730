import math

import pytest
import torch

from kp3d.losses.repulsion import nearest_neighbour_distance, repulsion_loss


def naive_repulsion(kp, h):
    out = []
    for pts in kp.reshape(-1, *kp.shape[-2:]):
        total = 0.0
        for i in range(len(pts)):
            d = min(float((pts[i] - pts[j]).norm()) for j in range(len(pts)) if j != i)
            total -= d * math.exp(-d / h)
        out.append(total)
    return torch.tensor(out, dtype=kp.dtype).reshape(kp.shape[:-2])


def test_matches_the_definition():
    kp = torch.rand(2, 3, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(repulsion_loss(kp, h=0.2), naive_repulsion(kp, 0.2))


def test_nearest_neighbour_distance():
    kp = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    torch.testing.assert_close(
        nearest_neighbour_distance(kp), torch.tensor([1.0, math.sqrt(18.0), 1.0])
    )


def test_pushes_close_points_apart_and_pulls_at_most_to_h():
    def grad_of_distance(d, h=0.1):
        kp = torch.tensor([[0.0, 0.0], [d, 0.0]], dtype=torch.float64, requires_grad=True)
        repulsion_loss(kp, h=h).backward()
        return kp.grad[1, 0].item()  # d(loss)/d(x of the second point)

    assert grad_of_distance(0.05) < 0  # descent moves it away
    assert grad_of_distance(0.2) > 0  # beyond h it is drawn back towards h
    assert abs(grad_of_distance(0.1)) < 1e-9  # the optimum spacing


def test_gradcheck_and_coincident_points():
    kp = torch.rand(
        2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True
    )
    torch.autograd.gradcheck(lambda x: repulsion_loss(x, h=0.3), (kp,))
    same = torch.zeros(1, 3, 2, requires_grad=True)
    repulsion_loss(same, h=0.1).sum().backward()
    assert torch.isfinite(same.grad).all()


def test_errors():
    with pytest.raises(ValueError, match="h must be"):
        repulsion_loss(torch.rand(3, 2), h=0.0)
    with pytest.raises(ValueError, match="K >= 2"):
        repulsion_loss(torch.rand(1, 2), h=0.1)
