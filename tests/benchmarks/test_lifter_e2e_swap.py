"""The lifter swap reproduces the lifter-e2e benchmark's own rows from the saved runs."""

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

BenchmarkModule = Callable[[str], ModuleType]


def _train_tiny(bench: ModuleType, out: Path, *rows: str, steps: int) -> Path:
    """Seed 0 of the lifter-e2e benchmark's ``rows`` on a tiny mix; returns its ``seed0``."""
    argv = ["--out", str(out), "--train", "4", "--test", "3", "--size", "32"]
    assert bench.main([*argv, "--steps", str(steps), "--seeds", "0", "--rows", *rows]) == 0
    return out / "seed0"


def test_swap_rows_reproduce_the_benchmarks_rows(
    benchmark_module: BenchmarkModule, tmp_path: Path
) -> None:
    bench, swap = benchmark_module("lifter_e2e"), benchmark_module("lifter_e2e_swap")
    out = tmp_path / "bench"
    seed = _train_tiny(bench, out, "e2e", "gt2d", "two-stage", steps=2)
    runs = ["--e2e", str(seed / "e2e"), "--detector", str(seed / "detector")]
    runs += ["--lifter", str(seed / "two-stage"), "--size", "32"]
    assert (
        swap.main(["--data", str(out / "data" / "test"), *runs, "--out", str(tmp_path / "s")]) == 0
    )

    expected = json.loads((out / "results.json").read_text())["rows"]
    got = json.loads((tmp_path / "s" / "results.json").read_text())["rows"]
    assert len(got) == len(swap.SOURCES) * len(swap.LIFTERS) * 2  # two categories
    same = {"e2e": ("e2e", "e2e"), "two-stage": ("detector", "two-stage")}
    same["gt2d"] = ("ground truth", "e2e")
    for row in expected:
        source, lifter = same[row["row"]]
        (mine,) = (
            r
            for r in got
            if (r["source"], r["lifter"], r["category"]) == (source, lifter, row["category"])
        )
        for key in ("mpjpe", "stress", "pck", "error_2d"):
            if key in row:
                assert mine[key] == pytest.approx(row[key], rel=1e-5, abs=1e-7), (row, key)
    # The ground truth has no detection score; every other source has one.
    assert all(("pck" in r) == ("error_2d" in r) == (r["source"] != "ground truth") for r in got)
    # The oracles: corrected misses leave none; hidden ones keep the detections' positions.
    pck = {(r["source"], r["lifter"], r["category"]): r["pck"] for r in got if "pck" in r}
    err = {(r["source"], r["lifter"], r["category"]): r["error_2d"] for r in got if "pck" in r}
    for (source, lifter, category), value in pck.items():
        if source == swap.CORRECTED:
            assert value == 1.0
            # what is left is the hits' error: below the detections' own
            assert err[(source, lifter, category)] < err[("e2e", lifter, category)]
            assert pck[("e2e", lifter, category)] < 1.0  # there were misses to correct
        if source == swap.HIDDEN:
            assert value == pck[("e2e", lifter, category)]


def test_pck_hits_against_a_loop(benchmark_module: BenchmarkModule) -> None:
    bench = benchmark_module("lifter_e2e")
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(5, 6, 2, generator=g) * 40
    pred = gt + torch.randn(5, 6, 2, generator=g) * 3
    vis = torch.rand(5, 6, generator=g) > 0.3
    vis[:, :2] = True
    hits = bench.pck_hits(pred, gt, vis, alpha=0.1)
    for n in range(5):
        pts = [gt[n, k].tolist() for k in range(6) if vis[n, k]]
        side = max(max(p[i] for p in pts) - min(p[i] for p in pts) for i in (0, 1))
        for k in range(6):
            assert bool(hits[n, k]) == (float((pred[n, k] - gt[n, k]).norm()) <= 0.1 * side)
    expected = hits[vis].float().mean().item()
    assert bench.pck(pred, gt, vis, alpha=0.1) == pytest.approx(expected)


def test_a_run_of_another_method_is_refused(
    benchmark_module: BenchmarkModule, tmp_path: Path
) -> None:
    bench, swap = benchmark_module("lifter_e2e"), benchmark_module("lifter_e2e_swap")
    out = tmp_path / "bench"
    seed = _train_tiny(bench, out, "two-stage", steps=1)
    detector, lifter = seed / "detector", seed / "two-stage"
    data = ["--data", str(out / "data" / "test"), "--size", "32", "--out", str(tmp_path / "s")]
    with pytest.raises(SystemExit, match="a lifter run; expected a lifter-e2e run"):
        swap.main(
            [*data, "--e2e", str(lifter), "--detector", str(detector), "--lifter", str(lifter)]
        )
    with pytest.raises(SystemExit, match="missing"):
        swap.main(
            [*data, "--e2e", str(tmp_path / "missing"), "--detector", str(detector)]
            + ["--lifter", str(lifter)]
        )
