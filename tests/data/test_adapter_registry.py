import importlib

import pytest

from kp3d.data.adapters import ADAPTERS, adapter, detect_format


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_adapter_has_the_interface(name: str) -> None:
    module = importlib.import_module(ADAPTERS[name])
    assert callable(module.detect) and callable(module.open)


def test_unknown_format_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="image_folder"):
        adapter("nope")


def test_missing_path_is_an_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        detect_format(tmp_path / "nope")
