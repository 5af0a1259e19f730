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

from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kp3d.geometry.rotations import axis_angle_to_matrix, rotation_6d_to_matrix

NormKind = Literal["batch", "layer", "none"]
RotationKind = Literal["axis_angle", "6d"]
CoefficientKind = Literal["linear", "relu"]
CameraKind = Literal["orthographic", "weak_perspective"]

_EPS = 1e-8


class Normalised(NamedTuple):
    """Keypoints in lifter units and the statistics that map back to the input's units."""

    kp2d: Tensor
    """(..., K, 2) ``(y - centre) / scale`` at visible points, 0 at invisible ones."""
    centre: Tensor
    """(..., 2) mean of the visible input keypoints."""
    scale: Tensor
    """(...) RMS distance of the visible keypoints from ``centre``, in input units."""


def visibility(kp2d: Tensor, vis: Tensor | None) -> Tensor:
    """``vis`` as a float mask (..., K) of the dtype of ``kp2d``; all ones when ``vis`` is None."""
    if vis is None:
        return torch.ones_like(kp2d[..., 0])
    return vis.to(kp2d.dtype)


def masked_mean(x: Tensor, mask: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only entries where ``mask`` (broadcastable) is 1.

    An all-zero mask gives 0 (not NaN), so samples with nothing visible contribute nothing.
    """
    mask = mask.expand_as(x)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(_EPS)


def normalise_keypoints(kp2d: Tensor, vis: Tensor | None = None) -> Normalised:
    """Centre the visible keypoints and scale them to unit RMS distance from their centre.

    Args:
        kp2d: (..., K, 2) keypoints in any units (pixels).
        vis: (..., K) visibility (bool or {0, 1}); None = all visible.

    Returns:
        :class:`Normalised`. A sample whose visible points coincide (or with none visible) gets
        ``scale`` clamped to a tiny positive value rather than a division by zero.
    """
    w = visibility(kp2d, vis)
    centre = masked_mean(kp2d, w[..., None], dim=-2)
    centred = (kp2d - centre[..., None, :]) * w[..., None]
    scale = masked_mean(centred.square().sum(-1), w, dim=-1).sqrt().clamp_min(_EPS)
    return Normalised(centred / scale[..., None, None], centre, scale)


def orthographic_translation(projected: Tensor, kp2d: Tensor, vis: Tensor | None = None) -> Tensor:
    """The 2D translation ``t`` (..., 2) minimising ``sum_visible ||projected_k + t - kp2d_k||^2``.

    Args:
        projected: (..., K, 2) the x, y of camera-frame points.
        kp2d: (..., K, 2) observed keypoints; vis: (..., K) as in :func:`normalise_keypoints`.
    """
    w = visibility(kp2d, vis)[..., None]
    return masked_mean(kp2d - projected, w, dim=-2)


def weak_perspective_scale(projected: Tensor, kp2d: Tensor, vis: Tensor | None = None) -> Tensor:
    """The scale ``s`` (...) minimising ``sum_visible ||s p_k + t - y_k||^2`` over ``s`` and ``t``.

    ``s = <p~, y~> / <p~, p~>`` for the visible points centred on their means; clamped to a tiny
    positive value, because ``s < 0`` would mirror the depth as well (an improper motion).
    """
    w = visibility(kp2d, vis)[..., None]
    p = (projected - masked_mean(projected, w, dim=-2)[..., None, :]) * w
    y = (kp2d - masked_mean(kp2d, w, dim=-2)[..., None, :]) * w
    return ((p * y).sum((-2, -1)) / p.square().sum((-2, -1)).clamp_min(_EPS)).clamp_min(_EPS)


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
            _norm_layer(norm, width), nn.ReLU(), nn.Linear(width, width),
            _norm_layer(norm, width), nn.ReLU(), nn.Linear(width, width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class Trunk(nn.Module):
    """Residual MLP: (B, dim_in) -> (B, width) features, normalised and activated at the end."""

    def __init__(self, dim_in: int, *, width: int = 256, n_layers: int = 3,
                 norm: NormKind = "batch") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, width),
            *(ResidualBlock(width, norm=norm) for _ in range(n_layers)),
            _norm_layer(norm, width), nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def stacked_forward(modules: Sequence[nn.Module], x: Tensor) -> Tensor:
    """Run E modules of one architecture, each on its own input, as one batched network.

    The same function as ``torch.stack([m(x[e]) for e, m in enumerate(modules)])``, weights,
    gradients and BatchNorm statistics included, but normalisations, activations and residual
    sums run once for all E (an ensemble's members are small networks, so running them one by
    one cost more in per-operation overhead than in arithmetic). Handles the layers of
    :class:`Trunk` and ``nn.Linear``.

    Args:
        modules: E modules of identical structure.
        x: (E, B, D) inputs.

    Returns:
        (E, B, D') outputs.
    """
    first = modules[0]
    if isinstance(first, (Trunk, ResidualBlock)):
        inner = stacked_forward([m.net for m in modules], x)
        return x + inner if isinstance(first, ResidualBlock) else inner
    if isinstance(first, nn.Sequential):
        for layers in zip(*modules, strict=True):
            x = stacked_forward(layers, x)
        return x
    if isinstance(first, nn.Linear):
        # One product per member: stacking the weights for a batched product cost more (a copy
        # of every weight per step, and CPU bmm is slow on the transposed inputs of backward).
        return torch.stack([m(xe) for m, xe in zip(modules, x.unbind(0), strict=True)])
    if isinstance(first, nn.BatchNorm1d):
        return _stacked_batch_norm(modules, x)
    if isinstance(first, nn.LayerNorm):
        y = F.layer_norm(x, first.normalized_shape, eps=first.eps)
        return (y * torch.stack([m.weight for m in modules])[:, None]
                + torch.stack([m.bias for m in modules])[:, None])
    if isinstance(first, (nn.ReLU, nn.Identity)):
        return first(x)
    raise TypeError(f"stacked_forward: no batched form for {type(first).__name__}")


def _stacked_batch_norm(modules: Sequence[nn.Module], x: Tensor) -> Tensor:
    """BatchNorm1d of E members as one BatchNorm over their E x C channels (each member's
    channels see only its own rows); running statistics are read from and written back to the
    members' buffers, as each member's own forward would."""
    E, B, C = x.shape
    bn = modules[0]
    if not (isinstance(bn, nn.BatchNorm1d) and bn.affine and bn.track_running_stats):
        raise TypeError("stacked_forward: BatchNorm1d needs affine=True, track_running_stats=True")
    momentum = bn.momentum
    if bn.training:
        torch._foreach_add_([m.num_batches_tracked for m in modules], 1)  # type: ignore[misc]
        if momentum is None:  # cumulative average, as nn.BatchNorm1d
            momentum = 1.0 / float(bn.num_batches_tracked)  # type: ignore[arg-type]
    mean = torch.cat([m.running_mean for m in modules])  # type: ignore[misc]
    var = torch.cat([m.running_var for m in modules])  # type: ignore[misc]
    y = F.batch_norm(
        x.transpose(0, 1).reshape(B, E * C), mean, var,
        torch.cat([m.weight for m in modules]), torch.cat([m.bias for m in modules]),
        training=bn.training, momentum=momentum, eps=bn.eps,
    )
    if bn.training:
        torch._foreach_copy_(
            [b for m in modules for b in (m.running_mean, m.running_var)],  # type: ignore[misc]
            [b for mv in zip(mean.view(E, C), var.view(E, C), strict=True) for b in mv],
        )
    return y.view(B, E, C).transpose(0, 1)


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
    return V / V.square().sum(-1).mean(-1).sqrt().clamp_min(_EPS)[..., None, None]


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

    def __init__(self, n_basis: int, n_keypoints: int, *, lr_scale: float = 10.0,
                 motion_free: bool = False) -> None:
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
        shape = self.bias + torch.einsum("...n,nkc->...kc", alpha, self.basis)
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

    Coefficients: predicted by a head (``coefficient_ridge = 0``; ``coefficients`` = linear or
    relu), or, with ``coefficient_ridge > 0``, fitted to the view in closed form for the
    predicted rotation (:meth:`fitted_output`; no head then). ``motion_free_basis``: see
    :class:`ShapeBasis`.
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
        coefficient_ridge: float = 0.0,
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
        self.coefficient_ridge = coefficient_ridge
        self.trunk = Trunk(3 * n_keypoints + context_dim, width=width, n_layers=n_layers, norm=norm)
        self.rotation_head = nn.Linear(width, rotation_dim(rotation))
        # With fitted coefficients a head would be unused (and DDP rejects parameters without
        # gradients), so there is none.
        self.alpha_head = nn.Linear(width, n_basis) if coefficient_ridge <= 0 else None
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
            shape = shape / shape.square().sum(-1).mean(-1).sqrt().clamp_min(_EPS)[..., None, None]
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
            return self.fitted_output(R, kp2d, vis)
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

    def fitted_output(self, R: Tensor, kp2d: Tensor, vis: Tensor) -> LiftingOutput:
        """The output for rotations ``R`` (B, 3, 3) with the shape fitted to the view
        (:func:`fitted_output` with this network's :meth:`fit_shapes`)."""
        return fitted_output(R, self.fit_shapes(), kp2d, vis, ridge=self.coefficient_ridge,
                             camera=self.camera)

    def fit_shapes(self) -> Tensor:
        """(1 + n_basis, K, 3) the centred bias ``b_S`` and the basis shapes, the shapes that
        :meth:`fitted_output` combines."""
        return fit_shapes([self])[0]

    def refine_rotations(self, R: Tensor, kp2d: Tensor, vis: Tensor, *, steps: int,
                         lr: float = 1e-2) -> LiftingOutput:
        """Test-time refinement of the rotations (B, 3, 3) of :meth:`fitted_output` per sample.

        Each rotation is refined by ``steps`` Adam steps (learning rate ``lr``, on an axis-angle
        update) on the objective of :func:`fit_shape_coefficients` (reprojection error + ridge),
        from the predicted rotation and from its depth-reversed twin ``D R D`` (``D`` =
        diag(1, 1, -1), the other side of the Necker ambiguity); each sample keeps the better
        one. Uses only the 2D input; the network's parameters are left untouched.
        """
        if self.coefficient_ridge <= 0:
            raise ValueError(
                "refine_rotations needs the fitted coefficients (coefficient_ridge > 0)"
            )
        shapes = self.fit_shapes().detach()
        flip = torch.diag(R.new_tensor([1.0, 1.0, -1.0]))
        refined, objective = [], []
        for R0 in (R.detach(), flip @ R.detach() @ flip):
            omega = R0.new_zeros(R0.shape[0], 3, requires_grad=True)
            opt = torch.optim.Adam([omega], lr=lr)
            for _ in range(steps):
                with torch.enable_grad():
                    obj = ridge_fit(axis_angle_to_matrix(omega) @ R0, shapes, kp2d, vis,
                                    self.coefficient_ridge)[1]
                    (omega.grad,) = torch.autograd.grad(obj.sum(), [omega])
                opt.step()
            with torch.no_grad():
                refined.append(axis_angle_to_matrix(omega) @ R0)
                objective.append(ridge_fit(refined[-1], shapes, kp2d, vis,
                                           self.coefficient_ridge)[1])
        # Ties keep the prediction's side.
        better = objective[1] < objective[0]
        return self.fitted_output(torch.where(better[:, None, None], refined[1], refined[0]),
                                  kp2d, vis)


def fitted_output(R: Tensor, shapes: Tensor, kp2d: Tensor, vis: Tensor, *, ridge: float,
                  camera: CameraKind) -> LiftingOutput:
    """A lifter's output for rotations ``R`` with the shape fitted to each view.

    The canonical shape ``c b_S + sum_i beta_i S_i`` minimises, in closed form,
    ``sum_visible ||Pi(R X)_k + t - y_k||^2 + ridge ||beta||^2`` over the scale ``c``, the
    coefficients ``beta`` and the translation ``t`` (:func:`fit_shape_coefficients`): no
    amortisation gap, and a Gaussian prior on the deformation. ``alpha = beta / c``; the
    coefficients' sign constraint (``relu``) does not apply.

    Args:
        R: (*E, B, 3, 3) rotations; kp2d: (*E, B, K, 2) normalised keypoints; vis: (*E, B, K).
        shapes: (*E, 1 + n, K, 3) the bias and basis shapes (:meth:`LiftingNet.fit_shapes`);
            the optional leading axes ``E`` hold separate shape models (ensemble members).
    """
    coef = fit_shape_coefficients(R, shapes, kp2d, vis, ridge)
    shape = (coef @ shapes.flatten(-2)).unflatten(-1, shapes.shape[-2:])
    c = coef[..., 0]
    c = torch.where(c.abs() < _EPS, torch.full_like(c, _EPS), c)
    basis_shape = shape
    if camera == "weak_perspective":
        rms = shape.square().sum(-1).mean(-1).sqrt().clamp_min(_EPS)
        basis_shape = shape / rms[..., None, None]
    return LiftingOutput(R, coef[..., 1:] / c[..., None], basis_shape, shape,
                         shape @ R.transpose(-1, -2))


def fit_shapes(nets: Sequence[LiftingNet]) -> Tensor:
    """(E, 1 + n_basis, K, 3) :meth:`LiftingNet.fit_shapes` of E networks, computed as one."""
    shape_basis = nets[0].shape_basis
    bias = shape_basis.lr_scale * torch.stack([m.shape_basis.raw_bias for m in nets])
    basis = basis_shapes(torch.stack([m.shape_basis.raw_basis for m in nets]), bias,
                         motion_free=shape_basis.motion_free)
    return torch.cat([(bias - bias.mean(-2, keepdim=True))[:, None], basis], dim=1)


def stacked_lift(nets: Sequence[LiftingNet], kp2d: Tensor, vis: Tensor,
                 context: Tensor | None = None) -> LiftingOutput:
    """E networks with fitted coefficients (``coefficient_ridge > 0``), each on its own batch,
    as one batched pass (:func:`stacked_forward`): the outputs of ``nets[e](kp2d[e], vis[e],
    context[e])`` stacked, with a leading axis E on every field.

    Args:
        nets: E networks of one configuration.
        kp2d: (E, B, K, 2) normalised keypoints; vis: (E, B, K); context: (E, B, C).
    """
    net = nets[0]
    if net.alpha_head is not None:
        raise ValueError("stacked_lift: only for networks with fitted coefficients")
    f = stacked_forward([m.trunk for m in nets], net.trunk_input(kp2d, vis, context))
    R = rotation_from_params(stacked_forward([m.rotation_head for m in nets], f), net.rotation)
    return fitted_output(R, fit_shapes(nets), kp2d, vis, ridge=net.coefficient_ridge,
                         camera=net.camera)


class RidgeSystem(NamedTuple):
    """The normal equations of :func:`fit_shape_coefficients` for a batch of views."""

    gram: Tensor
    """(B, n, n) ``A A^T``, with ``A`` (B, n, 2K) the centred projections of the n shapes at the
    visible points (one row per coefficient)."""
    rhs: Tensor
    """(B, n) ``A y``, with ``y`` (B, 2K) the centred view, zero at invisible points."""
    yy: Tensor
    """(B,) ``y . y``, for the objective's value."""


def _ridge_system(R: Tensor, shapes: Tensor, kp2d: Tensor, vis: Tensor | None) -> RidgeSystem:
    """Build :class:`RidgeSystem` without forming ``A``: the projections are linear in the
    shapes, so ``A A^T = sum_i r_i^T M r_i`` over the two image rows ``r_i`` of ``R``, with the
    3 x 3 blocks ``M_ab = sum_k w_k s~_ak s~_bk^T`` of the shapes' second moments (shared by the
    batch when every point is visible), and ``A y = sum_k s_ak . (R_xy^T y_k)``. This avoids
    (B, n, K, 2) intermediates, which dominated a training step's time and memory. Shapes
    (*E, n, K, 3) with leading axes go with views (*E, B, ...)."""
    w = visibility(kp2d, vis)
    S = shapes - shapes.mean(-2, keepdim=True)  # (*E, n, K, 3)
    n, K = S.shape[-3:-1]
    lead = kp2d.shape[:-2]  # (*E, B)
    y = (kp2d - masked_mean(kp2d, w[..., None], dim=-2)[..., None, :]) * w[..., None]
    Rxy = R[..., :2, :]
    # y sums to 0 over the points, so the shapes' own (visible) centring drops out of A y.
    # Plain matrix products: einsum's batched products of 3-wide matrices were 7x slower here.
    rhs = (y @ Rxy).flatten(-2) @ S.flatten(-2).transpose(-1, -2)
    # sum_i r_i^T M r_i = <Rxy^T Rxy, M>: contract the 3 x 3 blocks with one product per sample.
    P = (Rxy.transpose(-1, -2) @ Rxy).flatten(-2)  # (*E, B, 9)
    if vis is None or bool((w == 1).all()):
        M = torch.einsum("...akc,...ekd->...cdae", S, S)  # shapes centred over all points
        gram = (P @ M.reshape(*S.shape[:-3], 9, n * n)).unflatten(-1, (n, n))
    else:
        St = S.transpose(-3, -2)  # (*E, K, n, 3)
        outer = torch.einsum("...kac,...ked->...kaecd", St, St)
        count = w.sum(-1).clamp_min(_EPS)
        m = torch.einsum("...bk,...nkc->...bnc", w, S) / count[..., None, None]  # visible means
        M = (w @ outer.reshape(*S.shape[:-3], K, -1)).reshape(*lead, n, n, 3, 3)
        M = M - count[..., None, None, None, None] * torch.einsum("...bac,...bed->...baecd", m, m)
        gram = (M.reshape(*lead, n * n, 9) @ P[..., None]).reshape(*lead, n, n)
    return RidgeSystem(gram, rhs, y.square().sum((-2, -1)))


def _ridge_weights(shapes: Tensor, ridge: float) -> Tensor:
    """(n,) the ridge weight of each shape's coefficient: 0 for the bias, ``ridge`` otherwise."""
    reg = torch.full((shapes.shape[-3],), ridge, dtype=shapes.dtype, device=shapes.device)
    reg[0] = 0.0
    return reg


def _solve_ridge(system: RidgeSystem, reg: Tensor) -> Tensor:
    """argmin_c ||c A - y||^2 + sum_j reg_j c_j^2 per sample: (B, n), solved in float64 and cast
    back (the n x n system is formed in the input's dtype; the ridge keeps it well
    conditioned)."""
    G = system.gram.double() + torch.diag(reg.double() + 1e-9)
    coef = torch.linalg.solve(G, system.rhs.double()[..., None])[..., 0]
    return coef.to(system.rhs.dtype)


def ridge_fit(R: Tensor, shapes: Tensor, kp2d: Tensor, vis: Tensor | None,
              ridge: float) -> tuple[Tensor, Tensor]:
    """:func:`fit_shape_coefficients` and the optimum's objective (B,) (residual + ridge term)."""
    system = _ridge_system(R, shapes, kp2d, vis)
    reg = _ridge_weights(shapes, ridge)
    coef = _solve_ridge(system, reg)
    # ||c A - y||^2 = c G c - 2 c . A y + y . y, evaluated in float64 against cancellation.
    c, G = coef.double(), system.gram.double()
    objective = (torch.einsum("...a,...ae,...e->...", c, G, c)
                 - 2 * (c * system.rhs.double()).sum(-1)
                 + system.yy.double() + (reg.double() * c.square()).sum(-1))
    return coef, objective.to(coef.dtype)


def fit_shape_coefficients(R: Tensor, shapes: Tensor, kp2d: Tensor, vis: Tensor | None,
                           ridge: float) -> Tensor:
    """Coefficients (B, n) of the shapes (n, K, 3) whose combination best explains each view.

    Minimises ``sum_visible ||Pi(R sum_j c_j X_j)_k + t - y_k||^2 + ridge sum_{j >= 1} c_j^2``
    over ``c`` and ``t`` (the first shape, the bias, is not penalised): a linear least-squares
    problem per sample, solved in closed form (differentiable in ``R``, the shapes and ``kp2d``).

    Args:
        R: (B, 3, 3) rotations; kp2d: (B, K, 2) keypoints; vis: (B, K) visibility. With shapes
            (*E, n, K, 3), leading axes on all of them: (*E, B, ...).
    """
    return _solve_ridge(_ridge_system(R, shapes, kp2d, vis), _ridge_weights(shapes, ridge))


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
    return {"kp3d": kp3d, "R": out.R, "alpha": out.alpha, "shape": out.shape * s,
            "scale": norm.scale, "centre": norm.centre}
