"""The creature benchmark's code path (synth -> train -> evaluate -> montage -> merged table)
on a tiny set: the numbers are meaningless here, the plumbing is what is tested."""

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BenchmarkModule = Callable[[str], ModuleType]


def _run(out: Path, method: str) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "creature.py"),
        "--out",
        str(out),
        "--methods",
        method,
        "--k",
        "4",
        "--size",
        "32",
        "--n-train",
        "24",
        "--n-test",
        "12",
        "--steps",
        "2",
        "--threads",
        "1",
        "--set",
        "width=0.125",
        "mask_grid=8",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_invocations_merge_into_one_table(tmp_path: Path) -> None:
    _run(tmp_path, "autolink3d")
    _run(tmp_path, "autolink")
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["k"]) for r in rows] == [("autolink", 4), ("autolink3d", 4)]
    assert all(r["steps"] == 2 and 0 < r["nme"] for r in rows)
    three_d = rows[1]
    assert {"nme3d", "nme3d_depth", "nme3d_flat_baseline"} <= three_d.keys()
    assert "nme3d" not in rows[0]
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n") == 4 and "autolink3d" in table
    assert all(Path(r["montage"]).is_file() for r in rows)
    # Each run records its training data, as `kp3d train` does (reports name it).
    config = json.loads((tmp_path / "autolink-k4" / "config.json").read_text())
    assert config["data"]["path"] == str((tmp_path / "data" / "creature-train").resolve())
    assert config["data"]["size"] == 32


def test_set_values_are_json_or_plain_strings(benchmark_module: BenchmarkModule) -> None:
    parse_set = benchmark_module("_unsupervised").parse_set
    got = parse_set(
        [
            "n_basis=8",
            "decoder_input=edges+depth",
            'name="x"',
            "ema=null",
            "betas=[0.9, 0.99]",
            "note=a=b",
        ]
    )
    assert got == {
        "n_basis": 8,
        "decoder_input": "edges+depth",
        "name": "x",
        "ema": None,
        "betas": [0.9, 0.99],
        "note": "a=b",
    }
    for bad in ("n_basis", "=3"):
        with pytest.raises(SystemExit, match="expected KEY=VALUE"):
            parse_set([bad])


def test_repeated_set_options_add_up_and_a_repeated_key_is_refused(
    benchmark_module: BenchmarkModule,
) -> None:
    bench = benchmark_module("_unsupervised")
    parser = argparse.ArgumentParser()
    bench.add_run_arguments(parser, out="runs/x", k=[16], minutes=1.0, clock="cpu")
    args = parser.parse_args(["--set", "min_keypoint_edge=0.1", "--set", "n_basis=0", "k=8"])
    assert bench.parse_set(args.set) == {"min_keypoint_edge": 0.1, "n_basis": 0, "k": 8}
    with pytest.raises(SystemExit, match="n_basis: given twice"):
        bench.parse_set(["n_basis=0", "n_basis=5"])


def test_a_cached_set_with_another_azimuth_range_is_refused(
    tmp_path: Path, benchmark_module: BenchmarkModule
) -> None:
    synthesise = benchmark_module("creature").synthesise
    folder = tmp_path / "creature-train"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"options": {"articulation": 0.3}}))
    # A set from before the option went all around: reused for the default, refused otherwise.
    assert synthesise(folder, 4, 0, 32) == folder
    with pytest.raises(SystemExit, match="generated with --azimuth 0 360, not -90 90"):
        synthesise(folder, 4, 0, 32, [-90.0, 90.0])
    (folder / "meta.json").write_text(json.dumps({"options": {"azimuth": [-90.0, 90.0]}}))
    assert synthesise(folder, 4, 0, 32, [-90.0, 90.0]) == folder
    with pytest.raises(SystemExit, match="not 0 360"):
        synthesise(folder, 4, 0, 32)
