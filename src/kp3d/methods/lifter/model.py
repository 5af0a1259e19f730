"""The multi-category lifter of Can, Liniger, Paudel & Van Gool, "End-to-End Learning of
Multi-category 3D Pose and Shape Estimation" (arXiv:2112.10196).

Like C3DPO, one network ``f`` lifts an instance's 2D keypoints ``Y`` to a rotation ``R(Y)`` and a
canonical shape ``X(Y) = b_S + ReLU(W_g f(Y) + b_g) · S`` (non-negative coefficients: shapes are
additive combinations of basis shapes), trained by the orthographic reprojection error of the
visible keypoints. The rotation/shape ambiguity is removed by *cyclic augmented
self-supervision* instead of a second network: the predicted shape is rotated by a random
``R~`` in SO(3), projected, and fed back through the same network, which must recover both the
rotation and the shape::

    Y~ = Pi(R~ X(Y))
    L = rho(|| Pi(R(Y) X(Y)) + t* - Y ||)_visible                 reprojection
      + w_cam   * rho(|| R(Y~) - R~ ||_F)                         camera
      + w_shape * rho(|| s~ X(Y~) - X(Y) ||)_support              shape

with ``s~`` the RMS radius of ``Y~`` (``Y~`` is normalised like every input, see
:mod:`kp3d.nn.lifting`) and ``rho`` the pseudo-Huber of :mod:`kp3d.losses.lifting`. The
camera is weak perspective by default (scale-free shapes, per-sample least-squares scale): with
the purely orthographic camera the cycle made AFLW2000-3D depths worse in kp3d's runs, as the
shape must then also encode the apparent size. An optional Gaussian shape prior
(``shape_prior_weight``) penalises deformation from the batch's mean shape.

kp3d's variant, which fits the shape to each view in closed form instead of predicting its
coefficients, is the method ``lifter-fit`` (:mod:`kp3d.methods.lifter_fit`).

Schedule: the paper needed two phases for stability. For the first ``cycle_start`` steps only the
reprojection loss trains the network (with ``cycle_start = None``, as in ``lifter-fit``: always;
the cycle is then off); after that, the BatchNorm statistics are frozen (the
layers run on their running averages) and the cycle losses are added. Frozen statistics keep the
synthetic views ``Y~``, whose distribution (any rotation, including views from behind) differs
from the data, from shifting the normalisation that real inputs see.

Ensemble (``ensemble`` > 1): several independently initialised networks train side by side,
each on its own loss, on the same batches or (``ensemble_batches = split``) each on its own part
of every batch. A prediction averages their depths after aligning each member's sign per sample
with the first averaged member's. Networks of one setting differ by seed, and their errors are
unlike enough that the average beats each of them. Now and then one ends in the degenerate
solution of non-rigid structure from motion: it poses the views more alike than they are and
explains the rest by deformation, with a wrong depth (too little or too much). So each member's
rotation spread is tracked in training (:attr:`Lifter.rotation_spread`) and the members well
below the widest are left out of the average (``ensemble_tolerance``); neither their depth
extent nor their reprojection loss ranks the members (results: docs/results.md).

Multiple categories share one network: category ``z`` owns a subset ``zeta_z`` of the
``K = sum_z k_z`` keypoints, and an instance of ``z`` is given with the other categories'
keypoints invisible. The subsets are learned from the data as the union of the visible
keypoints seen per category (the buffer :attr:`Lifter.support`); the cycle renders and
compares exactly a category's own keypoints. An optional context vector (e.g. image features
from a keypoint detector trained end to end) is appended to the network's input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.methods.base import Diagnosis, LossOutput, MethodModel
from kp3d.methods.prediction import Prediction
from kp3d.metrics.flatness import flatness_check
from kp3d.nn.lifting import (
    CycleLosses,
    EnsembleLiftingConfig,
    LiftingEnsemble,
    LiftingNet,
    LiftingOutput,
    cycle_losses,
    freeze_batchnorm,
)


@dataclass(frozen=True)
class LifterConfig(EnsembleLiftingConfig):
    """Settings of :class:`Lifter`: those of every ensemble lifter
    (:class:`~kp3d.nn.lifting.EnsembleLiftingConfig`) and the cycle's. In the cycle phase the
    BatchNorm statistics (``norm`` batch) are frozen."""

    cycle_start: int | None = 1000
    """Steps of reprojection-only pre-training before the cycle losses start and the BatchNorm
    statistics freeze (the paper's schedule); None = no cycle (as in ``lifter-fit``; results:
    docs/results.md)."""
    camera_weight: float = 1.0
    """Weight of the cycle camera loss."""
    shape_weight: float = 1.0
    """Weight of the cycle shape loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycle_start is not None and self.cycle_start < 0:
            raise ConfigError(f"cycle_start must be >= 0 or None, got {self.cycle_start}")
        for name in ("camera_weight", "shape_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


class Lifter(LiftingEnsemble, MethodModel):
    """Non-negative-basis lifter with cyclic self-supervision (Can et al.); the members, the
    categories' keypoints and the ensemble's averaging are :class:`LiftingEnsemble`'s."""

    config: LifterConfig
    diagnose_samples = 1024

    def __init__(self, config: LifterConfig) -> None:
        def member() -> LiftingNet:
            return LiftingNet(config.n_keypoints, coefficients="relu", **config.network_options())

        super().__init__(config, member, name="lifter")

    def cycle_losses(
        self,
        out: LiftingOutput,
        category: Tensor,
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        net: LiftingNet | None = None,
    ) -> CycleLosses:
        """:func:`~kp3d.nn.lifting.cycle_losses` of the shapes in ``out`` that ``net`` (default
        ``self.net``) predicted for samples of ``category`` (B,)."""
        return cycle_losses(
            self.net if net is None else net,
            out,
            self.support[category],
            context,
            generator,
            delta=self.config.huber_delta,
        )

    def on_step(self, step: int) -> None:
        """From ``cycle_start`` on, the BatchNorm layers run on their running statistics (see the
        module doc: the cycle's synthetic views must not shift them)."""
        cfg = self.config
        if cfg.cycle_start is not None and step >= cfg.cycle_start:
            freeze_batchnorm(self)

    def loss_weights(self) -> dict[str, float]:
        cfg, E = self.config, len(self.members)
        return {
            **super().loss_weights(),
            "camera": E * cfg.camera_weight,
            "shape": E * cfg.shape_weight,
        }

    def losses(self, batch: Sample, step: int) -> LossOutput:
        return self.objective(batch.kp2d, batch.vis, batch.category, step)

    def objective(
        self,
        kp2d: Tensor,
        vis: Tensor | None,
        category: Tensor | None,
        step: int,
        context: Tensor | None = None,
    ) -> LossOutput:
        """The unweighted losses for keypoints (B, K, 2), visibility (B, K), categories (B,)
        and an optional context (B, C): :meth:`LiftingEnsemble.member_losses` and, from
        ``cycle_start`` on, the cycle's (means over the members)."""
        cfg = self.config
        losses, batch = self.member_losses(kp2d, vis, category, context)
        if cfg.cycle_start is not None and step >= cfg.cycle_start:
            ctx, E = batch.context, len(self.members)
            cycles = [
                self.cycle_losses(
                    LiftingOutput(*(t[e] for t in batch.out)),
                    batch.category[e],
                    None if ctx is None else ctx[e],
                    net=net,
                )
                for e, net in enumerate(self.members)
            ]
            losses["camera"] = torch.stack([c.camera for c in cycles]).sum() / E
            losses["shape"] = torch.stack([c.shape for c in cycles]).sum() / E
        return LossOutput(losses, {})

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """:meth:`LiftingEnsemble.ensemble_predictions`: ``kp3d`` keeps the input x, y (depths
        averaged over the kept members); ``R`` is the field, ``alpha``, ``shape``, ``scale``,
        ``centre`` are ``extras``."""
        pred = self.ensemble_predictions(batch.kp2d, batch.vis)
        return Prediction(kp3d=pred.pop("kp3d"), R=pred.pop("R"), extras=pred)

    @torch.no_grad()
    def diagnose(self, batch: Sample) -> Diagnosis:
        """Whether the predictions of ``batch`` (training keypoints) are near flat
        (:func:`~kp3d.metrics.flatness.flatness_check`), and
        :meth:`~kp3d.nn.lifting.LiftingEnsemble.ensemble_summary`."""
        values, warnings = flatness_check(self.predict(batch).kp3d, batch.vis, method=self.name)
        return Diagnosis({**values, **self.ensemble_summary()}, warnings)


def build(config: LifterConfig) -> Lifter:
    return Lifter(config)
