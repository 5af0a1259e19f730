"""Shared parts of kp3d's 2D→3D lifters (``c3dpo``, ``lifter`` and ``lifter-fit``).

A lifter maps one instance's 2D keypoints ``Y`` (K, 2) with visibility to a camera rotation ``R``
and a 3D shape in a canonical frame, ``X = b_S + sum_i alpha_i S_i`` (K, 3), such that the
orthographic projection of ``R X`` reproduces the visible keypoints up to a 2D translation.

Normalisation (explicit, per sample, used by both methods and by the AFLW protocol of
``ANCHORS.md``): the visible keypoints are centred on their mean ``c`` and divided by
``s = sqrt(mean_k ||y_k - c||^2)``, the RMS distance of the visible points from their centre.
Everything the networks see and predict lives in these units; depths are mapped back to the
input's units by multiplying with ``s``. Invisible keypoints are set to 0 after normalisation
and flagged by the visibility input, so the trunk can tell "missing" from "at the centre".

Camera: orthographic, ``y = (R X)_{xy} + t`` with ``R X`` in the camera frame of
:mod:`kp3d.geometry` (x right, y down, z forward, row-stacked points ``X @ R^T``), or weak
perspective, ``y = c (R X)_{xy} + t`` (see :class:`LiftingNet`). Neither ``t`` nor ``c`` is
predicted: each is the least-squares optimum over the visible points.

Also here, as the methods share them: their common settings (:class:`LiftingConfig`,
:class:`EnsembleLiftingConfig`) and the several networks of ``lifter`` and ``lifter-fit`` that
train side by side and are averaged at prediction (:class:`LiftingEnsemble`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple, TypedDict, cast, get_args

import torch
from torch import Tensor, nn

from kp3d.errors import ConfigError

# The keypoint formulas live in kp3d.geometry.keypoints; imported here for the lifters.
from kp3d.geometry.keypoints import (
    Normalised,
    masked_mean,
    normalise_keypoints,
    orthographic_translation,
    rms_radius,
    weak_perspective_scale,
)
from kp3d.geometry.keypoints import visibility_weights as visibility
from kp3d.geometry.rotations import (
    axis_angle_to_matrix,
    random_rotation,
    rotation_6d_to_matrix,
    rotation_spread,
)
from kp3d.losses.lifting import point_loss, reprojection_loss, rotation_loss, shape_prior_loss
from kp3d.nn.shape import linear_shape

NormKind = Literal["batch", "layer", "none"]
RotationKind = Literal["axis_angle", "6d"]
CoefficientKind = Literal["linear", "relu"]
CameraKind = Literal["orthographic", "weak_perspective"]
EnsembleBatches = Literal["shared", "split"]
ReprojectionPoints = Literal["visible", "all"]

_EPS = 1e-8

LIFTING_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "batch_size": 256, "bf16": False}
"""The lifting methods' training defaults (:attr:`kp3d.methods.base.MethodSpec.train_defaults`):
bf16 (~3 significant digits) is too coarse for reprojection residuals of ~1% of a shape."""


def rotation_dim(kind: RotationKind) -> int:
    """Number of network outputs a rotation parametrisation needs."""
    return {"axis_angle": 3, "6d": 6}[kind]


def rotation_from_params(params: Tensor, kind: RotationKind) -> Tensor:
    """Rotation matrices (..., 3, 3) from raw network outputs (..., 3) or (..., 6).

    ``"axis_angle"``: the so(3) exponential map (C3DPO). ``"6d"``: Gram-Schmidt on the first two
    columns (Zhou et al., CVPR 2019), continuous over all of SO(3).
    """
    if kind == "axis_angle":
        return axis_angle_to_matrix(params)
    if kind == "6d":
        return rotation_6d_to_matrix(params)
    raise ValueError(f"unknown rotation parametrisation {kind!r}; valid: {get_args(RotationKind)}")


def _norm_layer(kind: NormKind, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: {get_args(NormKind)}")


class ResidualBlock(nn.Module):
    """Pre-activation residual MLP block: ``x + W2 relu(N2(W1 relu(N1(x))))``."""

    def __init__(self, width: int, *, norm: NormKind = "batch") -> None:
        super().__init__()
        self.net = nn.Sequential(
            _norm_layer(norm, width),
            nn.ReLU(),
            nn.Linear(width, width),
            _norm_layer(norm, width),
            nn.ReLU(),
            nn.Linear(width, width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class Trunk(nn.Module):
    """Residual MLP: (B, dim_in) -> (B, width) features, normalised and activated at the end."""

    def __init__(
        self, dim_in: int, *, width: int = 256, n_layers: int = 3, norm: NormKind = "batch"
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, width),
            *(ResidualBlock(width, norm=norm) for _ in range(n_layers)),
            _norm_layer(norm, width),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def project_onto_motions(shapes: Tensor, base: Tensor) -> Tensor:
    """The part of ``shapes`` (*E, n, K, 3) in the span of the infinitesimal similarity motions of
    the centred shape ``base`` (*E, K, 3): ``base`` (scale) and ``e_j x base``, j = x, y, z
    (rotations), as vectors of R^{3K} with the Euclidean inner product."""
    eye = torch.eye(3, dtype=base.dtype, device=base.device)
    motions = torch.stack(
        [base, *(torch.linalg.cross(eye[j].expand_as(base), base) for j in range(3))], dim=-3
    ).flatten(-2)
    Q = torch.linalg.qr(motions.transpose(-1, -2)).Q  # (*E, 3K, 4) orthonormal
    flat = shapes.flatten(-2)
    return ((flat @ Q) @ Q.transpose(-1, -2)).reshape(shapes.shape)


def basis_shapes(raw_basis: Tensor, bias: Tensor, *, motion_free: bool) -> Tensor:
    """:attr:`ShapeBasis.basis` (*E, n, K, 3) from the stored basis (*E, n, K, 3) and the bias
    shape (*E, K, 3)."""
    V = raw_basis - raw_basis.mean(-2, keepdim=True)
    if motion_free:
        V = V - project_onto_motions(V, bias - bias.mean(-2, keepdim=True))
    return V / rms_radius(V).clamp_min(_EPS)[..., None, None]


class ShapeBasis(nn.Module):
    """Linear shape model ``X = b_S + sum_i alpha_i S_i`` with a learned basis and bias.

    Shapes are centred (zero mean over the keypoints) by construction, so the canonical frame's
    origin is the shape's centroid and rotations act about it. Each basis shape is kept at unit
    RMS radius (``S_i = V_i / rms(V_i)`` for the learned ``V_i``), so ``alpha_i`` is the size of
    its deformation in the shape's units and the trade-off between the scale of ``alpha_i``
    and of ``S_i`` (a free gauge of the plain product) is gone.

    With ``motion_free=True`` each basis shape is first projected off the four directions in
    which a similarity motion of the bias moves it: ``b_S`` itself (a change of scale) and
    ``e_j x b_S`` for j = x, y, z (infinitesimal rotations). Otherwise the basis can imitate a
    change of camera with a deformation, which explains a view equally well in 2D with a wrong
    depth (the gauge ambiguity of non-rigid structure from motion); rotations must then come
    from the rotation head.
    """

    def __init__(
        self, n_basis: int, n_keypoints: int, *, lr_scale: float = 10.0, motion_free: bool = False
    ) -> None:
        super().__init__()
        self.motion_free = motion_free
        # The shape model is stored divided by lr_scale, which makes Adam's steps on it lr_scale
        # times larger than on the networks' weights: a learned shape moves O(1) in ~1/(lr *
        # lr_scale) steps instead of ~1/lr. The bias starts as a random shape of RMS radius ~1,
        # the size of the normalised inputs. Kept as a parametrisation, not an optimizer group:
        # it also makes these gradients lr_scale times larger in the global gradient-norm clip,
        # which is active in c3dpo and lifter-fit (norms 4-9 against a limit of 1), so a group
        # with the same step size changes their results (measured: c3dpo's losses moved 2e-3
        # after 5 steps with clipping, 1e-6 without).
        self.lr_scale = lr_scale
        self.raw_basis = nn.Parameter(torch.randn(n_basis, n_keypoints, 3) / lr_scale)
        self.raw_bias = nn.Parameter(torch.randn(n_keypoints, 3) / (3**0.5 * lr_scale))

    @property
    def bias(self) -> Tensor:
        """(K, 3) the bias shape ``b_S``."""
        return self.lr_scale * self.raw_bias

    @property
    def basis(self) -> Tensor:
        """(n_basis, K, 3) the centred, unit-RMS basis shapes ``S_i``."""
        return basis_shapes(self.raw_basis, self.bias, motion_free=self.motion_free)

    def forward(self, alpha: Tensor) -> Tensor:
        """alpha (..., n_basis) -> canonical shape (..., K, 3)."""
        shape = linear_shape(self.bias, self.basis, alpha)
        return shape - shape.mean(-2, keepdim=True)


class LiftingOutput(NamedTuple):
    """What one lifter pass predicts, all in normalised units (see the module doc)."""

    R: Tensor
    """(B, 3, 3) canonical-to-camera rotation."""
    alpha: Tensor
    """(B, n_basis) shape coefficients."""
    basis_shape: Tensor
    """(B, K, 3) the shape model's output for ``alpha`` (:meth:`LiftingNet.shape_from_alpha`)."""
    shape: Tensor
    """(B, K, 3) canonical shape ``X`` in the input's normalised units: ``basis_shape``, times
    the least-squares scale with the weak-perspective camera."""
    shape_cam: Tensor
    """(B, K, 3) ``X @ R^T``: the shape in the camera frame (before the 2D translation)."""


