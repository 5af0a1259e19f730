"""Shared by the geometry tests: seeded random generators."""

from collections.abc import Callable

import pytest
import torch


def _seeded(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded ``seed``: each test draws from its own seeds."""
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def gen() -> Callable[[int], torch.Generator]:
    """:func:`_seeded`."""
    return _seeded
