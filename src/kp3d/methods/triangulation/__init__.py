"""``triangulation``: 3D keypoints from calibrated views by triangulation and foreground
reconstruction (Honari & Fua, "Unsupervised 3D Keypoint Estimation with Multi-View Geometry",
2022; no public code)."""

from __future__ import annotations

from torch.utils.data import Dataset

from kp3d.data.inputs import VIEWS
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError
from kp3d.methods.base import MethodSpec
from kp3d.methods.triangulation.config import TriangulationConfig
from kp3d.methods.triangulation.model import Triangulation, build

TRAIN_DEFAULTS = {"lr": 1e-4, "batch_size": 8}
"""The paper's Adam learning rate (the detector and the image decoder at a fifth of it, through
the config's lr scales); 8 moments a batch on the CPU."""


def configure(config: TriangulationConfig, dataset: Dataset[Sample]) -> TriangulationConfig:
    """Check that the data are calibrated multi-view moments with backgrounds, and that
    ``views`` fits their number of views.

    Raises:
        DataError: single images, no calibration or no backgrounds.
        ConfigError: ``views`` larger than the data's number of views.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("triangulation: the training set is empty")
    first = dataset[0]
    if first.image is None or first.image.ndim != 4 or first.image.shape[0] < 2:
        raise DataError(
            "triangulation: needs moments of V >= 2 calibrated views: a multi-view set "
            "(kp3d synth creature --rig V, or the real-rig format)"
        )
    if first.intrinsics is None or first.extrinsics is None:
        raise DataError("triangulation: the views have no calibration (intrinsics/extrinsics)")
    if first.background is None:
        raise DataError(
            "triangulation: the views have no background images (rig sets give them, or the "
            "per-pixel median of each camera: kp3d.data.background)"
        )
    views = int(first.image.shape[0])
    if config.views > views:
        raise ConfigError(f"views = {config.views}, but the data's moments have {views} views")
    return config


SPEC = MethodSpec(
    config_cls=TriangulationConfig,
    build=build,
    inputs=VIEWS,
    protocols=("multiview_3d", "pose_probe", "foreground_mask"),
    description="Honari & Fua: per-view boxes, masks and keypoints, triangulated 3D keypoints "
    "that explain every view's foreground (calibrated multi-view sets)",
    configure=configure,
    train_defaults=TRAIN_DEFAULTS,
)

__all__ = ["SPEC", "Triangulation", "TriangulationConfig"]
