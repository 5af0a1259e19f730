"""``kp3d evaluate`` on a lifting run: C3DPO's protocol, both baselines, basis coherence."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kp3d.cli import main
from kp3d.geometry import random_rotation


def _views(path: Path, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    shape = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    kp3d = 20 * shape @ random_rotation(n, generator=g).transpose(-1, -2) + 32
    np.savez(path, kp2d=kp3d[..., :2].numpy(), kp3d=kp3d.numpy())


@pytest.mark.parametrize("method", ["lifter", "c3dpo"])
def test_evaluate_reports_the_protocol_baselines_and_coherence(tmp_path: Path, method: str) -> None:
    _views(tmp_path / "train.npz", 64, 1)
    _views(tmp_path / "test.npz", 16, 2)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--method",
                method,
                "--data",
                str(tmp_path / "train.npz"),
                "--out",
                str(run),
                "--steps",
                "2",
                "--batch-size",
                "16",
            ]
        )
        == 0
    )
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(run),
                "--data",
                str(tmp_path / "test.npz"),
                "--fit",
                str(tmp_path / "train.npz"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())["results"]["lifting"]
    for row in ("method", "flat", "mean_shape"):
        for metric in ("mpjpe", "stress", "p_mpjpe"):
            assert np.isfinite(results[row][metric]["norm"])
    # A rigid training set: the mean-shape baseline is exact, flat is not.
    assert results["mean_shape"]["mpjpe"]["norm"] < 1e-3 < results["flat"]["mpjpe"]["norm"]
    coherence = json.loads(out.read_text())["results"]["artifacts"]["mutual_coherence"]
    assert 0.0 <= coherence["value"] <= 1.0
