"""The unsup3d speed benchmark's inputs: Unsup3d's ranges, the rough worst case, a fixed yaw."""

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

BenchmarkModule = Callable[[str], ModuleType]


def test_renderer_inputs_smooth_and_rough(benchmark_module: BenchmarkModule) -> None:
    bench = benchmark_module("speed_unsup3d")
    smooth = bench.renderer_inputs(3, 16)
    assert smooth["depth"].shape == (3, 1, 16, 16)
    assert smooth["depth"].min() >= 0.9 and smooth["depth"].max() <= 1.1
    assert (smooth["depth"].diff(dim=-1).abs() < 0.1).all()  # upsampled: no pixel-to-pixel jumps
    rough = bench.renderer_inputs(3, 16, surface="rough", yaw_deg=60.0)
    values = set(rough["depth"].unique().tolist())
    assert values == {torch.tensor(0.9).item(), torch.tensor(1.1).item()}
    # R = Rz(c) Ry(b) Rx(a): its last row is (-sin b, cos b sin a, cos b cos a).
    R = rough["R"]
    yaw = torch.atan2(-R[:, 2, 0], torch.sqrt(R[:, 2, 1] ** 2 + R[:, 2, 2] ** 2))
    assert torch.allclose(yaw, torch.full((3,), math.radians(60.0)), atol=1e-6)
    flat = bench.renderer_inputs(3, 16, yaw_deg=10.0, max_angle_deg=0.0)["R"]
    assert torch.allclose(flat[:, 2, 1:], torch.tensor([0.0, math.cos(math.radians(10.0))]))


def test_main_times_the_renderer(benchmark_module: BenchmarkModule, tmp_path: Path) -> None:
    bench = benchmark_module("speed_unsup3d")
    out = tmp_path / "r.json"
    argv = ["--size", "16", "--batch", "2", "--reps", "1", "--warmup", "0", "--json", str(out)]
    assert bench.main([*argv, "--surface", "rough", "--yaw", "30"]) == 0
    doc = json.loads(out.read_text())
    assert doc["surface"] == "rough" and doc["yaw_deg"] == 30.0
    assert doc["renderer_forward"]["cpu_ms"] > 0
