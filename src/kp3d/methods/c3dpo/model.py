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
from typing import get_args

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.losses.lifting import canonicalisation_loss, reprojection_loss, shape_prior_loss
from kp3d.methods.base import LossOutput, MethodModel
from kp3d.methods.configure import keypoints_from_data
from kp3d.methods.prediction import Prediction
from kp3d.nn.lifting import (
    CameraKind,
    LiftingNet,
    LiftingOutput,
    Normalised,
    NormKind,
    RotationKind,
    Trunk,
    lifting_predictions,
    normalise_keypoints,
    visibility,
)


@dataclass(frozen=True)
class C3DPOConfig:
    """Settings of :class:`C3DPO`."""

    n_keypoints: int = 0
    """Number of keypoints K of the data (0 = not yet known; set it, or let the engine set it
    from the dataset, before building)."""
    n_basis: int = 10
    """Size of the linear shape basis."""
    width: int = 256
    """Width of the residual MLP trunks."""
    n_layers: int = 3
    """Residual blocks per trunk."""
    norm: NormKind = "batch"
    """Normalisation inside the trunks: batch (as C3DPO), layer or none."""
    rotation: RotationKind = "axis_angle"
    """Rotation head: axis_angle (the so(3) exponential, as C3DPO) or 6d."""
    camera: CameraKind = "orthographic"
    """orthographic (shapes carry their apparent size) or weak_perspective (scale-free shapes,
    least-squares scale per sample)."""
    huber_delta: float = 0.1
    """Pseudo-Huber scale of every loss, in normalised units (the input's RMS radius is 1):
    residuals well below it are penalised quadratically, those well above linearly (results:
    docs/results.md)."""
    canonicalisation_weight: float = 1.0
    """Weight of the canonicalisation (transversality) loss."""
    canonicalisation_rotations: int = 1
    """Random rotations per sample and step for the canonicalisation loss."""
    shape_prior_weight: float = 0.0
    """Weight of the Gaussian shape prior (mean squared distance of each shape from the base
    shape b_S); not in the C3DPO paper. Use it with the weak_perspective camera, whose shapes are
    scale-free."""

    def __post_init__(self) -> None:
        if self.n_keypoints < 0:
            raise ConfigError(
                f"n_keypoints must be >= 0 (0 = from the data), got {self.n_keypoints}"
            )
        for name in ("n_basis", "width", "canonicalisation_rotations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_layers < 0:
            raise ConfigError(f"n_layers must be >= 0, got {self.n_layers}")
        if self.norm not in get_args(NormKind):
            raise ConfigError(f"norm must be one of {get_args(NormKind)}, got {self.norm!r}")
        if self.camera not in get_args(CameraKind):
            raise ConfigError(f"camera must be one of {get_args(CameraKind)}, got {self.camera!r}")
        if self.rotation not in get_args(RotationKind):
            raise ConfigError(
                f"rotation must be one of {get_args(RotationKind)}, got {self.rotation!r}"
            )
        if self.huber_delta <= 0:
            raise ConfigError(f"huber_delta must be positive, got {self.huber_delta}")
        for name in ("canonicalisation_weight", "shape_prior_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


class C3DPO(MethodModel):
    """The C3DPO lifter: :class:`LiftingNet` plus the canonicalisation network ``Psi``."""

    def __init__(self, config: C3DPOConfig) -> None:
        super().__init__()
        if config.n_keypoints < 1:
            raise ConfigError(
                "c3dpo: n_keypoints is not set (the number of keypoints K of the data)"
            )
        self.config = config
        self.net = LiftingNet(
            config.n_keypoints,
            n_basis=config.n_basis,
            width=config.width,
            n_layers=config.n_layers,
            norm=config.norm,
            rotation=config.rotation,
            coefficients="linear",
            camera=config.camera,
        )
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
        """``canonical_shape`` (K, 3), the shape of zero coefficients (the bias shape), and
        ``shape_basis`` (n, K, 3), the learned basis shapes (centred, unit RMS); normalised
        units."""
        return {
            "canonical_shape": self.net.base_shape().detach().float(),
            "shape_basis": self.net.shape_basis.basis.detach().float(),
        }

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """See :func:`kp3d.nn.lifting.lifting_predictions`: ``kp3d`` keeps the input x, y;
        ``R`` is the field, ``alpha``, ``shape``, ``scale``, ``centre`` are ``extras``."""
        norm, out = self.lift(batch)
        pred = lifting_predictions(out, norm, batch.vis)
        return Prediction(kp3d=pred.pop("kp3d"), R=pred.pop("R"), extras=pred)


def build(config: C3DPOConfig) -> C3DPO:
    return C3DPO(config)


def configure(config: C3DPOConfig, dataset: Dataset[Sample]) -> C3DPOConfig:
    """The number of keypoints from the data, where unset."""
    return keypoints_from_data(config, dataset)