class LiftingNetOptions(TypedDict, total=False):
    """The keyword options of :class:`LiftingNet` that its subclasses pass on unchanged."""

    n_basis: int
    width: int
    n_layers: int
    norm: NormKind
    rotation: RotationKind
    camera: CameraKind
    context_dim: int
    motion_free_basis: bool


class LiftingNet(nn.Module):
    """Trunk + rotation head + coefficient head + shape basis: 2D keypoints -> (R, alpha, X).

    Input per sample: normalised keypoints × visibility (K, 2), the visibility itself (K), and
    optionally a context vector (e.g. image features of a detector).

    Cameras: ``"orthographic"`` (C3DPO's default) explains the normalised keypoints by
    ``Pi(R X)`` alone, so the shape model must also represent the apparent size, which varies
    with the viewpoint (a face in profile is narrower, hence larger after normalisation).
    ``"weak_perspective"`` makes shapes scale-free: the model's output is scaled to unit RMS
    radius and the per-sample scale is the least-squares optimum (C3DPO's ``argmin_scale``), so
    the basis is spent on deformations only.

    Coefficients: predicted by a head (``coefficients`` = linear or relu); with
    ``coefficient_head=False`` there is none, for subclasses that obtain them otherwise
    (``lifter-fit`` fits them to each view). ``motion_free_basis``: see :class:`ShapeBasis`.
    """

    def __init__(
        self,
        n_keypoints: int,
        *,
        n_basis: int = 10,
        width: int = 256,
        n_layers: int = 3,
        norm: NormKind = "batch",
        rotation: RotationKind = "axis_angle",
        coefficients: CoefficientKind = "linear",
        camera: CameraKind = "orthographic",
        context_dim: int = 0,
        motion_free_basis: bool = False,
        coefficient_head: bool = True,
    ) -> None:
        super().__init__()
        if coefficients not in get_args(CoefficientKind):
            raise ValueError(
                f"unknown coefficients {coefficients!r}; valid: {get_args(CoefficientKind)}"
            )
        if camera not in get_args(CameraKind):
            raise ValueError(f"unknown camera {camera!r}; valid: {get_args(CameraKind)}")
        self.rotation, self.coefficients, self.camera = rotation, coefficients, camera
        self.context_dim = context_dim
        self.trunk = Trunk(3 * n_keypoints + context_dim, width=width, n_layers=n_layers, norm=norm)
        self.rotation_head = nn.Linear(width, rotation_dim(rotation))
        # Networks whose coefficients come from elsewhere (lifter-fit fits them to each view)
        # have no head: it would be unused, and DDP rejects parameters without gradients.
        self.alpha_head = nn.Linear(width, n_basis) if coefficient_head else None
        self.shape_basis = ShapeBasis(n_basis, n_keypoints, motion_free=motion_free_basis)
        # Start rigid (alpha ~ 0, small enough that ReLU coefficients are not dead) and near the
        # identity rotation, so early reprojections are neither random deformations nor flips.
        if self.alpha_head is not None:
            nn.init.normal_(self.alpha_head.weight, std=1e-3)
            nn.init.zeros_(self.alpha_head.bias)
        nn.init.zeros_(self.rotation_head.weight)
        with torch.no_grad():
            self.rotation_head.bias.copy_(
                torch.zeros(3) if rotation == "axis_angle" else torch.eye(3)[:2].flatten()
            )

    def shape_from_alpha(self, alpha: Tensor) -> Tensor:
        """Coefficients (B, n_basis) -> centred shapes (B, K, 3), unit RMS radius with the
        weak-perspective camera."""
        shape = self.shape_basis(alpha)
        if self.camera == "weak_perspective":
            shape = shape / rms_radius(shape).clamp_min(_EPS)[..., None, None]
        return shape

    def base_shape(self) -> Tensor:
        """(K, 3) the shape of ``alpha = 0``: ``b_S`` as :meth:`shape_from_alpha` maps it."""
        zero = self.shape_basis.raw_bias.new_zeros(1, self.shape_basis.raw_basis.shape[0])
        return self.shape_from_alpha(zero)[0]

    def forward(self, kp2d: Tensor, vis: Tensor, context: Tensor | None = None) -> LiftingOutput:
        """kp2d (B, K, 2) normalised and zero where invisible; vis (B, K); context (B, C)."""
        f = self.trunk(self.trunk_input(kp2d, vis, context))
        R = rotation_from_params(self.rotation_head(f), self.rotation)
        if self.alpha_head is None:
            raise ValueError("this lifting network has no coefficient head")
        alpha = self.alpha_head(f)
        if self.coefficients == "relu":
            alpha = torch.relu(alpha)
        basis_shape = self.shape_from_alpha(alpha)
        shape = basis_shape
        if self.camera == "weak_perspective":
            scale = weak_perspective_scale((basis_shape @ R.transpose(-1, -2))[..., :2], kp2d, vis)
            shape = basis_shape * scale[..., None, None]
        return LiftingOutput(R, alpha, basis_shape, shape, shape @ R.transpose(-1, -2))

    def trunk_input(self, kp2d: Tensor, vis: Tensor, context: Tensor | None) -> Tensor:
        """(..., 3K [+ C]) the trunk's input: keypoints (..., K, 2), visibility (..., K) and the
        context vector (..., C) when the network takes one."""
        x = torch.cat([kp2d.flatten(-2), vis.to(kp2d.dtype)], dim=-1)
        if self.context_dim:
            if context is None:
                raise ValueError(f"this lifter needs a context vector of size {self.context_dim}")
            x = torch.cat([x, context], dim=-1)
        return x


