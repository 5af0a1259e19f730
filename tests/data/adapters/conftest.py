"""Fixture writers shared by the adapter tests: tiny images with a distinct colour each."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WriteImage = Callable[..., Path]


def write_image(
    path: Path, w: int, h: int, colour: tuple[int, int, int] = (0, 0, 0), fmt: str | None = None
) -> Path:
    """A w x h image of one colour (so tests can tell images apart after resizing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), colour, dtype=np.uint8)).save(path, format=fmt, quality=95)
    return path


@pytest.fixture
def image_writer() -> WriteImage:
    return write_image
