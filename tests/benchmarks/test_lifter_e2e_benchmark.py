"""The lifter-e2e benchmark's baseline rows on a tiny two-category mix (its model rows train
through the code of the method's CLI round trip)."""

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from kp3d.data.adapters import open_dataset
from kp3d.data.schema import collate
from kp3d.evaluation import evaluate_lifting
from kp3d.methods import get_method

BenchmarkModule = Callable[[str], ModuleType]


def test_baseline_rows_are_each_categorys_own(
    benchmark_module: BenchmarkModule, tmp_path: Path
) -> None:
    bench = benchmark_module("lifter_e2e")
    argv = ["--out", str(tmp_path), "--train", "4", "--test", "3", "--size", "32"]
    assert bench.main([*argv, "--rows", "baselines", "--seeds", "0"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["row"], r["category"]) for r in rows] == [
        ("flat", "creature"),
        ("flat", "quadruped"),
        ("mean shape (3D labels)", "creature"),
        ("mean shape (3D labels)", "quadruped"),
    ]
    # Each category's rows are the protocol on that category's set alone (its own keypoints).
    for z, name in enumerate(("creature", "quadruped")):
        fit, test = (
            collate([*open_dataset(tmp_path / "data" / split / name, size=32)])
            for split in ("train", "test")
        )
        alone = evaluate_lifting(torch.zeros_like(test.kp3d), test, fit=fit)
        for r, key in ((rows[z], "flat"), (rows[2 + z], "mean_shape")):
            assert r["mpjpe"] == pytest.approx(alone[key]["mpjpe"]["norm"], rel=1e-6)
            assert r["stress"] == pytest.approx(alone[key]["stress"]["norm"], rel=1e-6)


def test_models_train_with_their_methods_own_defaults(
    benchmark_module: BenchmarkModule, tmp_path: Path, train_configs: dict[str, Any]
) -> None:
    # The lifting methods need float32 and e2e its own learning rate: a complete TrainConfig
    # would replace both with the engine's defaults.
    bench = benchmark_module("lifter_e2e")
    for method in ("lifter-e2e", "lifter"):
        bench.train_run(method, None, tmp_path, {}, {"steps": 3, "batch_size": 8, "seed": 1})
        cfg, defaults = train_configs[method], get_method(method).train_defaults
        assert cfg.bf16 is False and cfg.lr == defaults["lr"]
        assert (cfg.steps, cfg.batch_size, cfg.seed) == (3, 8, 1)


def test_the_budget_is_the_minutes_given_without_a_hidden_step_limit(
    benchmark_module: BenchmarkModule, tmp_path: Path, train_configs: dict[str, Any]
) -> None:
    from argparse import Namespace

    bench = benchmark_module("lifter_e2e")
    args = Namespace(minutes=15.0, clock="cpu", steps=None, batch_size=32)
    bench.train_run("lifter-e2e", None, tmp_path, {}, bench.budget_of(args))
    cfg = train_configs["lifter-e2e"]
    assert (cfg.minutes, cfg.clock, cfg.steps) == (15.0, "cpu", None)
    args.steps = 7
    bench.train_run("lifter-e2e", None, tmp_path, {}, bench.budget_of(args))
    cfg = train_configs["lifter-e2e"]
    assert (cfg.minutes, cfg.steps) == (15.0, 7)


def test_error_2d_is_the_mean_distance_over_the_rms_radius(
    benchmark_module: BenchmarkModule,
) -> None:
    bench = benchmark_module("lifter_e2e")
    g = torch.Generator().manual_seed(0)
    gt, pred = torch.randn(3, 5, 2, generator=g) * 10, torch.randn(3, 5, 2, generator=g) * 10
    vis = torch.rand(3, 5, generator=g) > 0.3
    vis[:, :2] = True
    distances = []
    for n in range(3):
        seen = [k for k in range(5) if vis[n, k]]
        centre = sum(gt[n, k] for k in seen) / len(seen)
        radius = (sum(float((gt[n, k] - centre).square().sum()) for k in seen) / len(seen)) ** 0.5
        distances += [float((pred[n, k] - gt[n, k]).norm()) / radius for k in seen]
    assert bench.error_2d(pred, gt, vis) == pytest.approx(sum(distances) / len(distances))
    assert bench.error_2d(gt, gt, vis) == 0.0
