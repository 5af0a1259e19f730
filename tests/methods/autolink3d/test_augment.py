"""Training-batch augmentation in autolink3d / autolink: the ``augment`` settings, training with
it on, predictions untouched, and runs stored before it existed."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

from kp3d.config import config_from_dict, config_to_dict
from kp3d.data.augment import AugmentConfig
from kp3d.data.schema import Sample, collate
from kp3d.data.synth import generate
from kp3d.engine import TrainConfig, load_run
from kp3d.engine.run import RUN_FORMAT_VERSION, save_weights
from kp3d.errors import ConfigError
from kp3d.methods import get_method
from kp3d.methods.autolink3d import AutoLink3D, AutoLink3DConfig

TINY = {
    "k": 4,
    "image_size": 32,
    "heatmap_size": 8,
    "mask_grid": 8,
    "width": 0.125,
    "n_basis": 2,
    "perceptual": "none",
    "w_pixel": 1.0,
}
ON = AugmentConfig(
    brightness=0.2,
    contrast=0.2,
    saturation=0.2,
    hue=0.05,
    gamma=0.2,
    scale=0.1,
    translate=0.05,
    background=0.5,
    flip=0.5,
)


def _batch(n: int = 4, size: int = 32) -> Sample:
    """Creature images with masks (and the fields a rendered set has)."""
    return collate(generate("creature", n, size=size, seed=0))


def _build(name: str = "autolink3d", augment: AugmentConfig = ON) -> AutoLink3D:
    spec = get_method(name)
    torch.manual_seed(0)
    return spec.build(spec.config_cls(**{**TINY, **spec.overrides, "augment": augment}))


def test_augment_settings_parse_from_a_nested_table_and_round_trip() -> None:
    c = config_from_dict(
        AutoLink3DConfig,
        {"augment": {"flip": 0.5, "backgrounds": ["noise"], "padding": "zeros"}},
        source="run.toml",
    )
    assert c.augment == AugmentConfig(flip=0.5, backgrounds=("noise",), padding="zeros")
    assert not AutoLink3DConfig().augment.enabled  # off by default
    again = config_from_dict(
        AutoLink3DConfig, json.loads(json.dumps(config_to_dict(c))), source="x"
    )
    assert again == c
    with pytest.raises(ConfigError, match=r"run.toml: unknown key augment\.flp"):
        config_from_dict(AutoLink3DConfig, {"augment": {"flp": 0.5}}, source="run.toml")
    with pytest.raises(ConfigError, match=r"run.toml: augment\.flip: a probability"):
        config_from_dict(AutoLink3DConfig, {"augment": {"flip": 2}}, source="run.toml")


@pytest.mark.parametrize("name", ["autolink3d", "autolink"])
def test_two_training_steps_with_augmentation_change_the_parameters(name: str) -> None:
    model = _build(name)
    model.train()
    batch = _batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.manual_seed(1)
    for step in range(2):
        out = model.training_step(batch, step)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {
        n.split(".")[0]
        for n, p in model.named_parameters()
        if n in before and not torch.equal(p, before[n])
    }
    assert {"detector", "decoder", "skeleton_logits"} <= changed


def test_augmentation_changes_training_batches_only_in_train_mode() -> None:
    model, batch = _build(), _batch()
    torch.manual_seed(2)
    augmented = model._augment(batch)
    assert not torch.equal(augmented.image, batch.image)
    torch.manual_seed(2)
    assert torch.equal(model._augment(batch).image, augmented.image)  # the engine's seed rules
    model.eval()
    assert model._augment(batch) is batch
    assert _build(augment=AugmentConfig()).train()._augment(batch) is batch
    # The loss sees the augmented batch: with the same seed, it differs from the plain model's.
    plain = _build(augment=AugmentConfig()).train()
    model.train()
    torch.manual_seed(3)
    a = model.training_step(batch, 0).loss
    torch.manual_seed(3)
    b = plain.training_step(batch, 0).loss
    assert not torch.equal(a, b)


@pytest.mark.parametrize("train_mode", [False, True])
def test_predict_is_unaffected_by_augmentation(train_mode: bool) -> None:
    on, off = _build(augment=ON), _build(augment=AugmentConfig())
    for model in (on, off):
        model.train(train_mode)
    batch = _batch()
    state = torch.get_rng_state()
    a, b = on.predict(batch), off.predict(batch)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    for (name, x), (_, y) in zip(a.items(), b.items()):
        assert torch.equal(x, y), name


def test_backgrounds_without_masks_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    model = _build(augment=AugmentConfig(background=1.0)).train()
    batch = dataclasses.replace(_batch(), mask=None)
    with caplog.at_level(logging.WARNING):
        model.training_step(batch, 0)
        model.training_step(batch, 1)
    assert sum("no masks" in r.getMessage() for r in caplog.records) == 1


def test_a_run_stored_before_augment_existed_loads_with_it_off(tmp_path: Path) -> None:
    config = AutoLink3DConfig(**TINY)
    stored = config_to_dict(config)
    del stored["augment"]
    run = tmp_path / "run"
    run.mkdir()
    doc = {
        "format": "kp3d-run",
        "format_version": RUN_FORMAT_VERSION,
        "method": "autolink3d",
        "model": stored,
        "train": config_to_dict(TrainConfig(steps=10)),
        "data": None,
        "provenance": {"kp3d_version": "0.1.0"},
    }
    (run / "config.json").write_text(json.dumps(doc))
    save_weights(run / "model.safetensors", AutoLink3D(config))
    loaded = load_run(run)
    assert loaded.method_config == config
    assert not loaded.method_config.augment.enabled


def test_the_command_line_trains_with_augment_flags(tmp_path: Path) -> None:
    from kp3d.cli import main

    data = tmp_path / "data"
    assert main(["synth", "creature", "--n", "8", "--size", "32", "--out", str(data)]) == 0
    argv = ["train", "--method", "autolink", "--data", str(data), "--out", str(tmp_path / "run")]
    argv += ["--k", "4", "--size", "32", "--heatmap-size", "8", "--mask-grid", "8"]
    argv += ["--width", "0.125", "--perceptual", "none", "--w-pixel", "1", "--steps", "2"]
    argv += ["--batch-size", "4", "--augment.flip", "0.5", "--augment.background", "1"]
    assert main(argv) == 0
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["augment"]
    assert stored["flip"] == 0.5 and stored["background"] == 1.0
    assert load_run(tmp_path / "run").method_config.augment.flip == 0.5
