"""Settings of ``triangulation`` (Honari & Fua 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kp3d.errors import ConfigError

Perceptual = Literal["efficientnet_lite0", "none"]
PERCEPTUAL_CHOICES: tuple[str, ...] = ("efficientnet_lite0", "none")
TargetMask = Literal["predicted", "ground_truth", "background"]
TARGET_MASK_CHOICES: tuple[str, ...] = ("predicted", "ground_truth", "background")


def _power_of_two(name: str, value: int, least: int) -> None:
    if value < least or value & (value - 1):
        raise ConfigError(f"{name}: must be a power of two >= {least}, got {value}")


@dataclass(frozen=True)
class TriangulationConfig:
    """Honari & Fua, "Unsupervised 3D Keypoint Estimation with Multi-View Geometry" (2022):
    per-view boxes, foreground masks and 2D keypoints from calibrated views of one moment,
    triangulated into 3D keypoints that must explain every view's foreground mask."""

    image_size: int = 64
    """Side of the square views the networks see (inputs are resized to it); a power of two,
    at least 16."""
    patch_size: int = 32
    """Side of the patch the detector's box is resampled to (the encoder's input); a power of
    two, at least 16."""
    detector_size: int = 32
    """Side of the down-sampled view the detector S reads; a power of two, at least 8, at most
    image_size."""
    n_keypoints: int = 16
    """Number N of 3D keypoints (and of heatmaps per view)."""
    views: int = 0
    """Views of each moment used (the first ones, in the data's camera order): for training
    and for the triangulation at inference (2D keypoints, boxes and masks are predicted in
    every view); 0 = all (the paper's Table 6 ablation: 2, 3 or 4)."""
    width: int = 16
    """Base channels of the networks (encoder 16-64, decoders back down); a multiple of 4
    (GroupNorm of 4 channels a group)."""
    min_box: float = 0.15
    """Smallest half side of the detector's box, in normalised image units (1 = the whole
    image)."""
    max_box: float = 1.0
    """Largest half side of the detector's box, normalised image units."""
    heatmap_sigma: float = 0.02
    """Standard deviation of the Gaussian heatmaps of the reprojected keypoints that the mask
    decoder reads, in normalised patch units (the paper's 0.02: ``0.02 * patch_size / 2``
    pixels)."""
    target_mask: TargetMask = "predicted"
    """What the keypoints' mask M~ is fitted to (the paper's Table 7): ``predicted``, the
    decoder's mask M (detached); ``ground_truth``, the data's masks; ``background``, the
    pixels whose colour differs from the background by more than ``background_threshold``."""
    background_threshold: float = 0.1
    """Largest colour difference (max over channels) of a background pixel, for
    ``target_mask = background``."""
    perceptual: Perceptual = "efficientnet_lite0"
    """Feature network F of the perceptual term: kp3d's offline ImageNet EfficientNet-Lite0
    (blocks 0, 2, 4, 10) instead of the paper's ResNet18; or none."""
    beta_perceptual: float = 2.0
    """Weight beta of the perceptual term of the reconstruction (the paper's 2)."""
    gamma_mask: float = 0.5
    """Weight gamma of L_mask (the paper's 0.5)."""
    delta_coverage: float = 0.01
    """Weight delta of the coverage term (the paper's 0.01)."""
    eta_centering: float = 1.0
    """Weight eta of the centering term (the paper's 1)."""
    lr_scale_detector: float = 0.2
    """Learning rate of the detector S relative to the run's (the paper: 2e-5 against 1e-4)."""
    lr_scale_decoder: float = 0.2
    """Learning rate of the image decoder D relative to the run's (the paper: 2e-5 against
    1e-4)."""

    def __post_init__(self) -> None:
        _power_of_two("image_size", self.image_size, 16)
        _power_of_two("patch_size", self.patch_size, 16)
        _power_of_two("detector_size", self.detector_size, 8)
        if self.detector_size > self.image_size:
            raise ConfigError(
                f"detector_size: must be at most image_size {self.image_size}, "
                f"got {self.detector_size}"
            )
        if self.n_keypoints < 1:
            raise ConfigError(f"n_keypoints: must be >= 1, got {self.n_keypoints}")
        if self.views != 0 and self.views < 2:
            raise ConfigError(f"views: must be 0 (all) or >= 2, got {self.views}")
        if self.width < 4 or self.width % 4:
            raise ConfigError(f"width: must be a positive multiple of 4, got {self.width}")
        if not 0 < self.min_box < self.max_box:
            raise ConfigError(
                f"min_box, max_box: need 0 < min_box < max_box, got {self.min_box}, {self.max_box}"
            )
        if not self.heatmap_sigma > 0:
            raise ConfigError(f"heatmap_sigma: must be > 0, got {self.heatmap_sigma}")
        if self.target_mask not in TARGET_MASK_CHOICES:
            raise ConfigError(
                f"target_mask: got {self.target_mask!r}; "
                f"valid choices: {', '.join(TARGET_MASK_CHOICES)}"
            )
        if not 0 < self.background_threshold < 1:
            raise ConfigError(
                f"background_threshold: must be in (0, 1), got {self.background_threshold}"
            )
        if self.perceptual not in PERCEPTUAL_CHOICES:
            raise ConfigError(
                f"perceptual: got {self.perceptual!r}; "
                f"valid choices: {', '.join(PERCEPTUAL_CHOICES)}"
            )
        for name in ("beta_perceptual", "gamma_mask", "delta_coverage", "eta_centering"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: loss weights must be >= 0, got {getattr(self, name)}")
        for name in ("lr_scale_detector", "lr_scale_decoder"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
