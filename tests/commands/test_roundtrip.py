"""The whole CLI on a tiny synthetic set: synth -> train -> infer -> evaluate -> report."""

import json
from pathlib import Path

import numpy as np
import pytest

from kp3d.cli import main


@pytest.fixture
def tiny(tiny_run: Path) -> Path:
    return tiny_run


def _infer(tiny: Path, split: str, out: Path, *flags: str) -> list[str]:
    """The arguments of ``kp3d infer`` with the tiny run on the images of ``split``."""
    images = tiny / split / "images"
    return ["infer", "--run", str(tiny / "run"), "--input", str(images), "--out", str(out), *flags]


def _evaluate(tiny: Path, data: Path, *flags: str) -> list[str]:
    """The arguments of ``kp3d evaluate`` with the tiny run on ``data``."""
    return ["evaluate", "--run", str(tiny / "run"), "--data", str(data), *flags]


def test_infer_writes_keypoints_and_overlays(tiny: Path) -> None:
    out = tiny / "kp.npz"
    assert main(_infer(tiny, "test", out, "--overlay")) == 0
    with np.load(out) as f:
        assert f["kp2d"].shape == (8, 4, 2)
        assert f["kp3d"].shape == (8, 4, 3)
        assert np.isfinite(f["kp2d"]).all()
        assert f["kp3d_image"].shape == (8, 4, 3) and "heatmaps" not in f.files
    assert len(list((tiny / "kp_overlay").glob("*.png"))) == 8
    out = tiny / "kp_heatmaps.npz"
    assert main(_infer(tiny, "test", out, "--heatmaps")) == 0
    with np.load(out) as f:
        assert f["heatmaps"].shape == (8, 4, 8, 8)


def test_evaluate_scores_2d_and_3d_against_the_flat_baseline(tiny: Path) -> None:
    out = tiny / "eval.json"
    assert (
        main(_evaluate(tiny, tiny / "test", "--fit", str(tiny / "train"), "--json", str(out))) == 0
    )
    doc = json.loads(out.read_text())
    assert doc["skipped"] == {"pose_probe": "the test set is single-view"}
    results = doc["results"]["keypoint_discovery"]
    assert results["counts"] == {"fit": 16, "test": 8, "keypoints": 4, "landmarks": 16}
    for key in ("nme", "nme3d", "nme3d_flat_baseline"):
        assert np.isfinite(results[key]["value"]) and results[key]["value"] > 0


def test_evaluate_without_fit_splits_the_data_in_halves(tiny: Path) -> None:
    out = tiny / "eval_halves.json"
    assert main(_evaluate(tiny, tiny / "train", "--json", str(out))) == 0
    doc = json.loads(out.read_text())
    assert doc["results"]["keypoint_discovery"]["counts"]["fit"] == 8 and "first 8" in doc["fit"]


def test_report_is_one_self_contained_page(tiny: Path) -> None:
    out = tiny / "report.html"
    assert main(["report", "--run", str(tiny / "run"), "--out", str(out), "--samples", "4"]) == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    assert 'kp3dViewer(document.getElementById("canonical")' in page
    assert page.count("data:image/png;base64,") == 4
    assert "<svg" in page  # skeleton and training curves
    assert " · 2 steps in " in page  # the header from result.json
    # Nothing is fetched when the page opens.
    assert "src='http" not in page and 'src="http' not in page


def test_evaluate_reports_missing_labels_as_a_user_error(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tiny / "unlabelled"
    folder.mkdir()
    for p in sorted((tiny / "test" / "images").glob("*.png"))[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    assert main(_evaluate(tiny, folder, "--fit", str(tiny / "train"))) == 2
    assert "landmarks" in capsys.readouterr().err


def test_a_lifter_trains_on_the_keypoints_an_image_run_discovered(tiny: Path) -> None:
    lift = tiny / "lift"
    assert (
        main(
            [
                "train",
                "--method",
                "lifter-fit",
                "--data",
                str(tiny / "run"),
                "--out",
                str(lift),
                "--steps",
                "2",
                "--batch-size",
                "8",
                "--log-every",
                "1",
            ]
        )
        == 0
    )
    with np.load(tiny / "run" / "discovered_keypoints.npz") as f:
        assert f["kp2d"].shape == (16, 4, 2) and f["vis"].all()
        kp2d = f["kp2d"]
    # The same keypoints `kp3d infer` gives on the training images.
    out = tiny / "train_kp.npz"
    assert main(_infer(tiny, "train", out)) == 0
    with np.load(out) as f:
        np.testing.assert_allclose(kp2d, f["kp2d"], atol=1e-3)
    config = json.loads((lift / "config.json").read_text())
    assert Path(config["data"]["path"]) == tiny / "run"  # what was asked, so resume redoes it
    # A keypoint run has no images to discover keypoints on.
    assert (
        main(
            [
                "train",
                "--method",
                "lifter",
                "--data",
                str(lift),
                "--out",
                str(tiny / "lift2"),
                "--steps",
                "1",
            ]
        )
        == 2
    )


def test_the_report_header_says_when_a_run_did_not_finish(tiny: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny / "run", run)
    (run / "result.json").unlink()
    out = tmp_path / "report.html"
    assert main(["report", "--run", str(run), "--out", str(out), "--samples", "1"]) == 0
    assert " · step 2 (not finished)" in out.read_text()
