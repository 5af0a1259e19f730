"""Run folders of run format 1, when lifter-fit was the lifter with flags, load as lifter-fit."""

import json
from pathlib import Path

import pytest
import torch

from kp3d.data.schema import Sample
from kp3d.engine import load_run
from kp3d.engine.run import save_weights
from kp3d.errors import ConfigError
from kp3d.methods.lifter_fit import LifterFit, LifterFitConfig

# What format 1 wrote for `kp3d train --method lifter-fit --width 16 ...`: LifterConfig's keys
# with lifter-fit's overrides.
FORMAT_1_LIFTER_FIT = {
    "n_keypoints": 6,
    "n_categories": 1,
    "n_basis": 3,
    "width": 16,
    "n_layers": 1,
    "norm": "batch",
    "rotation": "6d",
    "camera": "weak_perspective",
    "context_dim": 0,
    "huber_delta": 0.1,
    "cycle_start": None,
    "camera_weight": 1.0,
    "shape_weight": 1.0,
    "shape_prior_weight": 0.0,
    "motion_free_basis": True,
    "coefficient_ridge": 1.0,
    "ensemble": 2,
    "ensemble_batches": "split",
    "ensemble_tolerance": 0.25,
    "refine_steps": 5,
}
FORMAT_1_LIFTER = {
    **FORMAT_1_LIFTER_FIT,
    "cycle_start": 1000,
    "motion_free_basis": False,
    "coefficient_ridge": 0.0,
    "ensemble": 1,
    "ensemble_batches": "shared",
    "refine_steps": 50,
}


def write_format_1_run(run: Path, method: str, model: dict, weights: torch.nn.Module) -> None:
    run.mkdir()
    doc = {
        "format": "kp3d-run",
        "format_version": 1,
        "method": method,
        "model": model,
        "train": {"steps": 10},
        "data": None,
        "provenance": {"kp3d_version": "0.1.0"},
    }
    (run / "config.json").write_text(json.dumps(doc))
    save_weights(run / "model.safetensors", weights)


def test_a_format_1_lifter_fit_run_loads_as_lifter_fit(tmp_path: Path) -> None:
    config = LifterFitConfig(
        **{
            k: v
            for k, v in FORMAT_1_LIFTER_FIT.items()
            if k not in ("cycle_start", "camera_weight", "shape_weight")
        }
    )
    torch.manual_seed(0)
    model = LifterFit(config)
    model.depth_extent.copy_(torch.tensor([0.5, 0.6]))
    write_format_1_run(tmp_path / "run", "lifter-fit", FORMAT_1_LIFTER_FIT, model)
    loaded = load_run(tmp_path / "run")
    assert loaded.method_config == config and isinstance(loaded.model, LifterFit)
    kp2d = torch.randn(4, 6, 2)
    expected = model.eval().predict(Sample(kp2d=kp2d))
    got = loaded.model.predict(Sample(kp2d=kp2d))
    torch.testing.assert_close(got.kp3d, expected.kp3d)


def test_a_format_1_lifter_fit_run_with_the_cycle_is_refused(tmp_path: Path) -> None:
    config = LifterFitConfig(n_keypoints=6, n_basis=3, width=16, n_layers=1, ensemble=2)
    values = {**FORMAT_1_LIFTER_FIT, "cycle_start": 100}
    write_format_1_run(tmp_path / "run", "lifter-fit", values, LifterFit(config))
    with pytest.raises(ConfigError, match=r"config.json: a lifter-fit run of run format 1 with "):
        load_run(tmp_path / "run")


def test_a_format_1_lifter_run_loads_without_the_fit_settings(tmp_path: Path) -> None:
    from kp3d.methods.lifter import Lifter, LifterConfig

    values = {
        k: v for k, v in FORMAT_1_LIFTER.items() if k not in ("coefficient_ridge", "refine_steps")
    }
    model = Lifter(LifterConfig(**values))
    write_format_1_run(tmp_path / "run", "lifter", FORMAT_1_LIFTER, model)
    assert load_run(tmp_path / "run").method_config == LifterConfig(**values)
    write_format_1_run(
        tmp_path / "fit", "lifter", {**FORMAT_1_LIFTER, "coefficient_ridge": 1.0}, model
    )
    with pytest.raises(ConfigError, match="is the method lifter-fit since run format 2"):
        load_run(tmp_path / "fit")
