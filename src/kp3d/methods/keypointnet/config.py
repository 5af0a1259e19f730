"""Settings of ``keypointnet``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from kp3d.errors import ConfigError

Orientation = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class KeypointNetConfig:
    """KeypointNet (Suwajanakorn, Snavely, Tompson & Norouzi, NeurIPS 2018): N 3D keypoints
    per image, learned from calibrated view pairs through multi-view consistency and relative
    pose."""

    image_size: int = 64
    """Side of the square images the networks see (inputs are resized to it); at least 16."""
    n_keypoints: int = 10
    """Number of keypoints N (the paper: 10)."""
    width: int = 16
    """Channels of the 13 dilated 3x3 convolutions of the keypoint network (the paper: 64).
    The CPU default 16 gives 3 (+2 orientation) -> 16 x 12 -> 2N channels; the orientation
    network has half the width (8)."""
    fov_deg: float = 0.0
    """Horizontal field of view of the camera assumed for images without intrinsics (files
    given to ``kp3d infer``); 0 = the training data's (set at training)."""
    depth_offset: float = 0.0
    """Added to the depth maps d_i (scene units), so that the network predicts depth around
    the data's typical distance; 0 = the training data's median keypoint depth, else its
    median camera distance to the world origin (set at training)."""
    orientation: Orientation = "auto"
    """The orientation network: a half-width network predicts whether the object shows its
    left side to the camera (the mean of its left 3D keypoints minus that of the right ones
    points towards the camera), and the keypoint network sees that flag as two constant input
    channels (the true flag in training, the predicted one at inference). auto = on where the
    training data has 3D keypoints named left_* and right_*, else off (set at training)."""
    left_keypoints: tuple[int, ...] = ()
    """Indices of the data's left-side 3D keypoints that define the orientation flag (set at
    training from the keypoint names)."""
    right_keypoints: tuple[int, ...] = ()
    """Their right-side counterparts, in the same order."""
    separation: float = 0.1
    """Margin delta of the separation loss (scene units: metres for kp3d's synthetic sets)."""
    pose_noise: float = 1e-4
    """Standard deviation of the noise added to the keypoints before the Procrustes SVD of the
    relative-pose loss (scene units)."""
    lambda_con: float = 1.0
    """Weight of the multi-view consistency loss (normalised image coordinates squared)."""
    lambda_pose: float = 0.2
    """Weight of the relative-pose loss (radians)."""
    lambda_sep: float = 100.0
    """Weight of the separation loss; the default 1 / separation^2 makes fully collapsed
    keypoints cost about 1."""
    lambda_obj: float | None = None
    """Weight of the silhouette loss (needs object masks); none = 1 where the training data
    has masks, else 0."""
    lambda_var: float = 0.01
    """Weight of the variance loss (normalised image coordinates squared)."""
    lambda_orient: float = 1.0
    """Weight of the orientation network's binary cross-entropy."""

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size: must be >= 16, got {self.image_size}")
        if self.n_keypoints < 2:
            raise ConfigError(f"n_keypoints: must be >= 2, got {self.n_keypoints}")
        if self.width < 2 or self.width % 2:
            raise ConfigError(f"width: must be an even number >= 2, got {self.width}")
        if not 0 <= self.fov_deg < 180:
            raise ConfigError(f"fov_deg: must be in (0, 180), or 0 (from data), got {self.fov_deg}")
        if self.orientation not in get_args(Orientation):
            raise ConfigError(
                f"orientation: got {self.orientation!r}; valid choices: "
                f"{', '.join(get_args(Orientation))}"
            )
        if self.depth_offset < 0:
            raise ConfigError(f"depth_offset: must be >= 0, got {self.depth_offset}")
        if len(self.left_keypoints) != len(self.right_keypoints):
            raise ConfigError(
                f"left_keypoints, right_keypoints: need as many of each, got "
                f"{len(self.left_keypoints)} and {len(self.right_keypoints)}"
            )
        if not self.separation > 0:
            raise ConfigError(f"separation: must be > 0, got {self.separation}")
        if self.pose_noise < 0:
            raise ConfigError(f"pose_noise: must be >= 0, got {self.pose_noise}")
        for name in ("lambda_con", "lambda_pose", "lambda_sep", "lambda_var", "lambda_orient"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: loss weights must be >= 0, got {getattr(self, name)}")
        if self.lambda_obj is not None and self.lambda_obj < 0:
            raise ConfigError(f"lambda_obj: loss weights must be >= 0, got {self.lambda_obj}")
