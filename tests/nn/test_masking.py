import pytest
import torch

from kp3d.nn.masking import random_block_mask


def test_blocks_are_constant_and_binary():
    m = random_block_mask(
        4, (32, 16), grid=8, ratio=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert m.shape == (4, 1, 32, 16)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    cells = m.unfold(2, 4, 4).unfold(3, 2, 2)  # (B, 1, 8, 8, 4, 2) one cell per trailing block
    assert (cells.amax((-2, -1)) == cells.amin((-2, -1))).all()


def test_ratio_is_the_dropped_fraction_and_generator_makes_it_reproducible():
    a = random_block_mask(
        64, (16, 16), grid=16, ratio=0.8, generator=torch.Generator().manual_seed(1)
    )
    b = random_block_mask(
        64, (16, 16), grid=16, ratio=0.8, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a, b)
    assert abs((1 - a.mean().item()) - 0.8) < 0.03
    assert random_block_mask(2, (8, 8), grid=4, ratio=0.0).min() == 1
    assert random_block_mask(2, (8, 8), grid=4, ratio=1.0).max() == 0


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        random_block_mask(1, (10, 16), grid=4, ratio=0.5)
    with pytest.raises(ValueError, match="ratio"):
        random_block_mask(1, (16, 16), grid=4, ratio=1.5)
