"""The triangulation benchmark's code path (synth -> train -> evaluate -> table) on a tiny rig
set: the numbers are meaningless here, the plumbing is what is tested."""

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

BenchmarkModule = Callable[[str], ModuleType]


def test_the_views_ablation_and_its_table(
    benchmark_module: BenchmarkModule, tmp_path: Path
) -> None:
    bench = benchmark_module("triangulation")
    argv = ["--out", str(tmp_path), "--rig", "3", "--n-train", "8", "--n-test", "12"]
    argv += ["--sequences-train", "1", "--sequences-test", "1", "--size", "32", "--k", "4"]
    argv += ["--steps", "1", "--ablations", "views", "--baselines", "--probe", "linear"]
    assert bench.main([*argv, "--set", "width=8", "perceptual=none", "batch-size=2"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in rows] == ["triangulation", "triangulation-views2"]
    assert rows[1]["flags"] == [
        "--k",
        "4",
        "--views",
        "2",
        "--width=8",
        "--perceptual=none",
        "--batch-size=2",
    ]
    assert all(len(r["linear 100%"]) == 3 and 0 <= r["mask_iou"] <= 1 for r in rows)
    md = (tmp_path / "results.md").read_text()
    assert "triangulation-views2" in md
    # The references of the held-out data, once: the mean pose, the ground truth's 2D joints.
    assert md.count("mean pose") == 1 and md.count("triangulated |") == 1
    assert all(len(r["ref triangulated_2d linear 100%"]) == 3 for r in rows)
    # A second invocation into the same folder adds its rows to the table; KeypointNet (view
    # pairs of the same moments) is a row beside them.
    argv2 = [a for a in argv if a not in ("views",)]
    argv2[argv2.index("--ablations") + 1 : argv2.index("--ablations") + 1] = ["target_mask"]
    argv2[argv2.index("--baselines") + 1 : argv2.index("--baselines") + 1] = ["keypointnet"]
    assert bench.main([*argv2, "--set", "width=8", "perceptual=none", "batch-size=2"]) == 0
    names = [r["name"] for r in json.loads((tmp_path / "results.json").read_text())]
    assert names == [
        "triangulation-views2",
        "triangulation",
        "triangulation-target-ground_truth",
        "triangulation-target-background",
        "keypointnet",
    ]
