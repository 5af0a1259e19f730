"""A single-view image method on a multi-view rig set: trained on every view as an image,
evaluated with the pose probe on whole moments (its views kept together)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kp3d.cli import main


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rig")
    argv = ["synth", "creature", "--rig", "2", "--sequences", "2", "--n", "24", "--size", "32"]
    assert main([*argv, "--out", str(root / "rig")]) == 0
    return root / "rig"


def test_autolink3d_is_scored_by_the_pose_probe_on_a_rig_set(tiny_run: Path, rig: Path) -> None:
    out = rig.parent / "eval.json"
    run = tiny_run / "run"
    argv = ["evaluate", "--run", str(run), "--data", str(rig), "--json", str(out)]
    assert main([*argv, "--probe", "linear"]) == 0
    doc = json.loads(out.read_text())
    assert list(doc["results"]) == ["pose_probe", "artifacts"]
    assert doc["skipped"] == {"keypoint_discovery": "the test set is multi-view"}
    r = doc["results"]["pose_probe"]
    assert r["counts"]["views"] == 2 and r["counts"]["fit"] == 12 and r["counts"]["test"] == 12
    assert r["frame"] == "camera 0"  # a single-view method's keypoints, per view
    for table in ("probe", "flat_2d", "triangulated_2d"):
        row = r[table]["linear"]["100%"]
        assert all(np.isfinite(row[k]) for k in ("mpjpe", "n_mpjpe", "p_mpjpe"))
    assert r["consistency"] and r["relative_pose"]


def test_a_single_view_method_trains_on_every_view_of_a_rig_set(rig: Path, tmp_path: Path) -> None:
    argv = ["train", "--method", "autolink3d", "--data", str(rig), "--out", str(tmp_path / "r")]
    options = ["--k", "4", "--size", "32", "--steps", "1", "--batch-size", "4"]
    assert main([*argv, *options, "--perceptual", "none", "--w-pixel", "1"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["data"]["n_samples"] == 48  # 24 moments x 2 views


def test_the_probe_refuses_fit_and_test_moments_of_two_rigs(
    tiny_run: Path, rig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = rig.parent / "other-rig"
    argv = ["synth", "creature", "--rig", "2", "--n", "8", "--size", "32", "--seed", "5"]
    assert main([*argv, "--out", str(other)]) == 0
    run = tiny_run / "run"
    evaluate = ["evaluate", "--run", str(run), "--data", str(other), "--fit", str(rig)]
    assert main([*evaluate, "--probe", "linear", "--json", str(rig.parent / "x.json")]) == 2
    assert "from one rig" in capsys.readouterr().err
