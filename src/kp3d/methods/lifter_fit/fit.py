"""``lifter-fit``'s algorithm: the shape fitted to each view in closed form, ensemble members
run as one batched network, and the per-view refinement of the rotation.

Moved here from :mod:`kp3d.nn.lifting` (which keeps the blocks shared with ``c3dpo`` and
``lifter``: the trunk, the shape basis, normalisation); the functions are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kp3d.geometry.keypoints import rms_radius
from kp3d.geometry.rotations import axis_angle_to_matrix
from kp3d.nn.lifting import (
    _EPS,
    CameraKind,
    LiftingNet,
    LiftingNetOptions,
    LiftingOutput,
    ResidualBlock,
    Trunk,
    basis_shapes,
    masked_mean,
    rotation_from_params,
    visibility,
)


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
        return (
            y * torch.stack([m.weight for m in modules])[:, None]
            + torch.stack([m.bias for m in modules])[:, None]
        )
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
        x.transpose(0, 1).reshape(B, E * C),
        mean,
        var,
        torch.cat([m.weight for m in modules]),
        torch.cat([m.bias for m in modules]),
        training=bn.training,
        momentum=momentum,
        eps=bn.eps,
    )
    if bn.training:
        torch._foreach_copy_(
            [b for m in modules for b in (m.running_mean, m.running_var)],  # type: ignore[misc]
            [b for mv in zip(mean.view(E, C), var.view(E, C), strict=True) for b in mv],
        )
    return y.view(B, E, C).transpose(0, 1)


class FitNet(LiftingNet):
    """A :class:`~kp3d.nn.lifting.LiftingNet` without coefficient head: the shape
    ``c b_S + sum_i beta_i S_i`` is fitted to each view in closed form for the predicted
    rotation (:func:`fitted_output`), with the ridge weight ``coefficient_ridge`` (> 0) on
    ``beta``."""

    def __init__(
        self, n_keypoints: int, *, coefficient_ridge: float, **options: Unpack[LiftingNetOptions]
    ) -> None:
        """``options``: those of :class:`~kp3d.nn.lifting.LiftingNet`, with its defaults."""
        if coefficient_ridge <= 0:
            raise ValueError(f"FitNet needs coefficient_ridge > 0, got {coefficient_ridge}")
        super().__init__(n_keypoints, coefficient_head=False, **options)
        self.coefficient_ridge = coefficient_ridge

    def forward(self, kp2d: Tensor, vis: Tensor, context: Tensor | None = None) -> LiftingOutput:
        """kp2d (B, K, 2) normalised and zero where invisible; vis (B, K); context (B, C)."""
        f = self.trunk(self.trunk_input(kp2d, vis, context))
        return self.fitted_output(
            rotation_from_params(self.rotation_head(f), self.rotation), kp2d, vis
        )

    def fitted_output(self, R: Tensor, kp2d: Tensor, vis: Tensor) -> LiftingOutput:
        """The output for rotations ``R`` (B, 3, 3) with the shape fitted to the view
        (:func:`fitted_output` with this network's :meth:`fit_shapes`)."""
        return fitted_output(
            R, self.fit_shapes(), kp2d, vis, ridge=self.coefficient_ridge, camera=self.camera
        )

    def fit_shapes(self) -> Tensor:
        """(1 + n_basis, K, 3) the centred bias ``b_S`` and the basis shapes, the shapes that
        :meth:`fitted_output` combines."""
        return fit_shapes([self])[0]

    def refine_rotations(
        self, R: Tensor, kp2d: Tensor, vis: Tensor, *, steps: int, lr: float = 1e-2
    ) -> LiftingOutput:
        """Test-time refinement of the rotations (B, 3, 3) of :meth:`fitted_output` per sample.

        Each rotation is refined by ``steps`` Adam steps (learning rate ``lr``, on an axis-angle
        update) on the objective of :func:`fit_shape_coefficients` (reprojection error + ridge),
        from the predicted rotation and from its depth-reversed twin ``D R D`` (``D`` =
        diag(1, 1, -1), the other side of the Necker ambiguity); each sample keeps the better
        one. Uses only the 2D input; the network's parameters are left untouched.
        """
        shapes = self.fit_shapes().detach()
        flip = torch.diag(R.new_tensor([1.0, 1.0, -1.0]))
        refined, objective = [], []
        for R0 in (R.detach(), flip @ R.detach() @ flip):
            omega = R0.new_zeros(R0.shape[0], 3, requires_grad=True)
            opt = torch.optim.Adam([omega], lr=lr)
            for _ in range(steps):
                with torch.enable_grad():
                    obj = ridge_fit(
                        axis_angle_to_matrix(omega) @ R0, shapes, kp2d, vis, self.coefficient_ridge
                    )[1]
                    (omega.grad,) = torch.autograd.grad(obj.sum(), [omega])
                opt.step()
            with torch.no_grad():
                refined.append(axis_angle_to_matrix(omega) @ R0)
                objective.append(
                    ridge_fit(refined[-1], shapes, kp2d, vis, self.coefficient_ridge)[1]
                )
        # Ties keep the prediction's side.
        better = objective[1] < objective[0]
        return self.fitted_output(
            torch.where(better[:, None, None], refined[1], refined[0]), kp2d, vis
        )


def fitted_output(
    R: Tensor, shapes: Tensor, kp2d: Tensor, vis: Tensor, *, ridge: float, camera: CameraKind
) -> LiftingOutput:
    """A lifter's output for rotations ``R`` with the shape fitted to each view.

    The canonical shape ``c b_S + sum_i beta_i S_i`` minimises, in closed form,
    ``sum_visible ||Pi(R X)_k + t - y_k||^2 + ridge ||beta||^2`` over the scale ``c``, the
    coefficients ``beta`` and the translation ``t`` (:func:`fit_shape_coefficients`): no
    amortisation gap, and a Gaussian prior on the deformation. ``alpha = beta / c``; the
    coefficients' sign constraint (``relu``) does not apply.

    Args:
        R: (*E, B, 3, 3) rotations; kp2d: (*E, B, K, 2) normalised keypoints; vis: (*E, B, K).
        shapes: (*E, 1 + n, K, 3) the bias and basis shapes (:meth:`FitNet.fit_shapes`);
            the optional leading axes ``E`` hold separate shape models (ensemble members).
    """
    coef = fit_shape_coefficients(R, shapes, kp2d, vis, ridge)
    shape = (coef @ shapes.flatten(-2)).unflatten(-1, shapes.shape[-2:])
    c = coef[..., 0]
    c = torch.where(c.abs() < _EPS, torch.full_like(c, _EPS), c)
    basis_shape = shape
    if camera == "weak_perspective":
        rms = rms_radius(shape).clamp_min(_EPS)
        basis_shape = shape / rms[..., None, None]
    return LiftingOutput(
        R, coef[..., 1:] / c[..., None], basis_shape, shape, shape @ R.transpose(-1, -2)
    )


def fit_shapes(nets: Sequence[FitNet]) -> Tensor:
    """(E, 1 + n_basis, K, 3) :meth:`FitNet.fit_shapes` of E networks, computed as one."""
    shape_basis = nets[0].shape_basis
    bias = shape_basis.lr_scale * torch.stack([m.shape_basis.raw_bias for m in nets])
    basis = basis_shapes(
        torch.stack([m.shape_basis.raw_basis for m in nets]),
        bias,
        motion_free=shape_basis.motion_free,
    )
    return torch.cat([(bias - bias.mean(-2, keepdim=True))[:, None], basis], dim=1)


def stacked_lift(
    nets: Sequence[FitNet], kp2d: Tensor, vis: Tensor, context: Tensor | None = None
) -> LiftingOutput:
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
    return fitted_output(
        R, fit_shapes(nets), kp2d, vis, ridge=net.coefficient_ridge, camera=net.camera
    )


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


def ridge_fit(
    R: Tensor, shapes: Tensor, kp2d: Tensor, vis: Tensor | None, ridge: float
) -> tuple[Tensor, Tensor]:
    """:func:`fit_shape_coefficients` and the optimum's objective (B,) (residual + ridge term)."""
    system = _ridge_system(R, shapes, kp2d, vis)
    reg = _ridge_weights(shapes, ridge)
    coef = _solve_ridge(system, reg)
    # ||c A - y||^2 = c G c - 2 c . A y + y . y, evaluated in float64 against cancellation.
    c, G = coef.double(), system.gram.double()
    objective = (
        torch.einsum("...a,...ae,...e->...", c, G, c)
        - 2 * (c * system.rhs.double()).sum(-1)
        + system.yy.double()
        + (reg.double() * c.square()).sum(-1)
    )
    return coef, objective.to(coef.dtype)


def fit_shape_coefficients(
    R: Tensor, shapes: Tensor, kp2d: Tensor, vis: Tensor | None, ridge: float
) -> Tensor:
    """Coefficients (B, n) of the shapes (n, K, 3) whose combination best explains each view.

    Minimises ``sum_visible ||Pi(R sum_j c_j X_j)_k + t - y_k||^2 + ridge sum_{j >= 1} c_j^2``
    over ``c`` and ``t`` (the first shape, the bias, is not penalised): a linear least-squares
    problem per sample, solved in closed form (differentiable in ``R``, the shapes and ``kp2d``).

    Args:
        R: (B, 3, 3) rotations; kp2d: (B, K, 2) keypoints; vis: (B, K) visibility. With shapes
            (*E, n, K, 3), leading axes on all of them: (*E, B, ...).
    """
    return _solve_ridge(_ridge_system(R, shapes, kp2d, vis), _ridge_weights(shapes, ridge))
