"""Shared by the benchmark tests: importing a benchmark script as a module."""

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _benchmark_module(name: str) -> ModuleType:
    """Import ``benchmarks/NAME.py`` (scripts, not a package: they import each other by name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture
def benchmark_module() -> Callable[[str], ModuleType]:
    """:func:`_benchmark_module`."""
    return _benchmark_module
