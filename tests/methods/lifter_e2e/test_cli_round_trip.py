"""lifter-e2e through the CLI on a tiny two-category set: train -> infer -> evaluate -> report,
and the exported ONNX graph."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import kp3d
from kp3d.cli import main
from kp3d.data.adapters import synth

K = 16 + 18  # creature + quadruped


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two mixes of kp3d synth creature and quadruped sets (train and test), 32 px."""
    root = tmp_path_factory.mktemp("e2e")
    for split, seed, n in (("train", 0, 6), ("test", 1, 3)):
        for category in ("creature", "quadruped"):
            synth.write(root / split / category, category, n, size=32, seed=seed)
    return root


def test_train_infer_evaluate_report(mix: Path) -> None:
    run = mix / "run"
    flags = ["--size", "32", "--d-model", "16", "--ffn", "32", "--width", "32"]
    flags += ["--detector-steps", "1", "--cycle-start", "1", "--n-basis", "3"]
    assert (
        main(
            [
                "train",
                "--method",
                "lifter-e2e",
                "--data",
                str(mix / "train"),
                "--out",
                str(run),
                "--steps",
                "2",
                "--batch-size",
                "6",
                *flags,
            ]
        )
        == 0
    )
    settings = json.loads((run / "config.json").read_text())
    assert json.dumps(settings).count('"n_categories": 2') == 1
    assert json.dumps(settings).count(f'"n_keypoints": {K}') == 1

    out = mix / "pred.npz"
    images = mix / "test" / "creature" / "images"
    assert main(["infer", "--run", str(run), "--input", str(images), "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["kp2d"].shape == (3, K, 2) and f["kp3d"].shape == (3, K, 3)
        assert f["category"].shape == (3,)

    # The exported ONNX graph gives the same 3D keypoints.
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        first = str(min(images.iterdir()))
        eager = kp3d.load(run).predict(first)
        graph = kp3d.load(run, backend="onnx").predict(first)
        assert graph.kp3d is not None and eager.kp3d is not None
        torch.testing.assert_close(graph.kp3d, eager.kp3d, atol=1e-3, rtol=1e-3)

    report = mix / "eval.json"
    args = ["evaluate", "--run", str(run), "--data", str(mix / "test")]
    assert main([*args, "--fit", str(mix / "train"), "--json", str(report)]) == 0
    results = json.loads(report.read_text())["results"]
    lifting = results["lifting"]
    assert set(lifting["per_category"]) == {"0", "1"}
    assert [lifting["per_category"][z]["category"] for z in "01"] == ["creature", "quadruped"]
    for rows in (lifting, *lifting["per_category"].values()):
        for row in ("method", "flat", "mean_shape"):
            assert np.isfinite(rows[row]["mpjpe"]["norm"])
    assert lifting["per_category"]["0"]["counts"]["keypoints"] <= 16
    for name in ("mutual_coherence", "mutual_coherence_W_g"):
        assert 0.0 <= results["artifacts"][name]["value"] <= 1.0

    page = mix / "report.html"
    assert main(["report", "--run", str(run), "--out", str(page), "--samples", "2"]) == 0
    assert "coefficient_layer" in page.read_text()
