"""Shared by the benchmark tests: importing a benchmark script as a module."""

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

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


@pytest.fixture
def train_configs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace :func:`kp3d.engine.train` by a stub that trains nothing and records, per method,
    the :class:`kp3d.engine.TrainConfig` the engine would resolve from what it was given (the
    method's ``train_defaults`` apply unless a complete config is passed)."""
    from kp3d.engine.run import resolve_train_config
    from kp3d.methods import get_method

    seen: dict[str, Any] = {}

    def fake_train(method: str, data: Any, run_dir: Path, **kwargs: Any) -> Any:
        seen[method] = resolve_train_config(get_method(method), kwargs["train_config"], source="")
        return SimpleNamespace(model=torch.nn.Identity(), steps=0)

    monkeypatch.setattr("kp3d.engine.train", fake_train)
    return seen
