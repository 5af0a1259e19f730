"""The lifter-e2e benchmark's code path (synth mix -> four rows -> table) with a few steps on
tiny images: the numbers are meaningless here, the plumbing is what is tested."""

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

BenchmarkModule = Callable[[str], ModuleType]


def test_pck_against_a_loop(benchmark_module: BenchmarkModule) -> None:
    bench = benchmark_module("lifter_e2e")
    g = torch.Generator().manual_seed(0)
    gt = 50 * torch.rand(5, 6, 2, generator=g)
    pred = gt + 4 * torch.randn(5, 6, 2, generator=g)
    vis = torch.rand(5, 6, generator=g) > 0.3
    vis[:, :2] = True
    hits = []
    for b in range(5):
        pts = gt[b][vis[b]]
        side = float((pts.max(0).values - pts.min(0).values).max())
        hits += [float((pred[b, k] - gt[b, k]).norm()) <= 0.1 * side for k in range(6) if vis[b, k]]
    assert bench.pck(pred, gt, vis) == pytest.approx(sum(hits) / len(hits))
    assert bench.pck(gt, gt, vis) == 1.0


def test_every_row_runs(tmp_path: Path, benchmark_module: BenchmarkModule) -> None:
    bench = benchmark_module("lifter_e2e")
    out = tmp_path / "out"
    args = ["--out", str(out), "--train", "4", "--test", "2", "--size", "32", "--steps", "2"]
    args += ["--batch-size", "4", "--seeds", "0", "--set", "detector_steps=1", "cycle_start=1"]
    args += ["d_model=16", "ffn=32", "width=32"]
    assert bench.main(args) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    done = {(r["row"], r["category"]) for r in rows}
    assert done == {(row, c) for row in bench.ROWS for c in bench.CATEGORIES}
    for r in rows:
        assert r["mpjpe"] >= 0 and r["stress"] >= 0
        if r["row"] in ("e2e", "two-stage"):
            assert 0 <= r["pck"] <= 1 and 0 <= r["accuracy"] <= 1
