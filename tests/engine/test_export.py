"""ONNX export of a trained run: onnxruntime gives PyTorch's prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kp3d.cli import main
from kp3d.data.schema import Sample
from kp3d.engine import load_run
from kp3d.errors import UserError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOLERANCE_PX = 1e-3
"""Largest accepted difference between onnxruntime's and PyTorch's keypoints, in pixels."""


@pytest.fixture
def run(tiny_run: Path) -> Path:
    return tiny_run / "run"


def test_onnx_graph_gives_pytorchs_prediction_at_any_batch_size(run: Path) -> None:
    from kp3d.engine.export import OnnxPredictor

    assert main(["export", "--run", str(run)]) == 0
    onnx = OnnxPredictor(run / "model.onnx")
    assert onnx.image_size == 32 and onnx.meta["method"] == "autolink3d"
    model = load_run(run).model
    gen = torch.Generator().manual_seed(0)
    for b in (1, 5):
        batch = Sample(image=torch.rand(b, 3, 32, 32, generator=gen))
        got = onnx.predict(batch)
        with torch.no_grad():
            want = model.predict(batch)
        want = dict(want.items())
        assert got.kp2d is not None and got.kp2d.shape == (b, 4, 2)
        assert (got.kp2d - want["kp2d"]).abs().max() < TOLERANCE_PX
        assert (got.R - want["R"]).abs().max() < 1e-4
        assert got.image_size == (32, 32)


def test_a_missing_or_foreign_file_is_a_user_error(run: Path, tmp_path: Path) -> None:
    from kp3d.engine.export import OnnxPredictor

    with pytest.raises(UserError, match="no such ONNX file"):
        OnnxPredictor(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    with pytest.raises(UserError, match="junk.onnx"):
        OnnxPredictor(junk)


def test_the_runs_graph_is_exported_again_when_older_than_its_weights(run: Path) -> None:
    import os

    from kp3d.engine.export import GRAPH_FILE, run_graph

    graph, weights = run / GRAPH_FILE, run / "model.safetensors"
    run_graph(run)  # exported if missing
    stale = weights.stat().st_mtime - 60
    os.utime(graph, (stale, stale))
    run_graph(run)
    assert graph.stat().st_mtime >= weights.stat().st_mtime
    fresh = graph.stat().st_mtime_ns
    run_graph(run)  # up to date: kept
    assert graph.stat().st_mtime_ns == fresh
