import dataclasses

import pytest

from kp3d.config import config_from_dict, config_to_dict, field_docs
from kp3d.data.inputs import IMAGES
from kp3d.errors import ConfigError
from kp3d.methods import get_method
from kp3d.methods.autolink3d import SPEC, SPEC_2D, AutoLink3DConfig


def test_defaults_are_valid_and_every_field_is_documented():
    c = AutoLink3DConfig()
    docs = field_docs(AutoLink3DConfig)
    for f in dataclasses.fields(c):
        assert docs.get(f.name), f"{f.name} has no docstring"
    assert c.base_width == 16


def test_registry_entries():
    assert get_method("autolink3d") is SPEC and get_method("autolink") is SPEC_2D
    assert SPEC.inputs == SPEC_2D.inputs == IMAGES
    assert SPEC_2D.overrides == {"use_3d": False}
    assert SPEC.train_defaults["lr"] == SPEC_2D.train_defaults["lr"]


def test_roundtrip_through_dict():
    c = AutoLink3DConfig(
        k=8, image_size=32, heatmap_size=8, mask_grid=8, perceptual="none", w_pixel=1.0
    )
    assert config_from_dict(AutoLink3DConfig, config_to_dict(c), source="test") == c
    v = AutoLink3DConfig(perceptual="vgg16", vgg16_weights="w.pth")  # type: ignore[arg-type]
    assert (
        config_from_dict(AutoLink3DConfig, config_to_dict(v), source="test").vgg16_weights.name
        == "w.pth"
    )


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"k": 1}, "k:"),
        ({"image_size": 40}, "image_size"),
        ({"mask_grid": 7}, "mask_grid"),
        ({"heatmap_size": 12}, "valid: 4, 8, 16, 32, 64"),
        ({"width": 0.001}, "width"),
        ({"edge_thickness": 0.0}, "edge_thickness"),
        ({"skeleton_lr_scale": 0.0}, "skeleton_lr_scale"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"perceptual": "alexnet"}, "valid choices: efficientnet_lite0, vgg16, none"),
        ({"perceptual": "vgg16"}, "vgg16_weights"),
        ({"perceptual": "none"}, "w_pixel"),
        ({"w_repulsion": -1.0}, "w_repulsion"),
        ({"repulsion_h": 0.0}, "repulsion_h"),
        ({"n_basis": -1}, "n_basis"),
    ],
)
def test_invalid_values_raise_config_error(changes, match):
    with pytest.raises(ConfigError, match=match):
        AutoLink3DConfig(**changes)


@pytest.mark.parametrize(("size", "heatmap"), [(32, 8), (48, 12), (64, 16), (128, 32)])
def test_the_heatmap_size_follows_the_image_size_unless_set(size: int, heatmap: int) -> None:
    assert AutoLink3DConfig(image_size=size, mask_grid=16).heatmap_size == heatmap
    assert AutoLink3DConfig(image_size=size, mask_grid=16, heatmap_size=size // 8).heatmap_size == (
        size // 8
    )
