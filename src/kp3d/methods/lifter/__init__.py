"""``lifter``: the multi-category, cyclically self-supervised 2D→3D lifter of Can et al.; see
:mod:`.model`."""

from kp3d.data.inputs import KEYPOINTS
from kp3d.methods.base import MethodSpec
from kp3d.methods.lifter.model import Lifter, LifterConfig, build, configure

SPEC = MethodSpec(
    config_cls=LifterConfig,
    build=build,
    configure=configure,
    inputs=KEYPOINTS,
    protocols=("lifting",),
    description="Can et al.'s lifter: non-negative shape coefficients, cyclic "
    "self-supervision, several categories in one network (no 3D labels)",
    # bf16 (~3 significant digits) is too coarse for reprojection residuals of ~1% of a shape.
    train_defaults={"lr": 1e-3, "batch_size": 256, "bf16": False},
)

FIT_OVERRIDES = {
    "coefficient_ridge": 1.0,
    "motion_free_basis": True,
    "cycle_start": None,
    "refine_steps": 50,
    "ensemble": 4,
    "ensemble_batches": "split",
}
"""``lifter-fit``: kp3d's variant. The deformation is fitted to each view in closed form with a
ridge prior, over a basis kept free of camera motion, instead of the paper's non-negative
coefficient head (which learned an almost rigid face on AFLW2000-3D); no cycle; the rotation
refined per view at prediction; four networks, each on its own quarter of every batch (128
samples), averaged at prediction without those that ended flattened."""

SPEC_FIT = MethodSpec(
    config_cls=LifterConfig,
    build=build,
    configure=configure,
    inputs=KEYPOINTS,
    protocols=("lifting",),
    description="kp3d's lifter: deformation fitted per view with a ridge prior over a "
    "motion-free basis, rotation refined at prediction, four networks averaged (no 3D labels)",
    overrides=FIT_OVERRIDES,
    train_defaults={"lr": 1e-3, "batch_size": 512, "bf16": False},
)

__all__ = ["FIT_OVERRIDES", "SPEC", "SPEC_FIT", "Lifter", "LifterConfig"]
