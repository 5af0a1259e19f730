"""Shared test set-up: one intra-op thread per test worker (pytest-xdist runs two on 2 cores)."""

import os

import torch

torch.set_num_threads(int(os.environ.get("KP3D_TEST_THREADS", "1")))