def orthographic_lift(out: LiftingOutput, kp2d: Tensor, vis: Tensor | None) -> Tensor:
    """3D keypoints (B, K, 3) in normalised units under the C3DPO protocol.

    x, y are the observed (normalised) keypoints where visible and the reprojection where not;
    z is the predicted camera-frame depth, centred on the visible points' mean depth.
    """
    w = visibility(kp2d, vis)
    projected = out.shape_cam[..., :2]
    xy_hat = projected + orthographic_translation(projected, kp2d, w)[..., None, :]
    xy = torch.where(w[..., None] > 0, kp2d, xy_hat)
    z = out.shape_cam[..., 2] - masked_mean(out.shape_cam[..., 2], w, dim=-1)[..., None]
    return torch.cat([xy, z[..., None]], dim=-1)


def lifting_predictions(
    out: LiftingOutput, norm: Normalised, vis: Tensor | None
) -> dict[str, Tensor]:
    """The ``predict`` dict of a lifter, in the input's units (C3DPO protocol).

    Returns ``kp3d`` (B, K, 3): x, y = the input keypoints (reprojected where invisible), z = the
    predicted depth × ``scale``, zero mean over the visible points; ``R`` (B, 3, 3); ``alpha``
    (B, n_basis); ``shape`` (B, K, 3), the canonical shape × ``scale``; ``scale`` (B,) and
    ``centre`` (B, 2), the normalisation statistics of :func:`normalise_keypoints`.
    """
    s = norm.scale[..., None, None]
    kp3d = orthographic_lift(out, norm.kp2d, vis) * s
    kp3d = torch.cat([kp3d[..., :2] + norm.centre[..., None, :], kp3d[..., 2:]], dim=-1)
    return {
        "kp3d": kp3d,
        "R": out.R,
        "alpha": out.alpha,
        "shape": out.shape * s,
        "scale": norm.scale,
        "centre": norm.centre,
    }


