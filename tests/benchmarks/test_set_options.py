"""``--set`` of the keypoint-discovery benchmarks: dotted keys reach nested method settings."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from kp3d.config import config_from_dict
from kp3d.data.augment import AugmentConfig
from kp3d.methods.autolink3d import AutoLink3DConfig

BenchmarkModule = Callable[[str], ModuleType]


def test_dotted_keys_set_values_of_nested_tables(benchmark_module: BenchmarkModule) -> None:
    parse_set = benchmark_module("_unsupervised").parse_set
    got = parse_set(["k=8", "augment.flip=0.5", 'augment.backgrounds=["noise"]'])
    assert got == {"k": 8, "augment": {"flip": 0.5, "backgrounds": ["noise"]}}
    config = config_from_dict(AutoLink3DConfig, got, source="--set")
    assert config.augment == AugmentConfig(flip=0.5, backgrounds=("noise",))
    # A JSON table and dotted keys add up.
    both = parse_set(['augment={"hue": 0.1}', "augment.scale=0.2"])
    assert both == {"augment": {"hue": 0.1, "scale": 0.2}}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["augment.flip=0.5", "augment.flip=0.1"], "augment.flip: given twice"),
        (['augment={"flip": 0.5}', "augment.flip=0.1"], "augment.flip: given twice"),
        (["k=8", "k.x=1"], "k is not a table"),
        (["augment.=1"], "expected KEY=VALUE"),
        ([".flip=1"], "expected KEY=VALUE"),
    ],
)
def test_bad_dotted_keys_are_refused(
    benchmark_module: BenchmarkModule, pairs: list[str], message: str
) -> None:
    with pytest.raises(SystemExit, match=message):
        benchmark_module("_unsupervised").parse_set(pairs)
