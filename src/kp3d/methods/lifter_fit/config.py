"""Settings of ``lifter-fit`` (:class:`LifterFitConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from kp3d.errors import ConfigError
from kp3d.nn.lifting import EnsembleBatches, EnsembleLiftingConfig


@dataclass(frozen=True)
class LifterFitConfig(EnsembleLiftingConfig):
    """Settings of :class:`~kp3d.methods.lifter_fit.model.LifterFit`: those of every ensemble
    lifter (:class:`~kp3d.nn.lifting.EnsembleLiftingConfig`), with this method's defaults, and
    the shape fit's."""

    motion_free_basis: bool = True
    """Keep each basis shape orthogonal to the scale and infinitesimal rotations of the bias
    shape b_S (:class:`kp3d.nn.lifting.ShapeBasis`), so deformations cannot imitate the camera
    (the gauge ambiguity of non-rigid structure from motion)."""
    ensemble: int = 4
    """Independently initialised networks trained side by side, run as one batched network;
    prediction averages their depths (see ``ensemble_tolerance``), each member's sign aligned
    per sample with the first averaged member's (the depth-flip ambiguity of orthographic
    views)."""
    ensemble_batches: EnsembleBatches = "split"
    """What each member trains on per step: ``shared``, the whole batch; ``split``, its own
    1/ensemble of the batch (set the batch size to ensemble x the batch per member), so the
    members' gradient noise is independent."""
    coefficient_ridge: float = 1.0
    """Ridge weight (> 0) on the coefficients of the unit-RMS basis shapes when the shape
    ``c b_S + sum_i beta_i S_i`` is fitted to each view in closed form for the predicted rotation
    (:func:`kp3d.methods.lifter_fit.fit.fitted_output`): a Gaussian prior on the deformation,
    weighed against the sum of squared residuals over the visible coordinates in normalised
    units (so its effect grows as K shrinks)."""
    refine_steps: int = 50
    """Test-time refinement in :meth:`LifterFit.predict`: Adam steps per view on the rotation,
    from the prediction and from its depth-reversed twin, on the 2D fit
    (:meth:`kp3d.methods.lifter_fit.fit.FitNet.refine_rotations`); 0 = off. Uses only the 2D
    input."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refine_steps < 0:
            raise ConfigError(f"refine_steps must be >= 0, got {self.refine_steps}")
        if not self.coefficient_ridge > 0:
            raise ConfigError(f"coefficient_ridge must be > 0, got {self.coefficient_ridge}")


__all__ = ["LifterFitConfig"]
