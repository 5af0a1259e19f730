"""``lifter-fit``: kp3d's 2D->3D lifter, a variant of the ``lifter`` of Can et al.

Networks map an instance's 2D keypoints ``Y`` to a rotation ``R(Y)``; the canonical shape
``c b_S + sum_i beta_i S_i`` is not predicted but fitted to each view in closed form for the
predicted rotation, with a ridge (Gaussian) prior on ``beta``
(:func:`~kp3d.methods.lifter_fit.fit.fitted_output`), over a basis kept orthogonal to the scale
and infinitesimal rotations of ``b_S`` (``motion_free_basis``), so a deformation cannot imitate
a change of camera. Training minimises the orthographic (weak-perspective by default)
reprojection error of the visible keypoints; there is no cycle. At prediction the rotation is
refined per view on the 2D fit (``refine_steps``), from the prediction and its depth-reversed
twin.

Ensemble (``ensemble`` > 1): several independently initialised networks train side by side,
each on its own loss, on the same batches or (``ensemble_batches = split``) each on its own part
of every batch, run as one batched network (:func:`~kp3d.methods.lifter_fit.fit.stacked_lift`).
A prediction averages their depths after aligning each member's sign per sample with the first
averaged member's. Now and then one ends in the degenerate solution of non-rigid structure from
motion (the views posed more alike than they are, the rest explained by deformation, with a
wrong depth, too little or too much), so each member's rotation spread is tracked in training
(:attr:`LifterFit.rotation_spread`) and the members well below the widest are left out of the
average (``ensemble_tolerance``).

Categories share the networks as in ``lifter``: the keypoints each category owns are learned
from the data as the union of the visible keypoints seen per category (:attr:`LifterFit.support`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.methods.base import Diagnosis, LossOutput, MethodModel
from kp3d.methods.lifter_fit.config import LifterFitConfig
from kp3d.methods.lifter_fit.fit import FitNet, stacked_lift
from kp3d.methods.prediction import Prediction
from kp3d.metrics.flatness import flatness_check
from kp3d.nn.lifting import (
    LiftingEnsemble,
    LiftingNet,
    LiftingOutput,
    Normalised,
    normalise_keypoints,
)


class LifterFit(LiftingEnsemble, MethodModel):
    """``lifter-fit``: networks that predict the rotation, with the shape fitted to each view
    (see the module doc); the members, the categories' keypoints and the ensemble's averaging
    are :class:`~kp3d.nn.lifting.LiftingEnsemble`'s."""

    config: LifterFitConfig
    diagnose_samples = 1024

    def __init__(self, config: LifterFitConfig) -> None:
        def member() -> FitNet:
            return FitNet(
                config.n_keypoints,
                coefficient_ridge=config.coefficient_ridge,
                **config.network_options(),
            )

        super().__init__(config, member, name="lifter-fit")

    def losses(self, batch: Sample, step: int) -> LossOutput:
        """:meth:`LiftingEnsemble.member_losses` (unweighted)."""
        return LossOutput(self.member_losses(batch.kp2d, batch.vis, batch.category)[0], {})

    def lift_members(
        self, kp2d: Tensor, vis: Tensor, context: Tensor | None = None
    ) -> tuple[Normalised, LiftingOutput]:
        """:meth:`lift` of member e on ``kp2d[e]`` (E, B, K, 2), ``vis[e]`` (E, B, K) and
        ``context[e]`` (E, B, C), every output stacked (E, B, ...). The members run as one
        batched network (:func:`~kp3d.methods.lifter_fit.fit.stacked_lift`, the same function:
        a step costs less than the members one after another); other networks put in as
        members (tests) one after the other."""
        members = self.members
        if not all(isinstance(m, FitNet) for m in members):
            return super().lift_members(kp2d, vis, context)
        norm = normalise_keypoints(kp2d, vis)
        return norm, stacked_lift(members, norm.kp2d, vis, context)

    def member_output(
        self, net: LiftingNet, norm: Normalised, out: LiftingOutput, vis: Tensor
    ) -> LiftingOutput:
        """``out`` with the rotation refined (``refine_steps``, see
        :meth:`~kp3d.methods.lifter_fit.fit.FitNet.refine_rotations`)."""
        if self.config.refine_steps > 0 and self.config.coefficient_ridge > 0:
            out = net.refine_rotations(out.R, norm.kp2d, vis, steps=self.config.refine_steps)
        return out

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """:meth:`LiftingEnsemble.ensemble_predictions` with each member's rotation refined
        (:meth:`member_output`): ``kp3d`` keeps the input x, y (depths averaged over the kept
        members); ``R`` is the field, ``alpha``, ``shape``, ``scale``, ``centre`` are
        ``extras``."""
        pred = self.ensemble_predictions(batch.kp2d, batch.vis)
        return Prediction(kp3d=pred.pop("kp3d"), R=pred.pop("R"), extras=pred)

    @torch.no_grad()
    def diagnose(self, batch: Sample) -> Diagnosis:
        """Whether the predictions of ``batch`` (training keypoints) are near flat
        (:func:`~kp3d.metrics.flatness.flatness_check`), and
        :meth:`~kp3d.nn.lifting.LiftingEnsemble.ensemble_summary`."""
        values, warnings = flatness_check(self.predict(batch).kp3d, batch.vis, method=self.name)
        return Diagnosis({**values, **self.ensemble_summary()}, warnings)


def build(config: LifterFitConfig) -> LifterFit:
    return LifterFit(config)