@dataclass(frozen=True)
class LiftingConfig:
    """Settings shared by the lifting methods (``c3dpo``, ``lifter``, ``lifter-fit``), checked
    here once; each method's config extends it (and may change a default)."""

    n_keypoints: int = 0
    """Number of keypoints K of the data, over all categories (0 = not yet known; set it, or let
    the engine set it from the dataset, before building)."""
    n_basis: int = 10
    """Size of the linear shape basis S."""
    width: int = 256
    """Width of the residual MLP trunks."""
    n_layers: int = 3
    """Residual blocks per trunk."""
    norm: NormKind = "batch"
    """Normalisation inside the trunks: batch, layer or none."""
    rotation: RotationKind = "6d"
    """Rotation head: 6d (continuous) or axis_angle (the so(3) exponential)."""
    camera: CameraKind = "weak_perspective"
    """weak_perspective (scale-free shapes, least-squares scale per sample) or orthographic
    (shapes carry their apparent size)."""
    huber_delta: float = 0.1
    """Pseudo-Huber scale of every loss, in normalised units (the input's RMS radius is 1):
    residuals well below it are penalised quadratically, those well above linearly (results:
    docs/results.md)."""
    shape_prior_weight: float = 0.0
    """Weight of the Gaussian shape prior (squared distance of each shape from the batch's mean
    shape of its category, up to scale), which resolves the ambiguity of a large basis."""

    def __post_init__(self) -> None:
        if self.n_keypoints < 0:
            raise ConfigError(
                f"n_keypoints must be >= 0 (0 = from the data), got {self.n_keypoints}"
            )
        for name in ("n_basis", "width"):
            _at_least(self, name, 1)
        _at_least(self, "n_layers", 0)
        for name, kinds in (("norm", NormKind), ("rotation", RotationKind), ("camera", CameraKind)):
            if getattr(self, name) not in get_args(kinds):
                raise ConfigError(
                    f"{name} must be one of {get_args(kinds)}, got {getattr(self, name)!r}"
                )
        if self.huber_delta <= 0:
            raise ConfigError(f"huber_delta must be positive, got {self.huber_delta}")
        _at_least(self, "shape_prior_weight", 0)

    def network_options(self) -> LiftingNetOptions:
        """The settings that are options of :class:`LiftingNet` (all but the keypoint count)."""
        names = LiftingNetOptions.__annotations__.keys() & {f.name for f in fields(self)}
        return cast(LiftingNetOptions, {name: getattr(self, name) for name in names})


