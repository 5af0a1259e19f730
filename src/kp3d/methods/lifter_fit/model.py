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
averaged member's. Now and then one ends flattened (the degenerate solution of non-rigid
structure from motion: every view posed alike, the views explained by deformation, too little
depth), so each member's depth extent is tracked in training (:attr:`LifterFit.depth_extent`)
and the flattened ones are left out of the average (``ensemble_tolerance``).

Categories share the networks as in ``lifter``: the keypoints each category owns are learned
from the data as the union of the visible keypoints seen per category (:attr:`LifterFit.support`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.losses.lifting import reprojection_loss, shape_prior_loss
from kp3d.methods.base import LossOutput, MethodModel
from kp3d.methods.configure import categories_from_data, keypoints_from_data
from kp3d.methods.lifter_fit.config import LifterFitConfig
from kp3d.methods.lifter_fit.fit import FitNet, stacked_lift
from kp3d.methods.prediction import Prediction
from kp3d.nn.lifting import (
    LiftingNet,
    LiftingOutput,
    Normalised,
    lifting_predictions,
    masked_mean,
    normalise_keypoints,
    visibility,
)

EXTENT_DECAY = 0.99
"""Decay of the running mean :attr:`LifterFit.depth_extent`: about the last hundred steps."""


def depth_extent(depth: Tensor, vis: Tensor) -> Tensor:
    """Mean over the batch of the RMS of the centred depth (..., B, K) over the visible keypoints
    (vis (..., B, K)): (...)."""
    centred = (depth - masked_mean(depth, vis, dim=-1)[..., None]) * vis
    return (centred.square().sum(-1) / vis.sum(-1).clamp_min(1)).sqrt().mean(-1)


class LifterFit(MethodModel):
    """``lifter-fit``: networks that predict the rotation, with the shape fitted to each view
    (see the module doc).

    ``net`` is the (first) lifting network; ``ensemble`` holds the other members when
    ``config.ensemble > 1``.
    """

    support: Tensor
    depth_extent: Tensor
    """(ensemble,) running mean over training steps of each member's depth extent on its rows:
    per sample, the RMS over the visible keypoints of the centred camera-frame depth, in the
    input's normalised units (the 2D RMS radius is 1); NaN before the first step."""

    def __init__(self, config: LifterFitConfig) -> None:
        super().__init__()
        if config.n_keypoints < 1:
            raise ConfigError(
                "lifter-fit: n_keypoints is not set (the number of keypoints K of the data)"
            )
        self.config = config
        self.n_categories = config.n_categories or 1

        def member() -> FitNet:
            return FitNet(
                config.n_keypoints,
                n_basis=config.n_basis,
                width=config.width,
                n_layers=config.n_layers,
                norm=config.norm,
                rotation=config.rotation,
                camera=config.camera,
                context_dim=config.context_dim,
                motion_free_basis=config.motion_free_basis,
                coefficient_ridge=config.coefficient_ridge,
            )

        self.net = member()
        self.ensemble = nn.ModuleList(member() for _ in range(config.ensemble - 1))
        self.register_buffer(
            "support", torch.zeros(self.n_categories, config.n_keypoints, dtype=torch.bool)
        )
        self.register_buffer("depth_extent", torch.full((config.ensemble,), math.nan))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Runs saved before extents were tracked load with NaN: every member is averaged, as it
        # was then.
        state_dict.setdefault(prefix + "depth_extent", torch.full_like(self.depth_extent, math.nan))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def members(self) -> list[LiftingNet]:
        """The lifting networks: ``net``, then the rest of the ensemble."""
        return [self.net, *self.ensemble]

    def lift(
        self,
        kp2d: Tensor,
        vis: Tensor | None = None,
        context: Tensor | None = None,
        *,
        net: LiftingNet | None = None,
    ) -> tuple[Normalised, LiftingOutput]:
        """Normalise ``kp2d`` (B, K, 2) with ``vis`` (B, K) and run a lifting network (default
        ``net``)."""
        norm = normalise_keypoints(kp2d, vis)
        return norm, (self.net if net is None else net)(norm.kp2d, visibility(kp2d, vis), context)

    def categories(self, category: Tensor | None, batch_size: int, device: torch.device) -> Tensor:
        """Category labels (B,) int64, all 0 when the data has none.

        Raises:
            ConfigError: a label outside ``[0, n_categories)``.
        """
        if category is None:
            return torch.zeros(batch_size, dtype=torch.long, device=device)
        category = category.long()
        n = self.n_categories
        if bool(((category < 0) | (category >= n)).any()):
            raise ConfigError(
                f"lifter-fit: the data has category labels {int(category.min())}..."
                f"{int(category.max())}, but n_categories = {n}; set n_categories to the number "
                "of categories"
            )
        return category

    @torch.no_grad()
    def update_support(self, vis: Tensor, category: Tensor) -> None:
        """Add the keypoints visible in this batch to their category's subset ``zeta_z``."""
        seen = torch.zeros(self.support.shape, dtype=vis.dtype, device=vis.device)
        seen.index_add_(0, category, vis)
        self.support |= seen > 0

    def loss_weights(self) -> dict[str, float]:
        # Members share no weights, so the sum of their losses (E x the mean over members, as
        # they have as many rows each) trains each as if alone on its rows; the named losses
        # are the members' means.
        cfg, E = self.config, len(self.members)
        return {"reprojection": E, "shape_prior": E * cfg.shape_prior_weight}

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
        and an optional context (B, C)."""
        cfg = self.config
        w = visibility(kp2d, vis)
        category = self.categories(category, kp2d.shape[0], kp2d.device)
        self.update_support(w, category)
        rows = self.member_rows(kp2d.shape[0])

        def stack(t: Tensor) -> Tensor:  # (E, B_member, ...): each member's rows
            return torch.stack([t[r] for r in rows])

        ww, cat = stack(w), stack(category)
        ctx = None if context is None else stack(context)
        norm, out = self.lift_members(stack(kp2d), ww, ctx)
        E = len(self.members)
        losses = {
            "reprojection": reprojection_loss(out.shape_cam, norm.kp2d, ww, delta=cfg.huber_delta)
        }
        if cfg.shape_prior_weight > 0:
            # Each member's categories are groups of their own.
            groups = cat + self.n_categories * torch.arange(E, device=cat.device)[:, None]
            losses["shape_prior"] = shape_prior_loss(
                out.basis_shape.flatten(0, 1), groups.flatten(), self.support[cat].flatten(0, 1)
            )
        if self.training and E > 1:  # only training steps of an ensemble track extents
            new = depth_extent(out.shape_cam[..., 2].detach(), ww).to(self.depth_extent)
            old = self.depth_extent
            old.copy_(torch.where(old.isnan(), new, old.lerp(new, 1 - EXTENT_DECAY)))
        return LossOutput(losses, {})

    def lift_members(
        self, kp2d: Tensor, vis: Tensor, context: Tensor | None = None
    ) -> tuple[Normalised, LiftingOutput]:
        """:meth:`lift` of member e on ``kp2d[e]`` (E, B, K, 2), ``vis[e]`` (E, B, K) and
        ``context[e]`` (E, B, C), every output stacked (E, B, ...). The members run as one
        batched network (:func:`~kp3d.methods.lifter_fit.fit.stacked_lift`, the same function:
        a step costs less than the members one after another); other networks put in as
        members (tests) one after the other."""
        norm = normalise_keypoints(kp2d, vis)
        members = self.members
        if all(isinstance(m, FitNet) for m in members):
            return norm, stacked_lift(members, norm.kp2d, vis, context)
        outs = [
            net(norm.kp2d[e], vis[e], None if context is None else context[e])
            for e, net in enumerate(members)
        ]
        return norm, LiftingOutput(*(torch.stack(field) for field in zip(*outs, strict=True)))

    def kept_members(self) -> list[LiftingNet]:
        """The members a prediction averages (see ``ensemble_tolerance``), in order."""
        extent = self.depth_extent
        if bool(extent.isnan().any()):
            return self.members
        keep = extent >= (1 - self.config.ensemble_tolerance) * extent.max()
        return [net for net, k in zip(self.members, keep.tolist(), strict=True) if k]

    def member_rows(self, batch_size: int) -> list[slice]:
        """The rows of a training batch that each member trains on (``ensemble_batches``): with
        ``split``, consecutive parts of ``batch_size // ensemble`` rows (the last
        ``batch_size % ensemble`` rows are left out, so that members weigh alike).

        Raises:
            ValueError: ``split`` with fewer rows than members.
        """
        n = len(self.members)
        if self.config.ensemble_batches == "shared" or n == 1:
            return [slice(None)] * n
        if batch_size < n:
            raise ValueError(
                f"lifter-fit: ensemble_batches = split needs at least one sample per "
                f"member, got a batch of {batch_size} for {n} members"
            )
        size = batch_size // n
        return [slice(i * size, (i + 1) * size) for i in range(n)]

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
        ``R`` is the field, ``alpha``, ``shape``, ``scale``, ``centre`` are ``extras``.

        With an ensemble, ``kp3d``'s depth is the mean of the depths of the
        :meth:`kept_members`, each multiplied per sample by the sign (+-1) that brings it closer
        to the first kept member's; every other entry (``R``, ``alpha``, ``shape``) is that
        member's.
        """
        preds = []
        for net in self.kept_members():
            norm, out = self.lift(batch.kp2d, batch.vis, net=net)
            if self.config.refine_steps > 0 and self.config.coefficient_ridge > 0:
                out = net.refine_rotations(
                    out.R,
                    norm.kp2d,
                    visibility(batch.kp2d, batch.vis),
                    steps=self.config.refine_steps,
                )
            preds.append(lifting_predictions(out, norm, batch.vis))
        pred = preds[0]
        if len(preds) > 1:
            z0 = pred["kp3d"][..., 2]
            depths = [z0]
            for other in preds[1:]:
                z = other["kp3d"][..., 2]
                same = (z - z0).square().sum(-1) <= (z + z0).square().sum(-1)
                depths.append(torch.where(same[:, None], z, -z))
            pred["kp3d"] = torch.cat(
                [pred["kp3d"][..., :2], torch.stack(depths).mean(0)[..., None]], dim=-1
            )
        return Prediction(kp3d=pred.pop("kp3d"), R=pred.pop("R"), extras=pred)


def build(config: LifterFitConfig) -> LifterFit:
    return LifterFit(config)


def configure(config: LifterFitConfig, dataset: Dataset[Sample]) -> LifterFitConfig:
    """The number of keypoints and of categories from the data, where unset."""
    return categories_from_data(keypoints_from_data(config, dataset), dataset)
