"""The keypointnet benchmark's code path (synth -> train keypointnet and an ablation -> the
supervised baseline -> autolink3d -> evaluate with the pose probe -> relative pose -> table) on tiny sets: the
numbers are meaningless here, the plumbing is what is tested."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[2]
BenchmarkModule = Callable[[str], ModuleType]


def test_a_tiny_benchmark_writes_every_row(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "keypointnet.py"),
        "--out",
        str(tmp_path),
        "--rig",
        "2",
        "--n-train",
        "6",
        "--n-test",
        "8",
        "--sequences",
        "1",
        "--size",
        "32",
        "--k",
        "4",
        "--steps",
        "2",
        "--threads",
        "1",
        "--variants",
        "full",
        "no_orient",
        "--probe",
        "linear",
        "--set",
        "width=4",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    models = [r["model"] for r in rows]
    assert models == [
        "autolink3d",
        "ground-truth joints",
        "identity rotation",
        "keypointnet full",
        "keypointnet no_orient",
        "supervised rotation regressor",
    ]
    for r in rows:
        assert r["pairs"] == 8 and 0 <= r["median"] <= 180 and 0 <= r["under_15"] <= 1
    assert rows[1]["median"] < 1e-3  # the ground-truth joints give the true rotation
    assert rows[2]["median"] > 1  # the identity: the rig's own angles
    assert rows[0]["steps"] == rows[3]["steps"] == rows[5]["steps"] == 2
    assert rows[0]["probe_linear_p_mpjpe"] > 0 and rows[3]["probe_linear_p_mpjpe"] > 0
    autolink = json.loads((tmp_path / "creature-s0" / "autolink3d" / "config.json").read_text())
    assert autolink["method"] == "autolink3d" and autolink["model"]["k"] == 4
    config = json.loads((tmp_path / "creature-s0" / "no_orient" / "config.json").read_text())
    assert config["model"]["orientation"] == "off" and config["model"]["width"] == 4
    assert (tmp_path / "results.md").read_text().count("\n") == 8


def test_pair_data_is_also_scored_on_the_rig_moments(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "keypointnet.py"), "--out", str(tmp_path)]
    cmd += ["--data", "pairs", "--rig", "3", "--n-train", "6", "--n-test", "5", "--sequences"]
    cmd += ["1", "--size", "32", "--k", "4", "--steps", "2", "--threads", "1", "--no-autolink"]
    cmd += ["--probe", "linear", "--set", "width=4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["model"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert set(rows) == {
        "ground-truth joints",
        "identity rotation",
        "keypointnet full",
        "supervised rotation regressor",
    }
    for r in rows.values():
        assert r["pairs"] == 5 and 0 <= r["rig_median"] <= 180 and "rig_under_15" not in r
    assert rows["ground-truth joints"]["rig_median"] < 1e-3
    # Three rig cameras spread evenly around the volume: about 120 degrees between views.
    assert rows["identity rotation"]["rig_median"] > 60
    assert rows["identity rotation"]["rig_mean"] != rows["identity rotation"]["mean"]
    assert 0 < rows["supervised rotation regressor"]["train_loss_deg"] <= 180


def test_the_baseline_regresses_a_rotation(benchmark_module: BenchmarkModule) -> None:
    bench = benchmark_module("keypointnet")
    model = bench.RotationRegressor(4).eval()
    R = model(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand(2, 3, 3))
    assert torch.allclose(torch.linalg.det(R), torch.ones(2), atol=1e-5)
