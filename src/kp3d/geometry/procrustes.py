"""Weighted Procrustes / Umeyama alignment of point sets, batched and differentiable.

Given point sets ``X`` and ``Y`` of shape (..., K, D) and non-negative weights ``w`` (..., K),
:func:`procrustes` finds the scale ``s``, orthonormal matrix ``R`` and translation ``t`` that
minimise ``sum_k w_k || s R x_k + t - y_k ||^2`` (Umeyama, "Least-squares estimation of
transformation parameters between two point patterns", TPAMI 1991). A visibility mask is simply
weights in {0, 1}. The rotation comes from the float64 SVD of :func:`roma.procrustes`, whose
backward pass damps the ill-conditioned terms instead of dividing by zero.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import roma
import torch
from torch import Tensor

ProcrustesMode = Literal["orthogonal", "similarity"]

_TINY = 1e-300
# X counts as collapsed to a point when its spread is below this fraction of its magnitude
# (both squared): far above float64 rounding of coincident points, far below real point sets.
_COLLAPSED = 1e-20


class ProcrustesResult(NamedTuple):
    """The optimal transform ``y ~ s R x + t`` and the aligned points."""

    R: Tensor
    """(..., D, D) orthonormal; a proper rotation (det = +1) unless ``allow_reflection``."""
    t: Tensor
    """(..., D) translation."""
    s: Tensor
    """(...) scale; exactly 1 in ``"orthogonal"`` mode."""
    aligned: Tensor
    """(..., K, D) ``s * X @ R^T + t``: X mapped onto Y."""


def procrustes(
    X: Tensor,
    Y: Tensor,
    *,
    weights: Tensor | None = None,
    mode: ProcrustesMode = "similarity",
    allow_reflection: bool = False,
) -> ProcrustesResult:
    """Align ``X`` onto ``Y`` with the weighted least-squares similarity (or rigid) transform.

    Args:
        X: (..., K, D) source points, any D >= 1 (typically 2 or 3).
        Y: (..., K, D) target points. Leading dims of X, Y and weights broadcast together.
        weights: (..., K) non-negative per-point weights (not checked, to avoid a device sync);
            ``None`` weighs every point 1. Only ratios matter.
        mode: ``"similarity"`` estimates ``s``; ``"orthogonal"`` fixes ``s = 1`` (rigid motion).
        allow_reflection: if True, ``R`` may be an improper orthonormal matrix (det = -1).

    Returns:
        :class:`ProcrustesResult` ``(R, t, s, aligned)`` in the result dtype of X and Y.

    Degenerate inputs give finite values and finite gradients: with all weights zero,
    ``R = I``, ``t = 0`` and ``s = 0`` (similarity) or 1; with all weighted points of X
    coincident (e.g. a single visible point), ``s = 0`` (similarity) and ``aligned`` is the
    weighted centroid of Y. When the rotation is not unique
    (e.g. collinear points in 3D, or fewer than D non-coincident points) some optimal ``R`` is
    returned and its gradient is damped (see ``gradient_eps`` in :func:`roma.procrustes`).
    Near those configurations the true derivative is unbounded, so gradients can be large.

    Computation is in float64 throughout; results are cast back to the input dtype.
    """
    if mode not in get_args(ProcrustesMode):
        raise ValueError(
            f"procrustes: mode must be one of {get_args(ProcrustesMode)}, got {mode!r}"
        )
    if X.ndim < 2 or Y.ndim < 2:
        raise ValueError(
            f"procrustes: X and Y must be (..., K, D), got {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    if X.shape[-2:] != Y.shape[-2:]:
        raise ValueError(
            "procrustes: X and Y must have the same (K, D), "
            f"got {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    K = X.shape[-2]
    if weights is not None and (weights.ndim < 1 or weights.shape[-1] != K):
        raise ValueError(f"procrustes: weights must be (..., {K}), got {tuple(weights.shape)}")
    dtype = torch.result_type(X, Y)

    X64, Y64 = X.double(), Y.double()
    w = torch.ones_like(X64[..., 0]) if weights is None else weights.double()
    w = w[..., None]  # (..., K, 1)
    w_sum = w.sum(-2, keepdim=True)  # (..., 1, 1)
    # No weight at all: any divisor gives zero means; 1 also keeps the gradient small.
    w_sum = torch.where(w_sum > 0, w_sum, 1.0)
    mu_x = (w * X64).sum(-2, keepdim=True) / w_sum  # (..., 1, D)
    mu_y = (w * Y64).sum(-2, keepdim=True) / w_sum
    Xc, Yc = X64 - mu_x, Y64 - mu_y
    cov = (w * Yc).transpose(-1, -2) @ Xc / w_sum  # (..., D, D), sum_k w_k y_k x_k^T / sum w

    # R is invariant to positive rescaling of cov; normalising makes roma's gradient damping
    # (an absolute threshold on singular values) independent of the data's units.
    cov_scale = cov.detach().abs().amax(dim=(-2, -1), keepdim=True).clamp_min(_TINY)
    # SVD rather than roma's Horn closed form: faster below batches of a few hundred on CPU.
    R = roma.procrustes(cov / cov_scale, force_rotation=not allow_reflection, method="svd")

    if mode == "similarity":
        var_x = (w * Xc.square()).sum(dim=(-2, -1)) / w_sum[..., 0, 0]
        magnitude = (w * X64.square()).sum(dim=(-2, -1)) / w_sum[..., 0, 0]
        collapsed = var_x <= _COLLAPSED * magnitude
        # tr(R^T cov) is the sum of the (sign-corrected) singular values in Umeyama's formula.
        s = (R * cov).sum(dim=(-2, -1)) / torch.where(collapsed, 1.0, var_x)
        s = torch.where(collapsed, 0.0, s)
    else:
        s = torch.ones_like(cov[..., 0, 0])
    sR = s[..., None, None] * R
    t = mu_y[..., 0, :] - (mu_x @ sR.transpose(-1, -2))[..., 0, :]
    aligned = X64 @ sR.transpose(-1, -2) + t[..., None, :]
    return ProcrustesResult(R.to(dtype), t.to(dtype), s.to(dtype), aligned.to(dtype))


def procrustes_align(
    X: Tensor,
    Y: Tensor,
    *,
    weights: Tensor | None = None,
    mode: ProcrustesMode = "similarity",
    allow_reflection: bool = False,
) -> Tensor:
    """``procrustes(X, Y, ...).aligned``: X (..., K, D) mapped onto Y, shape (..., K, D)."""
    return procrustes(X, Y, weights=weights, mode=mode, allow_reflection=allow_reflection).aligned
