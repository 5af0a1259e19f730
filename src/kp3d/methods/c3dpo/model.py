"""C3DPO: Canonical 3D Pose Networks for Non-Rigid Structure From Motion (Novotny et al.,
ICCV 2019).

One network lifts an instance's 2D keypoints to a camera rotation ``R`` and shape coefficients
``alpha`` of a learned linear basis (:class:`kp3d.nn.lifting.LiftingNet`), trained only by the
orthographic reprojection error of the visible keypoints. On its own that is ambiguous: the
network could explain a view by any rotation of any shape. C3DPO removes the ambiguity with a
second, *canonicalisation* network ``Psi`` that receives the predicted canonical shape rotated by
a random ``R~`` and must give back the coefficients of the unrotated shape. This succeeds only
if no two shapes in the model's shape space are rotations of one another (the space is
*transversal*), which is what makes the canonical frame, and with it the depth, unique.

Losses (``delta`` = :attr:`C3DPOConfig.huber_delta`, pseudo-Huber as in
:mod:`kp3d.losses.lifting`)::

    L = rho(|| Pi(R X) + t* - y ||)_visible + w_can * rho(|| X(Psi(R~ X)) - X ||)

All quantities are in the per-sample normalised units of
:func:`kp3d.nn.lifting.normalise_keypoints`. Beyond the paper, kp3d offers a weak-perspective
camera (scale-free shapes) and a Gaussian shape prior; both are off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.losses.lifting import canonicalisation_loss, reprojection_loss, shape_prior_loss
from kp3d.methods.base import Diagnosis, LossOutput, MethodModel
from kp3d.methods.prediction import Prediction
from kp3d.metrics.flatness import flatness_check
from kp3d.nn.lifting import (
    CameraKind,
    LiftingConfig,
    LiftingNet,
    LiftingOutput,
    Normalised,
    RotationKind,
    Trunk,
    lifting_artifacts,
    lifting_predictions,
    normalise_keypoints,
    visibility,
)


@dataclass(frozen=True)
class C3DPOConfig(LiftingConfig):
    """Settings of :class:`C3DPO`: those of every lifter (:class:`~kp3d.nn.lifting.LiftingConfig`,
    with C3DPO's rotation and camera) and the canonicalisation's. The shape prior is kp3d's, not
    the paper's; use it with the weak_perspective camera, whose shapes are scale-free."""

    rotation: RotationKind = "axis_angle"
    """Rotation head: axis_angle (the so(3) exponential, as C3DPO) or 6d."""
    camera: CameraKind = "orthographic"
    """orthographic (shapes carry their apparent size) or weak_perspective (scale-free shapes,
    least-squares scale per sample)."""
    canonicalisation_weight: float = 1.0
    """Weight of the canonicalisation (transversality) loss."""
    canonicalisation_rotations: int = 1
    """Random rotations per sample and step for the canonicalisation loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.canonicalisation_rotations < 1:
            raise ConfigError(
                f"canonicalisation_rotations must be >= 1, got {self.canonicalisation_rotations}"
            )
        if self.canonicalisation_weight < 0:
            raise ConfigError(
                f"canonicalisation_weight must be >= 0, got {self.canonicalisation_weight}"
            )


class C3DPO(MethodModel):
    """The C3DPO lifter: :class:`LiftingNet` plus the canonicalisation network ``Psi``."""

    diagnose_samples = 1024

    def __init__(self, config: C3DPOConfig) -> None:
        super().__init__()
        if config.n_keypoints < 1:
            raise ConfigError(
                "c3dpo: n_keypoints is not set (the number of keypoints K of the data)"
            )
        self.config = config
        self.net = LiftingNet(config.n_keypoints, coefficients="linear", **config.network_options())
        self.canonicaliser = nn.Sequential(
            Trunk(
                3 * config.n_keypoints,
                width=config.width,
                n_layers=config.n_layers,
                norm=config.norm,
            ),
            nn.Linear(config.width, config.n_basis),
        )

    def lift(self, batch: Sample) -> tuple[Normalised, LiftingOutput]:
        """Normalise ``batch.kp2d`` (B, K, 2) and run the lifting network."""
        norm = normalise_keypoints(batch.kp2d, batch.vis)
        return norm, self.net(norm.kp2d, visibility(batch.kp2d, batch.vis))

    def canonicalisation_loss(
        self, shape: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Transversality: ``Psi`` must map ``R~ X`` back to ``X`` for random rotations ``R~``.

        Args:
            shape: (B, K, 3) canonical shapes ``X``; gradients flow into them too, so the shape
                space itself is pushed towards being canonicalisable.
        """
        return canonicalisation_loss(
            shape,
            self.canonicaliser,
            self.net.shape_from_alpha,
            rotations=self.config.canonicalisation_rotations,
            delta=self.config.huber_delta,
            generator=generator,
        )

    def loss_weights(self) -> dict[str, float]:
        c = self.config
        return {
            "reprojection": 1.0,
            "canonicalisation": c.canonicalisation_weight,
            "shape_prior": c.shape_prior_weight,
        }

    def losses(self, batch: Sample, step: int) -> LossOutput:
        norm, out = self.lift(batch)
        w = visibility(batch.kp2d, batch.vis)
        losses = {
            "reprojection": reprojection_loss(
                out.shape_cam, norm.kp2d, w, delta=self.config.huber_delta
            ),
            "canonicalisation": self.canonicalisation_loss(out.basis_shape),
        }
        if self.config.shape_prior_weight > 0:
            losses["shape_prior"] = shape_prior_loss(out.basis_shape)
        return LossOutput(losses, {})

    def artifacts(self) -> dict[str, Tensor]:
        """:func:`~kp3d.nn.lifting.lifting_artifacts` of the lifting network."""
        return lifting_artifacts(self.net)

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """See :func:`kp3d.nn.lifting.lifting_predictions`: ``kp3d`` keeps the input x, y;
        ``R`` is the field, ``alpha``, ``shape``, ``scale``, ``centre`` are ``extras``."""
        norm, out = self.lift(batch)
        pred = lifting_predictions(out, norm, batch.vis)
        return Prediction(kp3d=pred.pop("kp3d"), R=pred.pop("R"), extras=pred)

    @torch.no_grad()
    def diagnose(self, batch: Sample) -> Diagnosis:
        """Whether the predictions of ``batch`` (training keypoints) are near flat
        (:func:`~kp3d.metrics.flatness.flatness_check`)."""
        return Diagnosis(*flatness_check(self.predict(batch).kp3d, batch.vis, method="c3dpo"))


def build(config: C3DPOConfig) -> C3DPO:
    return C3DPO(config)