@dataclass(frozen=True)
class EnsembleLiftingConfig(LiftingConfig):
    """:class:`LiftingConfig` plus the settings of a :class:`LiftingEnsemble` (several
    categories, a context input, several networks); shared by ``lifter`` and ``lifter-fit``."""

    n_categories: int | None = None
    """Number of categories sharing the networks (category labels 0 .. n_categories - 1); none
    = from the data (1 + its largest label, 1 without labels; a model built without data takes
    1)."""
    context_dim: int = 0
    """Length of an optional context vector appended to the input (0 = none)."""
    motion_free_basis: bool = False
    """Keep each basis shape orthogonal to the scale and infinitesimal rotations of the bias
    shape b_S (:class:`kp3d.nn.lifting.ShapeBasis`), so deformations cannot imitate the camera
    (the gauge ambiguity of non-rigid structure from motion)."""
    ensemble: int = 1
    """Independently initialised lifting networks trained side by side; prediction averages
    their depths (see ``ensemble_tolerance``), each member's sign aligned per sample with the
    first averaged member's (the depth-flip ambiguity of orthographic views); results:
    docs/results.md."""
    ensemble_batches: EnsembleBatches = "shared"
    """What each ensemble member trains on per step: ``shared``, the whole batch; ``split``, its
    own 1/ensemble of the batch (set the batch size to ensemble x the batch per member), so the
    members' gradient noise is independent (results: docs/results.md)."""
    ensemble_tolerance: float = 0.25
    """Prediction averages the members whose rotation spread
    (:attr:`LiftingEnsemble.rotation_spread`) is at least (1 - this) times the widest member's,
    leaving out degenerate ones (views posed alike, the rest explained by deformation); all
    before training. Must lie in [0, 1) (results: docs/results.md)."""
    reprojection_points: ReprojectionPoints = "visible"
    """Keypoints the reprojection loss compares: ``visible`` ones (the default), or ``all`` of
    the sample's category (its subset ``zeta_z``, :attr:`LiftingEnsemble.support`), visible or
    not: Can et al.'s "-A" variant, for data whose occluded keypoints still have 2D locations
    (synthetic sets; a detector's predictions). The input normalisation stays that of the
    visible points."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_categories is not None and self.n_categories < 1:
            raise ConfigError(f"n_categories must be >= 1 or none, got {self.n_categories}")
        _at_least(self, "ensemble", 1)
        _at_least(self, "context_dim", 0)
        if not 0 <= self.ensemble_tolerance < 1:
            raise ConfigError(
                f"ensemble_tolerance must lie in [0, 1), got {self.ensemble_tolerance}"
            )
        if self.ensemble_batches not in get_args(EnsembleBatches):
            raise ConfigError(
                f"ensemble_batches must be one of {get_args(EnsembleBatches)}, "
                f"got {self.ensemble_batches!r}"
            )
        if self.reprojection_points not in get_args(ReprojectionPoints):
            raise ConfigError(
                f"reprojection_points must be one of {get_args(ReprojectionPoints)}, "
                f"got {self.reprojection_points!r}"
            )


def _at_least(config: Any, name: str, low: int) -> None:
    """Raise ConfigError when the setting ``name`` of ``config`` is below ``low``."""
    if getattr(config, name) < low:
        raise ConfigError(f"{name} must be >= {low}, got {getattr(config, name)}")


EXTENT_DECAY = 0.99
"""Decay of the running means :attr:`LiftingEnsemble.depth_extent` and
:attr:`LiftingEnsemble.rotation_spread`: about the last hundred steps."""


def depth_extent(depth: Tensor, vis: Tensor) -> Tensor:
    """Mean over the batch of the RMS of the centred depth (..., B, K) over the visible keypoints
    (vis (..., B, K)): (...)."""
    centred = (depth - masked_mean(depth, vis, dim=-1)[..., None]) * vis
    return (centred.square().sum(-1) / vis.sum(-1).clamp_min(1)).sqrt().mean(-1)


def lifting_artifacts(net: LiftingNet) -> dict[str, Tensor]:
    """A lifter's ``artifacts``: ``canonical_shape`` (K, 3), the shape of zero coefficients (the
    bias shape), and ``shape_basis`` (n, K, 3), the learned basis shapes (centred, unit RMS), of
    ``net``; normalised units. With a coefficient head also ``coefficient_layer`` (n, width),
    its weight ``W_g`` (row i: the feature direction that drives coefficient ``alpha_i``), whose
    mutual coherence Can et al. report (Table 5)."""
    out = {
        "canonical_shape": net.base_shape().detach().float(),
        "shape_basis": net.shape_basis.basis.detach().float(),
    }
    if net.alpha_head is not None:
        out["coefficient_layer"] = net.alpha_head.weight.detach().float()
    return out


def aligned_depth_mean(preds: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The first of several :func:`lifting_predictions` with the depth of ``kp3d`` replaced by
    the mean of all their depths, each multiplied per sample by the sign (+-1) that brings it
    closer to the first's (the depth-flip ambiguity of orthographic views); every other entry is
    the first's. One prediction is returned as it is."""
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
    return pred


