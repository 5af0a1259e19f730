"""``lifter``: the multi-category, cyclically self-supervised 2D→3D lifter of Can et al.; see
:mod:`.model`."""

from kp3d.methods.base import MethodSpec
from kp3d.methods.lifter.model import Lifter, LifterConfig, build

SPEC = MethodSpec(
    config_cls=LifterConfig,
    build=build,
    data="keypoints",
    description="Can et al.'s lifter: non-negative shape basis, cyclic self-supervision, "
    "several categories in one network (no 3D labels)",
    # bf16 (~3 significant digits) is too coarse for reprojection residuals of ~1% of a shape.
    train_defaults={"lr": 1e-3, "batch_size": 256, "bf16": False},
)

__all__ = ["SPEC", "Lifter", "LifterConfig"]
