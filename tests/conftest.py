"""Shared test set-up: one intra-op thread per test worker (pytest-xdist runs two on 2 cores)."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("KP3D_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``train`` (16 creature images, 32 px, seed 0), ``test`` (8, seed 1) and
    ``run``, autolink3d with K = 4 trained 2 steps on ``train``: for the tests that need a run
    of an image method (CLI round trip, export, video, API). Tests write only new names in it."""
    from kp3d.cli import main

    root = tmp_path_factory.mktemp("tiny_run")
    for name, n, seed in (("train", 16, 0), ("test", 8, 1)):
        argv = ["synth", "creature", "--n", str(n), "--size", "32", "--seed", str(seed)]
        assert main([*argv, "--out", str(root / name)]) == 0
    train = ["train", "--method", "autolink3d", "--data", str(root / "train")]
    options = ["--k", "4", "--size", "32", "--heatmap-size", "8", "--steps", "2"]
    options += ["--batch-size", "4", "--log-every", "1", "--perceptual", "none", "--w-pixel", "1"]
    assert main([*train, "--out", str(root / "run"), *options]) == 0
    return root