class MemberBatch(NamedTuple):
    """A training batch as :meth:`LiftingEnsemble.member_losses` split it among the members:
    every field stacked (E, B_member, ...), member e's rows at index e."""

    norm: Normalised
    """The normalised keypoints (E, B_member, K, 2) and their statistics."""
    out: LiftingOutput
    """Each member's output on its rows."""
    vis: Tensor
    """(E, B_member, K) visibility weights."""
    category: Tensor
    """(E, B_member) category labels."""
    context: Tensor | None
    """(E, B_member, C) context vectors, or None."""


class LiftingEnsemble(nn.Module):
    """Lifting networks that train side by side and are averaged at prediction, for categories
    that share them (``lifter`` and ``lifter-fit``; see :class:`EnsembleLiftingConfig`).

    Each method's model derives from this and from :class:`kp3d.methods.base.MethodModel` (in
    that order) and adds what is its own: ``losses`` and ``predict`` on a batch call
    :meth:`member_losses` and :meth:`ensemble_predictions`.

    ``net`` is the (first) lifting network; ``ensemble`` holds the other members when
    ``config.ensemble > 1``.

    Members share no weights, so the sum of their losses (E x the mean over members, as they
    have as many rows each) trains each as if alone on its rows; the named losses are the
    members' means (:meth:`loss_weights`). Now and then a member ends in the degenerate
    solution of non-rigid structure from motion: it poses the views more alike than they are
    and explains the rest by deformation, with a wrong depth, too little (flattened) or, where
    the true depth is small (faces without their contour landmarks), too much. Neither the
    depth extent (the right one depends on the object and the keypoints) nor the 2D fit ranks
    the members, but the spread of the predicted rotations does: every right member sees the
    same spread of views, a degenerate one less. So each member's rotation spread is tracked in
    training (:attr:`rotation_spread`, beside :attr:`depth_extent`) and the members well below
    the widest are left out of the average (``ensemble_tolerance``; results: docs/results.md).
    """

    support: Tensor
    """(n_categories, K) bool: the keypoints seen visible per category, the subsets ``zeta_z``
    each category owns."""
    depth_extent: Tensor
    """(ensemble,) running mean over training steps of each member's depth extent on its rows:
    per sample, the RMS over the visible keypoints of the centred camera-frame depth, in the
    input's normalised units (the 2D RMS radius is 1); NaN before the first step."""
    rotation_spread: Tensor
    """(ensemble,) running mean over training steps of each member's
    :func:`~kp3d.geometry.rotations.rotation_spread` of its predicted rotations on its rows
    (radians: mean geodesic angle from their chordal mean); NaN before the first step."""

    def __init__(
        self, config: EnsembleLiftingConfig, member: Callable[[], LiftingNet], *, name: str
    ) -> None:
        """``member`` makes one network; ``name`` (the method's) starts the error messages."""
        super().__init__()
        if config.n_keypoints < 1:
            raise ConfigError(
                f"{name}: n_keypoints is not set (the number of keypoints K of the data)"
            )
        self.name = name
        self.config = config
        self.n_categories = config.n_categories or 1
        self.net = member()
        self.ensemble = nn.ModuleList(member() for _ in range(config.ensemble - 1))
        self.register_buffer(
            "support", torch.zeros(self.n_categories, config.n_keypoints, dtype=torch.bool)
        )
        self.register_buffer("depth_extent", torch.full((config.ensemble,), math.nan))
        self.register_buffer("rotation_spread", torch.full((config.ensemble,), math.nan))
        self._kept: list[int] | None = None
        """The kept members' indices as of the last ``eval()``, for export (see ``train``)."""

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Runs saved before extents (or spreads) were tracked load with NaN: they keep the
        # members they kept then (see kept_members).
        for name in ("depth_extent", "rotation_spread"):
            state_dict.setdefault(prefix + name, torch.full_like(getattr(self, name), math.nan))
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._kept = None

    def train(self, mode: bool = True) -> LiftingEnsemble:
        # `torch.export` cannot branch on buffer values, so the graph `kp3d export` traces
        # takes the kept members chosen here, when the model leaves training.
        super().train(mode)
        self._kept = None if mode else self._kept_indices()
        return self

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
                f"{self.name}: the data has category labels {int(category.min())}..."
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
                f"{self.name}: ensemble_batches = split needs at least one sample per "
                f"member, got a batch of {batch_size} for {n} members"
            )
        size = batch_size // n
        return [slice(i * size, (i + 1) * size) for i in range(n)]

    def kept_members(self) -> list[LiftingNet]:
        """The members a prediction averages, in order: those whose :attr:`rotation_spread` is
        at least (1 - ``ensemble_tolerance``) times the widest member's. Runs saved before
        spreads were tracked keep their old rule, the same on :attr:`depth_extent` (so they
        predict as they did); before training (NaN), all."""
        exporting = torch.compiler.is_exporting() and self._kept is not None
        kept = self._kept if exporting else self._kept_indices()
        return [self.members[i] for i in kept]

    def _kept_indices(self) -> list[int]:
        """The indices of :meth:`kept_members`, from the tracked spreads."""
        score = self.rotation_spread
        if bool(score.isnan().any()):
            score = self.depth_extent
        if bool(score.isnan().any()):
            return list(range(len(self.members)))
        keep = score >= (1 - self.config.ensemble_tolerance) * score.max()
        return [i for i, k in enumerate(keep.tolist()) if k]

    def ensemble_summary(self) -> dict[str, list[float | None] | list[int]]:
        """With several members, for a run's ``result.json``: each member's
        ``member_depth_extent`` and ``member_rotation_spread_deg`` (None before training) and
        the indices of the ``kept_members``; empty with one."""
        if len(self.members) == 1:
            return {}

        def listed(t: Tensor) -> list[float | None]:
            return [None if math.isnan(x) else x for x in t.tolist()]

        kept = {id(net) for net in self.kept_members()}
        return {
            "member_depth_extent": listed(self.depth_extent),
            "member_rotation_spread_deg": listed(self.rotation_spread * (180 / math.pi)),
            "kept_members": [i for i, net in enumerate(self.members) if id(net) in kept],
        }

    def loss_weights(self) -> dict[str, float]:
        """E for each member mean of :meth:`member_losses` (see the class doc)."""
        E = len(self.members)
        return {"reprojection": E, "shape_prior": E * self.config.shape_prior_weight}

    def member_losses(
        self,
        kp2d: Tensor,
        vis: Tensor | None,
        category: Tensor | None,
        context: Tensor | None = None,
        *,
        target: Tensor | None = None,
        target_vis: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], MemberBatch]:
        """The unweighted losses shared by the ensemble lifters for keypoints (B, K, 2),
        visibility (B, K), categories (B,) and an optional context (B, C), means over the
        members: ``reprojection``, and ``shape_prior`` where weighted. The reprojection
        compares with the input keypoints, or with ``target`` (B, K, 2) where given (labelled
        keypoints, NaN where absent, with their visibility ``target_vis`` (B, K)) in the
        input's normalisation: a lifter fed a detector's keypoints then learns to reproject
        onto the labels, not onto the detector's errors. Also updates
        :attr:`support` and, in training with several members, :attr:`depth_extent` and
        :attr:`rotation_spread`; returns
        the batch as the members saw it, for a method's further losses."""
        cfg = self.config
        w = visibility(kp2d, vis)
        category = self.categories(category, kp2d.shape[0], kp2d.device)
        self.update_support(w, category)
        rows = self.member_rows(kp2d.shape[0])

        def stack(t: Tensor) -> Tensor:  # (E, B_member, ...): each member's rows
            return torch.stack([t[r] for r in rows])

        ww, cat = stack(w), stack(category)
        ctx = None if context is None else stack(context)
        kk = stack(kp2d)
        norm, out = self.lift_members(kk, ww, ctx)
        E = len(self.members)
        if target is None and cfg.reprojection_points == "visible":
            goal, goal_w = norm.kp2d, ww
        else:
            # Keypoints other than the visible inputs, in the units of the visible inputs'
            # normalisation: every keypoint of the category ("all"), or labelled ones.
            points = kk if target is None else stack(target)
            if target is None or cfg.reprojection_points == "all":
                goal_w = self.support[cat].to(kk.dtype) * points.isfinite().all(-1)
            else:
                goal_w = stack(visibility(target, target_vis)) * points.isfinite().all(-1)
            points = torch.nan_to_num(points)  # absent labels: weight 0, must be finite
            goal = (points - norm.centre[..., None, :]) / norm.scale[..., None, None]
        losses = {
            "reprojection": reprojection_loss(out.shape_cam, goal, goal_w, delta=cfg.huber_delta)
        }
        if cfg.shape_prior_weight > 0:
            # Each member's categories are groups of their own.
            groups = cat + self.n_categories * torch.arange(E, device=cat.device)[:, None]
            losses["shape_prior"] = shape_prior_loss(
                out.basis_shape.flatten(0, 1), groups.flatten(), self.support[cat].flatten(0, 1)
            )
        if self.training and E > 1:  # only training steps of an ensemble track them
            R = out.R.detach()
            for old, new in (
                (self.depth_extent, depth_extent(out.shape_cam[..., 2].detach(), ww)),
                (self.rotation_spread, torch.stack([rotation_spread(r) for r in R])),
            ):
                new = new.to(old)
                old.copy_(torch.where(old.isnan(), new, old.lerp(new, 1 - EXTENT_DECAY)))
        return losses, MemberBatch(norm, out, ww, cat, ctx)

    def member_output(
        self, net: LiftingNet, norm: Normalised, out: LiftingOutput, vis: Tensor
    ) -> LiftingOutput:
        """What a prediction uses of member ``net``'s output ``out`` for the normalised input
        ``norm`` with visibility weights ``vis`` (B, K): ``out`` itself; a method may refine
        it."""
        return out

    @torch.no_grad()
    def ensemble_predictions(
        self, kp2d: Tensor, vis: Tensor | None, context: Tensor | None = None
    ) -> dict[str, Tensor]:
        """:func:`lifting_predictions` of keypoints (B, K, 2) with visibility (B, K) and an
        optional context (B, C): with an ensemble, ``kp3d``'s depth is the
        :func:`aligned_depth_mean` of the :meth:`kept_members`' depths; every other entry
        (``R``, ``alpha``, ``shape``) is the first kept member's."""
        preds = []
        for net in self.kept_members():
            norm, out = self.lift(kp2d, vis, context, net=net)
            out = self.member_output(net, norm, out, visibility(kp2d, vis))
            preds.append(lifting_predictions(out, norm, vis))
        return aligned_depth_mean(preds)

    def artifacts(self) -> dict[str, Tensor]:
        """:func:`lifting_artifacts` of ``net``."""
        return lifting_artifacts(self.net)


