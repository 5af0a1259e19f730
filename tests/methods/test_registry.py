import dataclasses

import pytest

from kp3d.methods import REGISTRY, MethodSpec, get_method


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_entry_resolves_to_a_spec(name: str) -> None:
    spec = get_method(name)
    assert isinstance(spec, MethodSpec)
    assert dataclasses.is_dataclass(spec.config_cls)
    assert spec.config_cls.__dataclass_params__.frozen
    for key in spec.overrides:
        assert key in {f.name for f in dataclasses.fields(spec.config_cls)}


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="autolink3d"):
        get_method("nope")
