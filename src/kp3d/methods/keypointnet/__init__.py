"""``keypointnet``: 3D keypoints learned from calibrated view pairs through multi-view
consistency and relative pose (Suwajanakorn, Snavely, Tompson & Norouzi, NeurIPS 2018);
predicts from one image."""

from __future__ import annotations

import dataclasses
import math
import re

import torch
from torch.utils.data import Dataset

from kp3d.data.inputs import VIEW_PAIRS
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.methods.base import MethodSpec
from kp3d.methods.keypointnet.config import KeypointNetConfig
from kp3d.methods.keypointnet.model import (
    DILATIONS,
    DilatedFCN,
    KeypointNet,
    build,
    left_side_flag,
)
from kp3d.metrics import mirror_permutation

TRAIN_DEFAULTS = {"lr": 1e-3, "batch_size": 16}
"""AdamW at 1e-3 on batches of 16 pairs."""

SCAN = 16
"""Training samples read by :func:`configure` (spread over the set)."""


def left_right_pairs(names: list[str] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Indices of the keypoints named left (``left_knee``) and of their right counterparts
    (:func:`kp3d.metrics.mirror_permutation`), in index order; empty where no name has a
    side, or the names do not pair up."""
    if not names:
        return (), ()
    try:
        mirror = mirror_permutation(names)
    except ValueError:
        return (), ()
    if mirror is None:
        return (), ()
    left = [
        i
        for i, name in enumerate(names)
        if mirror[i] != i and "left" in re.split(r"[_\-\s]+", name.lower())
    ]
    return tuple(left), tuple(mirror[i] for i in left)


def configure(config: KeypointNetConfig, dataset: Dataset[Sample]) -> KeypointNetConfig:
    """Settings read from the training set (calibrated views, :data:`VIEW_PAIRS`):

    - ``fov_deg`` (0): the first sample's first view's horizontal field of view;
    - ``depth_offset`` (0): the median depth of the 3D keypoints of a few samples, else the
      median distance of their cameras to the world origin;
    - ``orientation`` (auto): on where the samples have 3D keypoints and the dataset names
      left and right keypoints (``keypoint_names``), which then define the flag
      (``left_keypoints``, ``right_keypoints``); off otherwise;
    - ``lambda_obj`` (none): 1 where the samples have object masks, else 0.

    Raises:
        ConfigError: ``orientation`` or ``lambda_obj > 0`` asked for on data without what it
            needs.
    """
    n = len(dataset)  # type: ignore[arg-type]
    m = min(SCAN, n)
    picks = sorted({round(i * (n - 1) / max(m - 1, 1)) for i in range(m)})
    samples = [dataset[i] for i in picks]
    first = samples[0]
    changes: dict[str, object] = {}
    if config.fov_deg == 0 and first.intrinsics is not None and first.image is not None:
        K = first.intrinsics.reshape(-1, 3, 3)[0]
        width = float(first.image.shape[-1])
        changes["fov_deg"] = math.degrees(2 * math.atan(width / 2 / float(K[0, 0])))
    if config.depth_offset == 0:
        if all(s.kp3d is not None for s in samples):
            z = torch.cat([s.kp3d[..., 2].reshape(-1) for s in samples])  # type: ignore[index]
            changes["depth_offset"] = float(z[z.isfinite()].median())
        elif all(s.extrinsics is not None for s in samples):
            t = torch.cat([s.extrinsics[..., 3].reshape(-1, 3) for s in samples])  # type: ignore[index]
            changes["depth_offset"] = float(t.norm(dim=-1).median())
    has_kp3d = first.kp3d is not None
    left, right = left_right_pairs(getattr(dataset, "keypoint_names", None))
    possible = has_kp3d and bool(left)
    if config.orientation == "auto":
        changes["orientation"] = "on" if possible else "off"
    elif config.orientation == "on" and not possible and not config.left_keypoints:
        raise ConfigError(
            "orientation: the training data has no 3D keypoints named left_* and right_* to "
            "supervise the orientation network with; set it to auto or off"
        )
    if changes.get("orientation", config.orientation) == "on" and not config.left_keypoints:
        changes["left_keypoints"], changes["right_keypoints"] = left, right
    has_mask = first.mask is not None
    if config.lambda_obj is None:
        changes["lambda_obj"] = 1.0 if has_mask else 0.0
    elif config.lambda_obj > 0 and not has_mask:
        raise ConfigError(
            f"lambda_obj = {config.lambda_obj}, but the training data has no object masks; "
            "set it to 0 or leave it unset"
        )
    return dataclasses.replace(config, **changes)


SPEC = MethodSpec(
    config_cls=KeypointNetConfig,
    build=build,
    inputs=VIEW_PAIRS,
    protocols=("keypoint_discovery", "pose_probe"),
    description="KeypointNet: 3D keypoints from view pairs by consistency and relative pose",
    configure=configure,
    train_defaults=TRAIN_DEFAULTS,
)

__all__ = [
    "DILATIONS",
    "SPEC",
    "DilatedFCN",
    "KeypointNet",
    "KeypointNetConfig",
    "configure",
    "left_right_pairs",
    "left_side_flag",
]
