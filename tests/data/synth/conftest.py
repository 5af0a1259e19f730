"""The real Surrey Face Model of ``../shared`` (the tiny test-made one, ``tiny_sfm`` and
``sfm_writer``, is in ``tests/conftest.py``: the benchmark tests use it too)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_SFM = Path(__file__).resolve().parents[3] / ".." / "shared" / "assets" / "sfm"


@pytest.fixture
def shared_sfm() -> Path:
    """The real model in ../shared (tests using it skip when it is absent)."""
    if not (SHARED_SFM / "sfm_shape_3448.bin").is_file():
        pytest.skip(f"needs the Surrey Face Model in {SHARED_SFM}")
    return SHARED_SFM
