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
unlike enough that the average beats each of them. Now and then one ends flattened, the
degenerate solution of non-rigid structure from motion: it poses every view alike and explains
the views by deformation, with too little depth. So each member's depth extent is tracked in
training (:attr:`Lifter.depth_extent`) and the flattened ones are left out of the average
(``ensemble_tolerance``); their reprojection loss does not rank the members (results:
docs/results.md).

Multiple categories share one network: category ``z`` owns a subset ``zeta_z`` of the
``K = sum_z k_z`` keypoints, and an instance of ``z`` is given with the other categories'
keypoints invisible. The subsets are learned from the data as the union of the visible
keypoints seen per category (the buffer :attr:`Lifter.support`); the cycle renders and
compares exactly a category's own keypoints. An optional context vector (e.g. image features
from a keypoint detector trained end to end) is appended to the network's input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.geometry.rotations import random_rotation
from kp3d.losses.lifting import point_loss, reprojection_loss, rotation_loss, shape_prior_loss
from kp3d.methods.base import LossOutput, MethodModel
from kp3d.methods.configure import categories_from_data, keypoints_from_data
from kp3d.methods.prediction import Prediction
from kp3d.nn.lifting import (
    CameraKind,
    LiftingNet,
    LiftingOutput,
    Normalised,
    NormKind,
    RotationKind,
    lifting_predictions,
    masked_mean,
    normalise_keypoints,
    visibility,
)

EnsembleBatches = Literal["shared", "split"]

EXTENT_DECAY = 0.99
"""Decay of the running mean :attr:`Lifter.depth_extent`: about the last hundred steps."""


