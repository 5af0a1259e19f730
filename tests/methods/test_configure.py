"""Settings read from the data (the specs' configure hooks) and loading runs of run format 1."""

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from kp3d.data.schema import Sample
from kp3d.engine import TrainConfig, load_run
from kp3d.engine.run import write_run_config
from kp3d.errors import ConfigError, DataError
from kp3d.methods import get_method
from kp3d.methods.configure import categories_from_data, drop_inert_keys, keypoints_from_data


def keypoints(n: int = 6, k: int = 5, categories: list[int] | None = None) -> list[Sample]:
    return [
        Sample(
            kp2d=torch.randn(k, 2),
            category=None if categories is None else torch.tensor(categories[i % len(categories)]),
        )
        for i in range(n)
    ]


def test_categories_from_the_data_where_unset_checked_where_set() -> None:
    lifter = get_method("lifter").config_cls
    data = keypoints(categories=[0, 2, 1])
    assert categories_from_data(lifter(), data).n_categories == 3
    assert categories_from_data(lifter(n_categories=5), data).n_categories == 5
    assert categories_from_data(lifter(), keypoints()).n_categories == 1  # no labels
    with pytest.raises(ConfigError, match="n_categories = 2, but the data has 3 categories"):
        categories_from_data(lifter(n_categories=2), data)


def test_keypoints_from_the_data_where_unset() -> None:
    c3dpo = get_method("c3dpo").config_cls
    assert keypoints_from_data(c3dpo(), keypoints(k=7)).n_keypoints == 7
    assert keypoints_from_data(c3dpo(n_keypoints=3), keypoints(k=7)).n_keypoints == 3
    with pytest.raises(DataError, match="no 2D keypoints"):
        keypoints_from_data(c3dpo(), [Sample(image=torch.zeros(3, 4, 4))])


def test_drop_inert_keys_drops_them_or_refuses_the_run() -> None:
    values = {"a": 1, "old": 2, "guard": 0, "b": 3}
    kept = drop_inert_keys(values, ["old", "guard"], guard="guard", active=bool, error="x {value}")
    assert kept == {"a": 1, "b": 3} and list(kept) == ["a", "b"]  # order kept
    assert values == {"a": 1, "old": 2, "guard": 0, "b": 3}  # the input is left alone
    no_guard = {"a": 1}
    assert drop_inert_keys(no_guard, ["old"], guard="guard", active=bool, error="") == no_guard
    with pytest.raises(ConfigError, match="^guard on: 5$"):
        drop_inert_keys(
            {**values, "guard": 5}, ["old"], guard="guard", active=bool, error="guard on: {value}"
        )


@pytest.mark.parametrize("name", ["c3dpo", "lifter", "lifter-fit", "autolink3d"])
def test_spec_configure_hooks(name: str) -> None:
    spec = get_method(name)
    config = spec.config_cls(**spec.overrides)
    configured = spec.configure(config, keypoints(k=7, categories=[0, 1]))
    if name == "autolink3d":
        assert configured == config  # nothing read from the data
    else:
        assert configured.n_keypoints == 7
    if name.startswith("lifter"):
        assert configured.n_categories == 2


def test_an_autolink3d_run_of_format_1_loads(tmp_path: Path) -> None:
    spec = get_method("autolink3d")
    config = spec.config_cls(
        k=4,
        image_size=32,
        heatmap_size=8,
        mask_grid=8,
        width=0.125,
        n_basis=2,
        skeleton_lr_scale=40.0,
    )
    torch.manual_seed(0)
    model = spec.build(config)
    with torch.no_grad():
        model.skeleton_logits.copy_(torch.linspace(-3, 1, model.skeleton_logits.numel()))
    # The layout of format 1: edge logits divided by the scale, under their old name.
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "pairs"}
    state["edge_logits"] = state.pop("skeleton_logits") / 40.0
    safetensors.torch.save_file(state, str(tmp_path / "model.safetensors"))
    write_run_config(
        tmp_path, method="autolink3d", method_config=config, train_config=TrainConfig(), data=None
    )
    doc = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**doc, "format_version": 1}))
    loaded = load_run(tmp_path)
    torch.testing.assert_close(loaded.model.artifacts()["skeleton"], model.artifacts()["skeleton"])
