"""total_variation_l1 against a loop, its zero on constants and its errors."""

import pytest
import torch

from kp3d.losses.smoothness import total_variation_l1


def test_against_a_loop_and_constants() -> None:
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    down = right = 0.0
    for b in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(5):
                    if i < 3:
                        down += abs(float(x[b, c, i + 1, j] - x[b, c, i, j])) / (2 * 3 * 3 * 5)
                    if j < 4:
                        right += abs(float(x[b, c, i, j + 1] - x[b, c, i, j])) / (2 * 3 * 4 * 4)
    assert float(total_variation_l1(x)) == pytest.approx(down + right, rel=1e-12)
    assert float(total_variation_l1(torch.full((3, 6, 6), 0.7))) == 0.0
    # a ramp of slope 0.1 along the columns: only the horizontal term, 0.1 per pixel
    ramp = 0.1 * torch.arange(6.0).expand(4, 6)
    assert float(total_variation_l1(ramp)) == pytest.approx(0.1)


def test_gradcheck_and_errors() -> None:
    x = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(total_variation_l1, (x,))
    with pytest.raises(ValueError, match="H, W >= 2"):
        total_variation_l1(torch.zeros(3, 1, 5))
    with pytest.raises(ValueError, match="H, W >= 2"):
        total_variation_l1(torch.zeros(5))
