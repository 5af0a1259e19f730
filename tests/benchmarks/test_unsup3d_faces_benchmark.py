"""benchmarks/unsup3d_faces.py on tiny `creature` sets (they have depth and masks; no ../shared)."""

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

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
