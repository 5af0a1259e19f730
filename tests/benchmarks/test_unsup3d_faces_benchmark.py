"""benchmarks/unsup3d_faces.py on tiny `creature` sets (they have depth and masks; no ../shared)."""

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from kp3d.cli import main
from kp3d.engine import TrainConfig
from kp3d.methods import get_method


def _synth(out: Path, n: int, seed: int) -> Path:
    args = ["synth", "creature", "--n", str(n), "--size", "32", "--seed", str(seed)]
    assert main([*args, "--out", str(out)]) == 0
    return out


def test_runs_train_with_the_methods_defaults_and_the_given_overrides(
    tmp_path: Path, benchmark_module: Callable[[str], ModuleType]
) -> None:
    bench = benchmark_module("unsup3d_faces")
    train, test = _synth(tmp_path / "train", 6, 0), _synth(tmp_path / "test", 3, 1)
    options = {
        "budget": {"steps": 2, "minutes": None},
        "size": 32,
        "extra": {"width": 4, "perceptual": "none"},
    }
    default_lr = get_method("unsup3d").train_defaults["lr"]
    assert default_lr != TrainConfig().lr  # else this test could not tell them apart

    row = bench.train_and_score(
        "full", 0, train, test, tmp_path / "a", train_extra={"batch_size": 3}, **options
    )
    assert row["train"]["lr"] == default_lr and row["train"]["batch_size"] == 3
    assert row["steps"] == 2 and row["counts"]["scored"] == 3
    assert row["side_ratio"] == pytest.approx(row["side"] / row["side_average_baseline"])
    assert row["mad_ratio"] == pytest.approx(row["mad_deg"] / row["mad_deg_average_baseline"])

    # Again on the finished run: re-scored, not trained further.
    again = bench.train_and_score(
        "full", 0, train, test, tmp_path / "a", train_extra={"batch_size": 3}, **options
    )
    assert (again["steps"], again["train_clock_s"], again["side"]) == (
        row["steps"],
        row["train_clock_s"],
        row["side"],
    )

    row = bench.train_and_score(
        "no_flip",
        0,
        train,
        test,
        tmp_path / "b",
        train_extra={"batch_size": 3, "lr": 0.002},
        **options,
    )
    assert row["train"]["lr"] == 0.002 and row["config"]["use_flip"] is False


def test_train_option_errors_name_the_flag(benchmark_module: Callable[[str], ModuleType]) -> None:
    parse_set = benchmark_module("_unsupervised").parse_set
    with pytest.raises(SystemExit, match="--train 'lr': expected KEY=VALUE"):
        parse_set(["lr"], flag="--train")
    assert parse_set(["lr=0.001", "batch_size=32"], flag="--train") == {
        "lr": 0.001,
        "batch_size": 32,
    }


def test_view_yaw_reads_the_generators_yaw(benchmark_module: Callable[[str], ModuleType]) -> None:
    view_yaw = benchmark_module("unsup3d_faces").view_yaw
    yaw = torch.tensor([-50.0, -10.0, 0.0, 20.0, 65.0], dtype=torch.float64)
    c, s = torch.cos(torch.deg2rad(yaw)), torch.sin(torch.deg2rad(yaw))
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    r_y = torch.stack((c, zero, s, zero, one, zero, -s, zero, c), -1).reshape(-1, 3, 3)
    extrinsics = torch.cat(
        (torch.diag(torch.tensor([1.0, -1, -1])).double() @ r_y, torch.zeros(5, 3, 1)), -1
    )
    view = torch.zeros(5, 6)
    view[:, 1] = torch.deg2rad(-0.5 * yaw).float()  # the opposite sign, half the turn
    out = view_yaw(view, extrinsics)
    assert out["yaw_corr"] == pytest.approx(-1.0)
    assert out["true_yaw_spread_deg"] == pytest.approx(float(yaw.std()))
    assert out["yaw_spread_deg"] == pytest.approx(0.5 * float(yaw.std()), rel=1e-5)
