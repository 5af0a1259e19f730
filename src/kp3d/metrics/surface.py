"""Dense surface errors of Unsup3d (Wu, Rupprecht & Vedaldi, CVPR 2020): SIDE and MAD.

Definitions follow the official code (``unsup3d/model.py`` and ``unsup3d/utils.py``:
``compute_sc_inv_err``, ``compute_angular_distance``; normals from
``Renderer.get_normal_from_depth``):

- SIDE, scale-invariant depth error (Eigen et al., NeurIPS 2014), per image over the mask:
  ``sqrt(mean(d^2) - mean(d)^2)`` with ``d = log(pred_depth) - log(gt_depth)``;
- MAD, mean angle deviation, per image over the mask: the mean of ``acos(<n_pred, n_gt>)`` in
  degrees between unit normals, both computed from depth maps with :func:`depth_to_normals`;
- both are then averaged over images. Unsup3d reports SIDE in units of 1e-2.

Beside them, :func:`normal_roughness` (kp3d's, not Unsup3d's): how far apart the normals of
neighbouring pixels are, which tells a surface from a depth map whose pixel-scale ripples only
serve its shading.

Unsup3d's evaluation mask is the ground-truth foreground (depth below the background value, the
maximum) intersected with the pixels the prediction covers, each eroded by one pixel (3x3 average
pool > 0.99); building it belongs to the caller, who knows its background convention.

Maps are image-like, as ``Sample.depth``: depth and mask (..., 1, H, W), normals (..., 3, H, W),
any leading dims. Masks are boolean (or 0/1). ``reduction="none"`` returns the (...) per-image
values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kp3d.metrics._utils import (
    ArrayLike,
    Reduction,
    as_mask,
    as_tensor,
    check_reduction,
    float_dtype,
    reduce,
)


def unsup3d_intrinsics(
    height: int,
    width: int,
    *,
    fov_deg: float = 10.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Unsup3d's pinhole intrinsics, written in kp3d's pixel convention.

    Unsup3d indexes pixels by integer position with ``c = (S - 1) / 2`` and
    ``f = (S - 1) / (2 tan(fov / 2))`` for an S x S image (fov 10 degrees). In kp3d's continuous
    pixel coordinates (pixel centres at i + 0.5) the same camera has ``cx = W / 2``,
    ``cy = H / 2``; the focal lengths keep Unsup3d's ``S - 1`` (per axis for non-square maps).

    Returns:
        (3, 3) ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
    """
    if not (height >= 3 and width >= 3):
        raise ValueError(f"unsup3d_intrinsics: need H, W >= 3, got {(height, width)}")
    if not 0 < fov_deg < 180:
        raise ValueError(f"unsup3d_intrinsics: fov_deg must be in (0, 180), got {fov_deg}")
    t = 2 * math.tan(math.radians(fov_deg) / 2)
    return torch.tensor(
        [[(width - 1) / t, 0.0, width / 2], [0.0, (height - 1) / t, height / 2], [0.0, 0.0, 1.0]],
        dtype=dtype,
        device=device,
    )


