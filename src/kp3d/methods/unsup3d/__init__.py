"""``unsup3d``: symmetric canonical depth, albedo, light and viewpoint from single images
(Wu, Rupprecht & Vedaldi, CVPR 2020), with a pure-PyTorch renderer that trains on the CPU."""

from kp3d.data.inputs import IMAGES
from kp3d.methods.base import MethodSpec
from kp3d.methods.unsup3d.config import Unsup3DConfig
from kp3d.methods.unsup3d.model import Unsup3D, build

TRAIN_DEFAULTS = {"lr": 1e-4, "batch_size": 64}
"""Unsup3d's Adam learning rate and batch size."""

SPEC = MethodSpec(
    config_cls=Unsup3DConfig,
    build=build,
    inputs=IMAGES,
    protocols=("surface_depth",),
    description="Unsup3d: symmetric canonical depth, albedo, light and viewpoint by reconstruction",
    train_defaults=TRAIN_DEFAULTS,
)

__all__ = ["SPEC", "Unsup3D", "Unsup3DConfig"]