class CycleLosses(NamedTuple):
    """The two terms of Can et al.'s cyclic self-supervision (scalars)."""

    camera: Tensor
    """``rho(|| R(Y~) - R~ ||_F)``, mean over the batch."""
    shape: Tensor
    """``rho(|| s~ X(Y~) - X(Y) ||)`` over the category's keypoints, mean over the batch."""


def cycle_losses(
    net: LiftingNet,
    out: LiftingOutput,
    support: Tensor,
    context: Tensor | None = None,
    generator: torch.Generator | None = None,
    *,
    delta: float,
) -> CycleLosses:
    """Camera and shape losses of the augmented views ``Y~ = Pi(R~ X)`` of the shapes ``X`` in
    ``out`` that ``net`` predicted (Can et al.'s cycle; see :mod:`kp3d.methods.lifter.model`):
    ``Y~`` (normalised over ``support`` (B, K), each sample's category keypoints) goes through
    ``net`` again (with ``context`` (B, C)), which must recover ``R~`` and, at the scale ``s~``
    of ``Y~``, the shape. ``delta``: the pseudo-Huber scale.

    Nothing is detached: as with C3DPO's canonicalisation, the gradient also reaches the
    original prediction, pushing the shape space towards one in which a view determines both
    the shape and the rotation.
    """
    X = out.shape
    support = support.to(X.dtype)
    R = random_rotation(X.shape[0], generator=generator, dtype=X.dtype, device=X.device)
    norm = normalise_keypoints((X @ R.transpose(-1, -2))[..., :2], support)
    cyc = net(norm.kp2d, support, context)
    X_cyc = cyc.shape * norm.scale[..., None, None]
    # Both shapes are compared about their centroids over the category's own keypoints.
    X_cyc = X_cyc - masked_mean(X_cyc, support[..., None], dim=-2)[..., None, :]
    X = X - masked_mean(X, support[..., None], dim=-2)[..., None, :]
    return CycleLosses(
        camera=rotation_loss(cyc.R, R, delta=delta),
        shape=point_loss(X_cyc, X, support, delta=delta),
    )


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode (running statistics, not updated):
    the lifters' cycle phase, whose synthetic views must not shift the statistics that real
    inputs see."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
