"""3D keypoint errors of 2D->3D lifting: MPJPE, N-MPJPE, P-MPJPE, Stress, basis coherence.

The default protocol is C3DPO's (Novotny et al., ICCV 2019; ``calc_3d_errs`` in
``dataset/eval_zoo.py`` of its official code), as used by Can et al. and kp3d's AFLW2000-3D
benchmark:

- the prediction keeps the input x, y and predicts depth; the caller normalises both prediction
  and ground truth by the same per-sample factor (for faces: the RMS distance of the centred 2D
  points) and multiplies per-sample errors back by it for pixel units
  (``mpjpe(..., reduction="none") * s``, then the mean);
- ``center=True``: the mean depth over the visible points is set to 0 in both prediction and
  ground truth (``fix_mean_depth``); x and y are left alone;
- ``flip_z=True``: per sample, the better of the prediction and its depth mirror ``z -> -z``
  (``EVAL_MPJPE_best``), since orthographic lifting cannot tell them apart;
- errors are means over the visible points of each sample, then means over samples.

Points are (..., K, 3) with any leading batch dims; ``vis`` (..., K) bool excludes points (their
coordinates may hold anything, NaN included). Computation is in float64; results come back in the
promoted input dtype. ``reduction="none"`` returns the (...) per-sample values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kp3d.geometry import procrustes
from kp3d.metrics._utils import (
    ArrayLike,
    Reduction,
    as_mask,
    as_tensor,
    check_reduction,
    float_dtype,
    reduce,
)


def mpjpe(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    vis: ArrayLike | None = None,
    flip_z: bool = False,
    center: bool = True,
    reduction: Reduction = "mean",
) -> Tensor:
    """Mean per-joint position error, C3DPO protocol (see the module docstring).

    ``mean_k ||p_k - g_k||`` over the visible points of each sample, after setting the mean
    depth of both to 0 when ``center``; with ``flip_z`` the minimum of that and the same error of
    the depth-mirrored prediction.

    Args:
        pred: (..., K, 3) predicted points.
        gt: (..., K, 3) ground-truth points.
        vis: (..., K) bool, points to evaluate; ``None`` = all.
        flip_z: per sample, take the better of z and -z for the prediction.
        center: set the mean depth (over visible points) to 0 in pred and gt; with
            ``center=False`` the mirror is ``z -> -z`` about depth 0.
        reduction: ``"mean"`` over samples, or ``"none"`` for (...) per-sample errors.

    Returns:
        () or (...) errors in the units of the inputs.
    """
    p, g, w, dtype = _prepare("mpjpe", pred, gt, vis, reduction)
    if center:
        p, g = _centre_depth(p, w), _centre_depth(g, w)
    err = _mean_error(p, g, w)
    if flip_z:
        err = torch.minimum(err, _mean_error(_mirror_z(p), g, w))
    return reduce(err, reduction).to(dtype)


def n_mpjpe(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    vis: ArrayLike | None = None,
    flip_z: bool = False,
    center: bool = True,
    reduction: Reduction = "mean",
) -> Tensor:
    """MPJPE after the per-sample scale ``s`` that minimises ``sum_k ||s p_k - g_k||^2``.

    N-MPJPE of Rhodin et al. (ECCV 2018), as implemented by VideoPose3D's ``n_mpjpe``:
    ``s = sum_k <p_k, g_k> / sum_k ||p_k||^2`` over visible points, scaling about the origin;
    depth centring (``center``) is applied first and ``flip_z`` chooses per sample between the
    scaled prediction and the scaled mirror. A prediction that is zero at every visible point gets
    ``s = 0``.

    Args and returns as in :func:`mpjpe`.
    """
    p, g, w, dtype = _prepare("n_mpjpe", pred, gt, vis, reduction)
    if center:
        p, g = _centre_depth(p, w), _centre_depth(g, w)
    err = _mean_error(_best_scaled(p, g, w), g, w)
    if flip_z:
        err = torch.minimum(err, _mean_error(_best_scaled(_mirror_z(p), g, w), g, w))
    return reduce(err, reduction).to(dtype)


def p_mpjpe(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    vis: ArrayLike | None = None,
    flip_z: bool = False,
    reduction: Reduction = "mean",
) -> Tensor:
    """MPJPE after per-sample similarity Procrustes alignment of the prediction onto the truth.

    The scale, proper rotation and translation minimising the squared error over the visible
    points (Umeyama 1991, :func:`kp3d.geometry.procrustes`) are applied to the prediction before
    the mean error; this is "reconstruction error" / Protocol #2 of Human3.6M work (e.g.
    VideoPose3D's ``p_mpjpe``, which also excludes reflections). Translation makes depth
    centring irrelevant. ``flip_z`` takes per sample the better of the prediction and its
    depth mirror, which is the same as allowing improper (reflecting) alignments.

    Args and returns as in :func:`mpjpe` (there is no ``center``).
    """
    p, g, w, dtype = _prepare("p_mpjpe", pred, gt, vis, reduction)
    err = _mean_error(procrustes(p, g, weights=w).aligned, g, w)
    if flip_z:
        mirrored = procrustes(_mirror_z(p), g, weights=w).aligned
        err = torch.minimum(err, _mean_error(mirrored, g, w))
    return reduce(err, reduction).to(dtype)


def stress(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    vis: ArrayLike | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Stress: mean over point pairs i < j of ``| ||g_i - g_j|| - ||p_i - p_j|| |``.

    C3DPO's ``calc_stress_err``: per sample over the pairs of visible points, then the mean over
    samples. Invariant to rigid motions and reflections of either point set, so no centring or
    depth flip is involved.

    Args:
        pred: (..., K, 3) predicted points (any dimension D works, not only 3).
        gt: (..., K, 3) ground-truth points.
        vis: (..., K) bool; every sample needs at least 2 visible points.
        reduction: ``"mean"`` over samples, or ``"none"`` for (...) per-sample values.
    """
    p, g, w, dtype = _prepare("stress", pred, gt, vis, reduction, min_visible=2, dim=None)
    K = p.shape[-2]
    upper = torch.ones(K, K, dtype=torch.bool, device=p.device).triu(diagonal=1)
    pair_w = (w[..., :, None] * w[..., None, :]) * upper
    diff = (_pairwise_distances(g) - _pairwise_distances(p)).abs()
    err = torch.where(pair_w > 0, diff, 0.0).sum(dim=(-2, -1)) / pair_w.sum(dim=(-2, -1))
    return reduce(err, reduction).to(dtype)


