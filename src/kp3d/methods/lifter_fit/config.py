"""Settings of ``lifter-fit`` (:class:`LifterFitConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from kp3d.errors import ConfigError
from kp3d.nn.lifting import CameraKind, NormKind, RotationKind

EnsembleBatches = Literal["shared", "split"]


@dataclass(frozen=True)
class LifterFitConfig:
    """Settings of :class:`~kp3d.methods.lifter_fit.model.LifterFit`."""

    n_keypoints: int = 0
    """Total number of keypoints K (0 = from the data)."""
    n_categories: int | None = None
    """Number of categories sharing the networks (labels 0 .. n_categories - 1); none = from
    the data (1 + its largest label, 1 without labels; a model built without data takes 1)."""
    n_basis: int = 10
    """Size of the shape basis S."""
    width: int = 256
    """Width of the residual MLP trunk."""
    n_layers: int = 3
    """Residual blocks in the trunk."""
    norm: NormKind = "batch"
    """Normalisation inside the trunk: batch, layer or none."""
    rotation: RotationKind = "6d"
    """Rotation head: 6d (continuous) or axis_angle (so(3) exponential)."""
    camera: CameraKind = "weak_perspective"
    """weak_perspective (scale-free shapes, least-squares scale per sample) or orthographic
    (shapes carry their apparent size)."""
    context_dim: int = 0
    """Length of an optional context vector appended to the input (0 = none)."""
    huber_delta: float = 0.1
    """Pseudo-Huber scale of the losses, in normalised units (the input's RMS radius is 1)."""
    shape_prior_weight: float = 0.0
    """Weight of the Gaussian shape prior (squared distance of each shape from the batch mean
    shape, up to scale)."""
    motion_free_basis: bool = True
    """Keep each basis shape orthogonal to the scale and infinitesimal rotations of the bias
    shape b_S (:class:`kp3d.nn.lifting.ShapeBasis`), so deformations cannot imitate the camera
    (the gauge ambiguity of non-rigid structure from motion)."""
    coefficient_ridge: float = 1.0
    """Ridge weight (> 0) on the coefficients of the unit-RMS basis shapes when the shape
    ``c b_S + sum_i beta_i S_i`` is fitted to each view in closed form for the predicted rotation
    (:func:`kp3d.methods.lifter_fit.fit.fitted_output`): a Gaussian prior on the deformation,
    weighed against the sum of squared residuals over the visible coordinates in normalised
    units (so its effect grows as K shrinks)."""
    ensemble: int = 4
    """Independently initialised networks trained side by side, run as one batched network;
    prediction averages their depths (see ``ensemble_tolerance``), each member's sign aligned
    per sample with the first averaged member's (the depth-flip ambiguity of orthographic
    views)."""
    ensemble_batches: EnsembleBatches = "split"
    """What each member trains on per step: ``shared``, the whole batch; ``split``, its own
    1/ensemble of the batch (set the batch size to ensemble x the batch per member), so the
    members' gradient noise is independent."""
    ensemble_tolerance: float = 0.25
    """Prediction averages the members whose depth extent (:attr:`LifterFit.depth_extent`) is
    at least (1 - this) times the largest member's, leaving out flattened ones; all before
    training. Must lie in [0, 1)."""
    refine_steps: int = 50
    """Test-time refinement in :meth:`LifterFit.predict`: Adam steps per view on the rotation,
    from the prediction and from its depth-reversed twin, on the 2D fit
    (:meth:`kp3d.methods.lifter_fit.fit.FitNet.refine_rotations`); 0 = off. Uses only the 2D
    input."""

    def __post_init__(self) -> None:
        if self.n_keypoints < 0:
            raise ConfigError(
                f"n_keypoints must be >= 0 (0 = from the data), got {self.n_keypoints}"
            )
        if self.n_categories is not None and self.n_categories < 1:
            raise ConfigError(f"n_categories must be >= 1 or none, got {self.n_categories}")
        for name in ("n_basis", "width", "ensemble"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_layers", "context_dim", "refine_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.norm not in get_args(NormKind):
            raise ConfigError(f"norm must be one of {get_args(NormKind)}, got {self.norm!r}")
        if self.rotation not in get_args(RotationKind):
            raise ConfigError(
                f"rotation must be one of {get_args(RotationKind)}, got {self.rotation!r}"
            )
        if self.camera not in get_args(CameraKind):
            raise ConfigError(f"camera must be one of {get_args(CameraKind)}, got {self.camera!r}")
        if self.huber_delta <= 0:
            raise ConfigError(f"huber_delta must be positive, got {self.huber_delta}")
        if self.shape_prior_weight < 0:
            raise ConfigError(f"shape_prior_weight must be >= 0, got {self.shape_prior_weight}")
        if not self.coefficient_ridge > 0:
            raise ConfigError(f"coefficient_ridge must be > 0, got {self.coefficient_ridge}")
        if not 0 <= self.ensemble_tolerance < 1:
            raise ConfigError(
                f"ensemble_tolerance must lie in [0, 1), got {self.ensemble_tolerance}"
            )
        if self.ensemble_batches not in get_args(EnsembleBatches):
            raise ConfigError(
                f"ensemble_batches must be one of {get_args(EnsembleBatches)}, "
                f"got {self.ensemble_batches!r}"
            )


__all__ = ["EnsembleBatches", "LifterFitConfig"]
