"""The lifting-sets benchmark's code path (set -> npz -> train -> score -> table) on the
procedural ``creature`` set with a few steps: the numbers are meaningless here, the plumbing is
what is tested. The sets that need the shared data are checked only where it is present."""

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BenchmarkModule = Callable[[str], ModuleType]
SHARED = ROOT.parent / "shared"


def test_sfm_landmarks_are_the_50_fixed_ibug_landmarks(benchmark_module: BenchmarkModule) -> None:
    lifting = benchmark_module("_lifting")
    idx = lifting.SFM_LANDMARKS
    contour = set(range(8)) | set(range(9, 17))  # iBUG 1-8 and 10-17, 0-based
    assert len(idx) == 50 == len(set(idx))
    assert not contour & set(idx) and 60 not in idx and 64 not in idx
    assert set(idx) | contour | {60, 64} == set(range(68))


def test_skeleton_set_npz_and_scaling(tmp_path: Path, benchmark_module: BenchmarkModule) -> None:
    lifting = benchmark_module("_lifting")
    data = lifting.load_set("creature", SHARED, seed=0)
    assert data.train.shape[0] == lifting.N_TRAIN and data.test.shape[0] == lifting.N_TEST
    assert data.train.dtype == torch.float64 and data.train.shape[1:] == data.test.shape[1:]
    assert data.train[..., 2].std() > 0  # it has depth
    train, test = lifting.write_npz(data, tmp_path / "set")
    with np.load(train) as f:
        assert set(f.files) == {"kp2d"}  # training never sees 3D
        np.testing.assert_allclose(f["kp2d"], data.train[..., :2].numpy(), rtol=1e-6)
    with np.load(test) as f:
        assert set(f.files) == {"kp2d", "kp3d"}
        np.testing.assert_allclose(f["kp3d"], data.test.numpy(), rtol=1e-6)
    big = lifting.scaled(data, 2.5)
    torch.testing.assert_close(big.test, 2.5 * data.test)
    assert big.name == "creaturex2.5"
    with pytest.raises(SystemExit, match="unknown lifting set"):
        lifting.load_set("nope", SHARED)


@pytest.mark.skipif(not (SHARED / "assets" / "sfm").is_dir(), reason="no shared SFM model")
def test_sfm_faces_are_orthographic_views_in_mm(benchmark_module: BenchmarkModule) -> None:
    lifting = benchmark_module("_lifting")
    faces = lifting.sfm_faces(SHARED, 4, seed=0)
    assert faces.shape == (4, 50, 3) and faces.dtype == torch.float64
    # A rigid view of a face: pairwise distances are those of a face (tens of millimetres).
    span = torch.cdist(faces, faces).amax((-2, -1))
    assert bool(((span > 50) & (span < 250)).all())
    # The same seed gives the same faces.
    torch.testing.assert_close(lifting.sfm_faces(SHARED, 4, seed=0), faces)


def test_main_trains_scores_and_writes_the_table(
    tmp_path: Path, benchmark_module: BenchmarkModule
) -> None:
    bench = benchmark_module("lifting_sets")
    out = tmp_path / "out"
    argv = ["--sets", "creature", "--methods", "lifter-fit", "--steps", "2", "--seeds", "0"]
    argv += ["--set", "lifter-fit.refine_steps=0", "--out", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows[0]["name"] == "lifter-fit" and len(rows) == 3  # + two baselines
    assert rows[0]["set"] == "creature" and rows[0]["steps"] == 2
    assert all(np.isfinite(r["metrics"]["mpjpe"]["norm"]) for r in rows)
    assert "| creature | lifter-fit | 0 | 2 |" in (out / "results.md").read_text()
    result = json.loads((out / "creature" / "lifter-fit-0" / "result.json").read_text())
    assert "near_flat" in result["diagnostics"]  # the end-of-training check ran
    with pytest.raises(SystemExit, match="not empty"):
        bench.main(argv)
