"""``autolink3d``: self-supervised 2D keypoints, skeleton and 3D shape/pose from single images.

``autolink`` is the same model with the 3D head switched off (the 2D AutoLink baseline).
"""

from kp3d.data.inputs import IMAGES
from kp3d.methods.autolink3d.config import AutoLink3DConfig, migrate
from kp3d.methods.autolink3d.model import AutoLink3D, ShapeModel, build
from kp3d.methods.base import MethodSpec

TRAIN_DEFAULTS = {"lr": 1e-3, "batch_size": 32}
"""AdamW at 1e-3 (ten times AutoLink's 1e-4): the narrow networks of the CPU configuration
converge far sooner with it in a fixed time budget."""

SPEC = MethodSpec(
    config_cls=AutoLink3DConfig,
    build=build,
    inputs=IMAGES,
    protocols=("keypoint_discovery", "pose_probe"),
    description="AutoLink keypoints and skeleton with a learned 3D shape model and per-image pose",
    migrate=migrate,
    train_defaults=TRAIN_DEFAULTS,
    without_3d="autolink",
)

SPEC_2D = MethodSpec(
    config_cls=AutoLink3DConfig,
    build=build,
    inputs=IMAGES,
    protocols=("keypoint_discovery", "pose_probe"),
    description="AutoLink: 2D keypoints and skeleton by masked reconstruction (autolink3d, no 3D)",
    migrate=migrate,
    overrides={"use_3d": False},
    train_defaults=TRAIN_DEFAULTS,
)

__all__ = ["SPEC", "SPEC_2D", "AutoLink3D", "AutoLink3DConfig", "ShapeModel"]