@dataclass(frozen=True)
class LifterConfig:
    """Settings of :class:`Lifter`."""

    n_keypoints: int = 0
    """Total number of keypoints K = sum over categories of k_z (0 = not yet known; set it, or
    let the engine set it from the dataset, before building)."""
    n_categories: int | None = None
    """Number of categories sharing the network (category labels 0 .. n_categories - 1); none
    = from the data (1 + its largest label, 1 without labels; a model built without data takes
    1)."""
    n_basis: int = 10
    """Size of the shape basis S."""
    width: int = 256
    """Width of the residual MLP trunk."""
    n_layers: int = 3
    """Residual blocks in the trunk."""
    norm: NormKind = "batch"
    """Normalisation inside the trunk: batch (frozen in the cycle phase), layer or none."""
    rotation: RotationKind = "6d"
    """Rotation head: 6d (continuous) or axis_angle (so(3) exponential)."""
    camera: CameraKind = "weak_perspective"
    """weak_perspective (scale-free shapes, least-squares scale per sample) or orthographic
    (shapes carry their apparent size)."""
    context_dim: int = 0
    """Length of an optional context vector appended to the input (0 = none)."""
    huber_delta: float = 0.1
    """Pseudo-Huber scale of every loss, in normalised units (the input's RMS radius is 1)."""
    cycle_start: int | None = 1000
    """Steps of reprojection-only pre-training before the cycle losses start and the BatchNorm
    statistics freeze (the paper's schedule); None = no cycle (as in ``lifter-fit``; results:
    docs/results.md)."""
    camera_weight: float = 1.0
    """Weight of the cycle camera loss."""
    shape_weight: float = 1.0
    """Weight of the cycle shape loss."""
    shape_prior_weight: float = 0.0
    """Weight of the Gaussian shape prior (squared distance of each shape from the batch mean
    shape, up to scale), which resolves the ambiguity of a large basis."""
    motion_free_basis: bool = False
    """Keep each basis shape orthogonal to the scale and infinitesimal rotations of the bias
    shape b_S (:class:`kp3d.nn.lifting.ShapeBasis`), so deformations cannot imitate the camera
    (the gauge ambiguity of non-rigid structure from motion). On in ``lifter-fit``."""
    ensemble: int = 1
    """Independently initialised lifting networks trained side by side (a step costs up to this
    many times more at the same batch per member; less with fitted coefficients, whose members
    run as one batched network, see :meth:`Lifter.lift_members`); prediction averages their
    depths (see ``ensemble_tolerance``), each member's sign aligned per sample with the first
    averaged member's (the depth-flip ambiguity of orthographic views). 4 in ``lifter-fit``
    (results: docs/results.md)."""
    ensemble_batches: EnsembleBatches = "shared"
    """What each ensemble member trains on per step: ``shared``, the whole batch; ``split``, its
    own 1/ensemble of the batch (set the batch size to ensemble x the batch per member), so the
    members' gradient noise is independent. ``split`` in ``lifter-fit`` (results:
    docs/results.md)."""
    ensemble_tolerance: float = 0.25
    """Prediction averages the members whose :attr:`Lifter.depth_extent` is at least (1 - this)
    times the largest member's, leaving out flattened ones; all before training. Must lie in
    [0, 1) (results: docs/results.md)."""

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
        if self.cycle_start is not None and self.cycle_start < 0:
            raise ConfigError(f"cycle_start must be >= 0 or None, got {self.cycle_start}")
        for name in ("n_layers", "context_dim"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.norm not in get_args(NormKind):
            raise ConfigError(f"norm must be one of {get_args(NormKind)}, got {self.norm!r}")
        if self.rotation not in get_args(RotationKind):
            raise ConfigError(
                f"rotation must be one of {get_args(RotationKind)}, got {self.rotation!r}"
            )
        if self.huber_delta <= 0:
            raise ConfigError(f"huber_delta must be positive, got {self.huber_delta}")
        for name in ("camera_weight", "shape_weight", "shape_prior_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ensemble_tolerance < 1:
            raise ConfigError(
                f"ensemble_tolerance must lie in [0, 1), got {self.ensemble_tolerance}"
            )
        if self.camera not in get_args(CameraKind):
            raise ConfigError(f"camera must be one of {get_args(CameraKind)}, got {self.camera!r}")
        if self.ensemble_batches not in get_args(EnsembleBatches):
            raise ConfigError(
                f"ensemble_batches must be one of {get_args(EnsembleBatches)}, "
                f"got {self.ensemble_batches!r}"
            )


def depth_extent(depth: Tensor, vis: Tensor) -> Tensor:
    """Mean over the batch of the RMS of the centred depth (..., B, K) over the visible keypoints
    (vis (..., B, K)): (...)."""
    centred = (depth - masked_mean(depth, vis, dim=-1)[..., None]) * vis
    return (centred.square().sum(-1) / vis.sum(-1).clamp_min(1)).sqrt().mean(-1)


class CycleLosses(NamedTuple):
    """The two cycle terms (scalars)."""

    camera: Tensor
    """``rho(|| R(Y~) - R~ ||_F)``, mean over the batch."""
    shape: Tensor
    """``rho(|| s~ X(Y~) - X(Y) ||)`` over the category's keypoints, mean over the batch."""


class Lifter(MethodModel):
    """Non-negative-basis lifter with cyclic self-supervision (Can et al.).

    ``net`` is the (first) lifting network; ``ensemble`` holds the other members when
    ``config.ensemble > 1``.
    """

    support: Tensor
    depth_extent: Tensor
    """(ensemble,) running mean over training steps of each member's depth extent on its rows:
    per sample, the RMS over the visible keypoints of the centred camera-frame depth, in the
    input's normalised units (the 2D RMS radius is 1); NaN before the first step."""

    def __init__(self, config: LifterConfig) -> None:
        super().__init__()
        if config.n_keypoints < 1:
            raise ConfigError(
                "lifter: n_keypoints is not set (the number of keypoints K of the data)"
            )
        self.config = config
        self.n_categories = config.n_categories or 1

        def member() -> LiftingNet:
            return LiftingNet(
                config.n_keypoints,
                n_basis=config.n_basis,
                width=config.width,
                n_layers=config.n_layers,
                norm=config.norm,
                rotation=config.rotation,
                coefficients="relu",
                camera=config.camera,
                context_dim=config.context_dim,
                motion_free_basis=config.motion_free_basis,
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
                f"lifter: the data has category labels {int(category.min())}..."
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

    def cycle_losses(
        self,
        out: LiftingOutput,
        category: Tensor,
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        net: LiftingNet | None = None,
    ) -> CycleLosses:
        """Camera and shape losses of the augmented view ``Pi(R~ X)`` of each shape that ``net``
        (default ``self.net``) predicted.

        Nothing is detached: as with C3DPO's canonicalisation, the gradient also reaches the
        original prediction, pushing the shape space towards one in which a view determines
        both the shape and the rotation.
        """
        X = out.shape
        support = self.support[category].to(X.dtype)  # (B, K)
        R = random_rotation(X.shape[0], generator=generator, dtype=X.dtype, device=X.device)
        norm = normalise_keypoints((X @ R.transpose(-1, -2))[..., :2], support)
        cyc = (self.net if net is None else net)(norm.kp2d, support, context)
        X_cyc = cyc.shape * norm.scale[..., None, None]
        # Both shapes are compared about their centroids over the category's own keypoints.
        X_cyc = X_cyc - masked_mean(X_cyc, support[..., None], dim=-2)[..., None, :]
        X = X - masked_mean(X, support[..., None], dim=-2)[..., None, :]
        delta = self.config.huber_delta
        return CycleLosses(
            camera=rotation_loss(cyc.R, R, delta=delta),
            shape=point_loss(X_cyc, X, support, delta=delta),
        )

    def on_step(self, step: int) -> None:
        """From ``cycle_start`` on, the BatchNorm layers run on their running statistics (see the
        module doc: the cycle's synthetic views must not shift them)."""
        cfg = self.config
        if cfg.cycle_start is not None and step >= cfg.cycle_start:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def loss_weights(self) -> dict[str, float]:
        # Members share no weights, so the sum of their losses (E x the mean over members, as
        # they have as many rows each) trains each as if alone on its rows; the named losses
        # are the members' means.
        cfg, E = self.config, len(self.members)
        return {
            "reprojection": E,
            "shape_prior": E * cfg.shape_prior_weight,
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
        and an optional context (B, C)."""
        cfg = self.config
        w = visibility(kp2d, vis)
        category = self.categories(category, kp2d.shape[0], kp2d.device)
        self.update_support(w, category)
        cycling = cfg.cycle_start is not None and step >= cfg.cycle_start
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
        if cycling:
            cycles = [
                self.cycle_losses(
                    LiftingOutput(*(t[e] for t in out)),
                    cat[e],
                    None if ctx is None else ctx[e],
                    net=net,
                )
                for e, net in enumerate(self.members)
            ]
            losses["camera"] = torch.stack([c.camera for c in cycles]).sum() / E
            losses["shape"] = torch.stack([c.shape for c in cycles]).sum() / E
        if self.training and E > 1:  # only training steps of an ensemble track extents
            new = depth_extent(out.shape_cam[..., 2].detach(), ww).to(self.depth_extent)
            old = self.depth_extent
            old.copy_(torch.where(old.isnan(), new, old.lerp(new, 1 - EXTENT_DECAY)))
        return LossOutput(losses, {})

    def lift_members(
        self, kp2d: Tensor, vis: Tensor, context: Tensor | None = None
    ) -> tuple[Normalised, LiftingOutput]:
        """:meth:`lift` of member e on ``kp2d[e]`` (E, B, K, 2), ``vis[e]`` (E, B, K) and
        ``context[e]`` (E, B, C), every output stacked (E, B, ...), one member after the other."""
        norm = normalise_keypoints(kp2d, vis)
        outs = [
            net(norm.kp2d[e], vis[e], None if context is None else context[e])
            for e, net in enumerate(self.members)
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
                f"lifter: ensemble_batches = split needs at least one sample per "
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


def build(config: LifterConfig) -> Lifter:
    return Lifter(config)


def configure(config: LifterConfig, dataset: Dataset[Sample]) -> LifterConfig:
    """The number of keypoints and of categories from the data, where unset."""
    return categories_from_data(keypoints_from_data(config, dataset), dataset)
