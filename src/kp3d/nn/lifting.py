"""Shared parts of kp3d's 2D→3D lifters (``c3dpo`` and ``lifter``).

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
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

# The keypoint formulas live in kp3d.geometry.keypoints; imported here for the lifters.
from kp3d.geometry.keypoints import (  # noqa: F401
    Normalised,
    masked_mean,
    normalise_keypoints,
    orthographic_translation,
    rms_radius,
    weak_perspective_scale,
)
from kp3d.geometry.keypoints import visibility_weights as visibility
from kp3d.geometry.rotations import axis_angle_to_matrix, rotation_6d_to_matrix
from kp3d.nn.shape import linear_shape

NormKind = Literal["batch", "layer", "none"]
RotationKind = Literal["axis_angle", "6d"]
CoefficientKind = Literal["linear", "relu"]
CameraKind = Literal["orthographic", "weak_perspective"]

_EPS = 1e-8


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
        # the size of the normalised inputs.
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