def mutual_coherence(basis: ArrayLike) -> Tensor:
    """Mutual coherence of a shape basis: ``max_{i != j} |<b_i, b_j>| / (||b_i|| ||b_j||)``.

    The largest absolute cosine between two distinct basis shapes (Can et al., Table 5): 0 for
    an orthogonal basis, 1 when two shapes are parallel.

    Args:
        basis: (n, 3K) flattened basis shapes, or (n, K, 3); n >= 2.

    Returns:
        () in the input dtype.

    Raises:
        ValueError: on fewer than 2 basis vectors, a wrong shape, or a zero basis vector.
    """
    B = as_tensor(basis, "basis", "mutual_coherence")
    if B.ndim == 3:
        B = B.flatten(1)
    if B.ndim != 2 or B.shape[0] < 2:
        raise ValueError(
            "mutual_coherence: basis must be (n, 3K) or (n, K, 3) with n >= 2, "
            f"got {tuple(B.shape)}"
        )
    dtype = float_dtype(B)
    B = B.double()
    norms = B.norm(dim=1)
    if not bool((norms > 0).all()):
        raise ValueError(
            f"mutual_coherence: basis vectors {(norms == 0).nonzero().squeeze(1).tolist()} are zero"
        )
    Bn = B / norms[:, None]
    cos = (Bn @ Bn.T).abs()
    cos.fill_diagonal_(0.0)
    return cos.max().to(dtype)


def _prepare(
    fn: str,
    pred: ArrayLike,
    gt: ArrayLike,
    vis: ArrayLike | None,
    reduction: str,
    *,
    min_visible: int = 1,
    dim: int | None = 3,
) -> tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """float64 (pred, gt, weights in {0, 1} of shape (..., K)) and the result dtype."""
    check_reduction(reduction, fn)
    p, g = as_tensor(pred, "pred", fn), as_tensor(gt, "gt", fn)
    if p.ndim < 2 or p.shape != g.shape or (dim is not None and p.shape[-1] != dim):
        want = f"(..., K, {dim})" if dim is not None else "(..., K, D)"
        raise ValueError(
            f"{fn}: pred and gt must both be {want}, got {tuple(p.shape)} and {tuple(g.shape)}"
        )
    m = as_mask(vis, tuple(p.shape[:-1]), "vis", fn)
    dtype = float_dtype(p, g)
    p, g = p.double(), g.to(p.device, torch.float64)
    if m is None:
        if p.shape[-2] < min_visible:
            raise ValueError(
                f"{fn}: needs at least {min_visible} points per sample, got K = {p.shape[-2]}"
            )
        return p, g, torch.ones_like(p[..., 0]), dtype
    m = m.to(p.device)
    short = (m.sum(dim=-1) < min_visible).nonzero()
    if short.numel():
        raise ValueError(
            f"{fn}: every sample needs at least {min_visible} visible point(s); not so for "
            f"sample(s) {short[:10].tolist()}"
        )
    # Invisible coordinates may be NaN; zeroing them keeps NaN out of every masked sum.
    keep = m[..., None]
    p, g = torch.where(keep, p, 0.0), torch.where(keep, g, 0.0)
    return p, g, m.double(), dtype


def _centre_depth(x: Tensor, w: Tensor) -> Tensor:
    mean_z = (w * x[..., 2]).sum(dim=-1, keepdim=True) / w.sum(dim=-1, keepdim=True)
    return torch.cat([x[..., :2], (x[..., 2] - mean_z)[..., None]], dim=-1)


def _mirror_z(x: Tensor) -> Tensor:
    return torch.cat([x[..., :2], -x[..., 2:]], dim=-1)


def _mean_error(p: Tensor, g: Tensor, w: Tensor) -> Tensor:
    """(...) weighted mean over points of the L2 distance."""
    return (w * (p - g).norm(dim=-1)).sum(dim=-1) / w.sum(dim=-1)


def _best_scaled(p: Tensor, g: Tensor, w: Tensor) -> Tensor:
    num = (w * (p * g).sum(dim=-1)).sum(dim=-1)
    den = (w * p.square().sum(dim=-1)).sum(dim=-1)
    s = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
    return s[..., None, None] * p


def _pairwise_distances(x: Tensor) -> Tensor:
    """(..., K, K) Euclidean distances, from exact differences (not the Gram-matrix shortcut)."""
    flat = x.reshape(-1, *x.shape[-2:])
    d = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")
    return d.reshape(*x.shape[:-1], x.shape[-2])