def depth_to_normals(
    depth: ArrayLike, intrinsics: ArrayLike | None = None, *, eps: float = 1e-7
) -> Tensor:
    """Unit surface normals from a depth map, exactly as Unsup3d's ``get_normal_from_depth``.

    Every pixel centre is unprojected with the pinhole camera of kp3d's convention (x right,
    y down, z forward): ``P = z K^{-1} (u, v, 1)`` at ``(u, v) = (i + 0.5, j + 0.5)``. The normal
    is ``n = c / (||c|| + eps)`` with ``c = (P[j, i+1] - P[j, i-1]) x (P[j+1, i] - P[j-1, i])``;
    the one-pixel border, which lacks a neighbour, gets ``(0, 0, 1)``. With x right and y down
    this points *away* from the camera (+z) on a surface that faces it, Unsup3d's orientation;
    only the angle between two normal maps matters for :func:`mad`.

    Unsup3d's ``eps = 1e-7`` is absolute. On its evaluation maps (64 x 64, depth about 1, fov
    10 degrees) a fronto-parallel surface has ``||c||`` about 3e-5, so its normals come out about
    0.3% short; that alone puts the MAD of two identical such maps at about 6 degrees and adds
    about 1.3 degrees at a true 15. Published Unsup3d MAD numbers include this; the default
    reproduces them, ``eps=0`` gives exactly unit normals (MAD 0 for identical maps).

    Args:
        depth: (..., 1, H, W) camera-frame depth z > 0.
        intrinsics: (..., 3, 3) or (3, 3) pinhole intrinsics in pixels of the depth map; ``None``
            uses :func:`unsup3d_intrinsics` (fov 10 degrees), Unsup3d's evaluation camera.
        eps: added to the norm before dividing; 1e-7 as Unsup3d (see above), 0 for unit normals.

    Returns:
        (..., 3, H, W) unit normals (x, y, z) in the camera frame.
    """
    d = as_tensor(depth, "depth", "depth_to_normals")
    if not eps >= 0:
        raise ValueError(f"depth_to_normals: eps must be >= 0, got {eps}")
    if d.ndim < 3 or d.shape[-3] != 1 or d.shape[-2] < 3 or d.shape[-1] < 3:
        raise ValueError(
            f"depth_to_normals: depth must be (..., 1, H, W) with H, W >= 3, got {tuple(d.shape)}"
        )
    H, W = d.shape[-2:]
    dtype = float_dtype(d)
    d = d.to(dtype)
    if intrinsics is None:
        K = unsup3d_intrinsics(H, W, dtype=torch.float64, device=d.device)
    else:
        K = as_tensor(intrinsics, "intrinsics", "depth_to_normals").to(d.device, torch.float64)
        if K.shape[-2:] != (3, 3):
            raise ValueError(
                f"depth_to_normals: intrinsics must be (..., 3, 3), got {tuple(K.shape)}"
            )
    K_inv = torch.linalg.inv(K).to(dtype)

    v, u = torch.meshgrid(
        torch.arange(H, dtype=dtype, device=d.device) + 0.5,
        torch.arange(W, dtype=dtype, device=d.device) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (H, W, 3)
    rays = pix @ K_inv[..., None, :, :].transpose(-1, -2)  # (..., H, W, 3)
    points = d[..., 0, :, :, None] * rays  # (..., H, W, 3)

    du = points[..., 1:-1, 2:, :] - points[..., 1:-1, :-2, :]
    dv = points[..., 2:, 1:-1, :] - points[..., :-2, 1:-1, :]
    inner = torch.linalg.cross(du, dv, dim=-1)
    inner = inner / (inner.square().sum(dim=-1, keepdim=True).sqrt() + eps)
    normals = torch.zeros(*points.shape, dtype=dtype, device=d.device)
    normals[..., 2] = 1.0
    normals[..., 1:-1, 1:-1, :] = inner
    return normals.movedim(-1, -3)


def side(
    pred_depth: ArrayLike,
    gt_depth: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    reduction: Reduction = "mean",
) -> Tensor:
    """Scale-invariant depth error of Unsup3d: per image ``sqrt(mean(d^2) - mean(d)^2)``.

    ``d = log(pred_depth) - log(gt_depth)`` over the masked pixels, i.e. the standard deviation
    of the log-depth ratio, so a global scale of the prediction does not change it.

    Args:
        pred_depth: (..., 1, H, W) predicted depth, > 0 where masked.
        gt_depth: (..., 1, H, W) ground-truth depth, > 0 where masked.
        mask: (..., 1, H, W) bool, pixels to evaluate (at least one per image); ``None`` = all.
        reduction: ``"mean"`` over images, or ``"none"`` for (...) per-image values.

    Returns:
        () or (...) in the promoted input dtype.
    """
    fn = "side"
    p, g, m, dtype = _prepare_maps(fn, pred_depth, gt_depth, mask, reduction, channels=1)
    if not bool(((p > 0) & (g > 0) | ~m).all()):
        raise ValueError(f"{fn}: depths must be > 0 at every masked pixel")
    w = m.double()
    diff = torch.where(m, p.log() - g.log(), 0.0)
    count = w.sum(dim=(-3, -2, -1))
    mean = diff.sum(dim=(-3, -2, -1)) / count
    var = (w * (diff - mean[..., None, None, None]).square()).sum(dim=(-3, -2, -1)) / count
    return reduce(var.sqrt(), reduction).to(dtype)


def mad(
    pred_normals: ArrayLike,
    gt_normals: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    reduction: Reduction = "mean",
) -> Tensor:
    """Mean angle deviation of Unsup3d: per image the mean of ``acos(<n_pred, n_gt>)`` in degrees.

    The dot product is clamped to [-1, 1] before ``acos`` (as Unsup3d); the normals are taken as
    given, not renormalised. For Unsup3d's number pass normals computed from both depth maps by
    :func:`depth_to_normals` with the same camera (and mind its ``eps``).

    Args:
        pred_normals: (..., 3, H, W) predicted unit normals.
        gt_normals: (..., 3, H, W) ground-truth unit normals.
        mask: (..., 1, H, W) bool, pixels to evaluate (at least one per image); ``None`` = all.
        reduction: ``"mean"`` over images, or ``"none"`` for (...) per-image values.

    Returns:
        () or (...) degrees, in the promoted input dtype.
    """
    p, g, m, dtype = _prepare_maps("mad", pred_normals, gt_normals, mask, reduction, channels=3)
    cos = (p * g).sum(dim=-3, keepdim=True).clamp(-1.0, 1.0)
    angle = torch.where(m, torch.rad2deg(torch.acos(cos)), 0.0)
    per_image = angle.sum(dim=(-3, -2, -1)) / m.sum(dim=(-3, -2, -1))
    return reduce(per_image, reduction).to(dtype)


def normal_roughness(
    normals: ArrayLike, mask: ArrayLike | None = None, *, reduction: Reduction = "mean"
) -> Tensor:
    """Mean angle in degrees between the normals of neighbouring pixels, per image.

    Every pair of a pixel and its right or lower neighbour, both in ``mask``, counts once:
    ``mean(acos(<n_p, n_q>))`` over those pairs (the dot product clamped to [-1, 1]). A plane
    gives 0; a smooth surface gives about the angle it turns through per pixel; a depth map
    whose normals flip from pixel to pixel gives tens of degrees, whatever its overall shape.

    Args:
        normals: (..., 3, H, W) unit normals, H, W >= 2.
        mask: (..., 1, H, W) bool, pixels to use (at least one neighbouring pair per image);
            ``None`` = all.
        reduction: ``"mean"`` over images, or ``"none"`` for (...) per-image values.

    Returns:
        () or (...) degrees, in the input's float dtype.
    """
    fn = "normal_roughness"
    check_reduction(reduction, fn)
    n = as_tensor(normals, "normals", fn)
    if n.ndim < 3 or n.shape[-3] != 3 or n.shape[-2] < 2 or n.shape[-1] < 2:
        raise ValueError(
            f"{fn}: normals must be (..., 3, H, W) with H, W >= 2, got {tuple(n.shape)}"
        )
    shape = (*n.shape[:-3], 1, *n.shape[-2:])
    m = as_mask(mask, shape, "mask", fn)
    m = torch.ones(shape, dtype=torch.bool, device=n.device) if m is None else m.to(n.device)
    dtype = float_dtype(n)
    n = n.double()
    total = torch.zeros(n.shape[:-3], dtype=torch.float64, device=n.device)
    count = torch.zeros_like(total)
    for a, b, ma, mb in (
        (n[..., :, 1:], n[..., :, :-1], m[..., :, 1:], m[..., :, :-1]),  # right neighbours
        (n[..., 1:, :], n[..., :-1, :], m[..., 1:, :], m[..., :-1, :]),  # lower neighbours
    ):
        pair = ma & mb
        angle = torch.rad2deg(torch.acos((a * b).sum(dim=-3, keepdim=True).clamp(-1.0, 1.0)))
        total += torch.where(pair, angle, 0.0).sum(dim=(-3, -2, -1))
        count += pair.sum(dim=(-3, -2, -1))
    empty = (count == 0).nonzero()
    if empty.numel():
        raise ValueError(
            f"{fn}: the mask has no neighbouring pair in image(s) {empty[:10].tolist()}"
        )
    return reduce(total / count, reduction).to(dtype)


def _prepare_maps(
    fn: str,
    pred: ArrayLike,
    gt: ArrayLike,
    mask: ArrayLike | None,
    reduction: str,
    *,
    channels: int,
) -> tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """float64 pred, gt (..., C, H, W) and a bool mask (..., 1, H, W), non-empty per image."""
    check_reduction(reduction, fn)
    p, g = as_tensor(pred, "pred", fn), as_tensor(gt, "gt", fn)
    if p.ndim < 3 or p.shape != g.shape or p.shape[-3] != channels:
        raise ValueError(
            f"{fn}: pred and gt must both be (..., {channels}, H, W), "
            f"got {tuple(p.shape)} and {tuple(g.shape)}"
        )
    shape = (*p.shape[:-3], 1, *p.shape[-2:])
    m = as_mask(mask, shape, "mask", fn)
    m = torch.ones(shape, dtype=torch.bool, device=p.device) if m is None else m.to(p.device)
    empty = (~m.flatten(-3).any(dim=-1)).nonzero()
    if empty.numel():
        raise ValueError(f"{fn}: the mask is empty for image(s) {empty[:10].tolist()}")
    return p.double(), g.to(p.device, torch.float64), m, float_dtype(p, g)
