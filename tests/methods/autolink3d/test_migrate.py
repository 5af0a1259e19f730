"""Stored runs with the options removed after they measured no gain (decoder_input
edges+keypoints with keypoint_map_sigma, rotation_hypotheses, w_alpha)."""

import json
from pathlib import Path

import pytest
import torch

from kp3d.config import config_from_dict, config_to_dict
from kp3d.engine import TrainConfig, load_run, read_run_config
from kp3d.engine.run import RUN_FORMAT_VERSION, save_weights
from kp3d.errors import ConfigError
from kp3d.methods.autolink3d import SPEC, SPEC_2D, AutoLink3D, AutoLink3DConfig
from kp3d.methods.autolink3d.config import migrate

SMALL = AutoLink3DConfig(
    k=4, image_size=32, mask_grid=8, width=0.125, n_basis=2, perceptual="none", w_pixel=1.0
)
# What earlier versions stored for the removed options when they were off (their defaults).
REMOVED_AT_DEFAULTS = {
    "decoder_input": "edges",
    "keypoint_map_sigma": 0.1,
    "rotation_hypotheses": 1,
    "w_alpha": 0.0,
}


def write_run(run: Path, method: str, model: dict, version: int = RUN_FORMAT_VERSION) -> None:
    run.mkdir()
    doc = {
        "format": "kp3d-run",
        "format_version": version,
        "method": method,
        "model": model,
        "train": config_to_dict(TrainConfig(steps=10)),
        "data": None,
        "provenance": {"kp3d_version": "0.1.0"},
    }
    (run / "config.json").write_text(json.dumps(doc))
    torch.manual_seed(0)
    save_weights(run / "model.safetensors", AutoLink3D(SMALL))


@pytest.mark.parametrize("version", range(1, RUN_FORMAT_VERSION + 1))
def test_a_run_that_left_the_removed_options_off_loads_without_them(tmp_path, version):
    stored = {**config_to_dict(SMALL), **REMOVED_AT_DEFAULTS, "keypoint_map_sigma": 0.3}
    write_run(tmp_path / "run", "autolink3d", stored, version)
    loaded = load_run(tmp_path / "run")
    assert loaded.method_config == SMALL
    torch.manual_seed(0)
    expected = AutoLink3D(SMALL).state_dict()
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"decoder_input": "edges+keypoints"}, "decoder_input = 'edges+keypoints'"),
        ({"rotation_hypotheses": 4}, "rotation_hypotheses = 4"),
        ({"w_alpha": 0.01}, "w_alpha = 0.01"),
    ],
)
@pytest.mark.parametrize("method", ["autolink3d", "autolink"])
def test_a_run_that_used_a_removed_option_is_refused_naming_it(tmp_path, changes, named, method):
    stored = {**config_to_dict(SMALL), **REMOVED_AT_DEFAULTS, **changes}
    write_run(tmp_path / "run", method, stored)
    with pytest.raises(ConfigError) as info:
        read_run_config(tmp_path / "run")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "run" / "config.json"))
    assert named in message and "removed" in message and "docs/results.md" in message


def test_migrate_drops_only_the_removed_keys_and_names_every_used_one():
    values = {**config_to_dict(SMALL), **REMOVED_AT_DEFAULTS}
    assert migrate(values, RUN_FORMAT_VERSION) == config_to_dict(SMALL)
    assert "w_alpha" in values  # the caller's dict is left alone
    current = config_to_dict(SMALL)
    assert migrate(current, RUN_FORMAT_VERSION) == current
    used = {**values, "decoder_input": "edges+keypoints", "rotation_hypotheses": 2, "w_alpha": 1}
    with pytest.raises(ConfigError, match="decoder_input .*rotation_hypotheses = 2, w_alpha = 1"):
        migrate(used, 1)
    assert SPEC.migrate is migrate and SPEC_2D.migrate is migrate


@pytest.mark.parametrize("key", ["rotation_hypotheses", "w_alpha", "keypoint_map_sigma"])
def test_the_removed_options_are_unknown_keys_of_the_config(key):
    with pytest.raises(ConfigError, match=f"unknown key {key}"):
        config_from_dict(AutoLink3DConfig, {key: REMOVED_AT_DEFAULTS[key]}, source="test")
    with pytest.raises(ConfigError, match="valid choices: edges, edges\\+depth"):
        AutoLink3DConfig(decoder_input="edges+keypoints")  # type: ignore[arg-type]
