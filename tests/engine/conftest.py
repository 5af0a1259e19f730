"""The engine tests' tiny method, registered for one test at a time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import kp3d.methods

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the test modules import the dummy method module by name
    sys.path.insert(0, str(HERE))


@pytest.fixture
def dummy(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register ``dummy`` (and ``dummy_other``) from ``dummy_method.py``; returns the name."""
    monkeypatch.setitem(kp3d.methods.REGISTRY, "dummy", "dummy_method:SPEC")
    monkeypatch.setitem(kp3d.methods.REGISTRY, "dummy_other", "dummy_method:SPEC_OTHER")
    return "dummy"
