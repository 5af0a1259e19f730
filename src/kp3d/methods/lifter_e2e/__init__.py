"""``lifter-e2e``: Can et al.'s end-to-end multi-category model (a DETR-style keypoint detector
and ``lifter``'s network on its outputs); see :mod:`.model`."""

from kp3d.data.inputs import IMAGES
from kp3d.methods.base import MethodSpec
from kp3d.methods.configure import keypoints_and_categories_from_data
from kp3d.methods.lifter_e2e.config import LifterE2EConfig
from kp3d.methods.lifter_e2e.model import LifterE2E, build

TRAIN_DEFAULTS = {"lr": 5e-4, "batch_size": 32, "bf16": False}
"""AdamW at 5e-4 (the backbone at a tenth of it, ``backbone_lr_scale``); float32, as the
lifting methods need (their reprojection residuals are finer than bf16)."""

SPEC = MethodSpec(
    config_cls=LifterE2EConfig,
    build=build,
    configure=keypoints_and_categories_from_data,
    inputs=IMAGES,
    protocols=("lifting",),
    description="Can et al. end to end: a keypoint transformer finds each category's 2D "
    "keypoints, visibility and category in an image, the multi-category lifter lifts them "
    "(2D labels only)",
    train_defaults=TRAIN_DEFAULTS,
)

__all__ = ["SPEC", "LifterE2E", "LifterE2EConfig"]
