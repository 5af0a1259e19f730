"""The evaluation harness: the protocols, and which of them apply, run over a trained model.

``kp3d evaluate`` and the benchmarks call these functions; the metrics themselves live in
:mod:`kp3d.metrics`. Every number is a fraction or in the stated units, never a percentage.

:data:`PROTOCOLS` names every protocol with the :class:`~kp3d.methods.prediction.Prediction`
fields and ground-truth :class:`~kp3d.data.schema.Sample` fields it needs; a method's
``MethodSpec.protocols`` says which apply to it, and :func:`evaluate_protocols` runs those the
data allows on predictions :func:`collect`-ed over a fit set and a test set, skipping the
others with a one-line reason.

``keypoint_discovery``: discovered image keypoints, :func:`evaluate_keypoint_discovery`
    Discovered keypoints and ground-truth landmarks, both in unit coordinates ``u / W``,
    ``v / H`` of the evaluated image size, go through the bias-free linear regression of
    :func:`kp3d.metrics.nme_2d`, fitted on the *fit* set and scored on the *test* set:

    - 68 iBUG landmarks: ``nme68`` (outer-eye-corner normaliser, landmarks 36 and 45) and
      ``nme5`` (the MAFL 5-point reduction, eye-centre normaliser);
    - 5 landmarks (MAFL order): ``nme5`` with the eye-centre normaliser;
    - any other landmark set: ``nme`` normalised by the ground-truth box ``sqrt(w h)``; and when
      the dataset names left and right landmarks (bodies: ``left_knee``, ``right_knee``, ...;
      :func:`kp3d.metrics.mirror_permutation`), also ``nme_lr`` and the 3D errors below with
      ``_lr``: AutoLink's Human3.6M protocol, which scores each image against its mirror
      labelling (left and right landmarks exchanged) where that fits better, because keypoints
      on a bilaterally symmetric body tend to follow the side of the image, not of the body.

    Landmarks that are not visible (``vis`` False: absent in CUB/COCO, occluded in the synthetic
    sets) or whose coordinates are not finite are left out of the 2D fit and error, as in
    AutoLink's CUB protocol. 3D ground truth is exact where it exists, so the 3D errors use every
    finite landmark, occluded or not. With ground-truth 3D keypoints and a 3D method, the ground
    truth is brought into the image frame (:func:`image_frame_3d`) and the method's 3D keypoints
    are taken in the image frame too (``kp3d_image`` when the method predicts it, divided like
    2D by the image size), because the regression has no bias: inputs and landmarks must share
    their origin. Then, with :func:`kp3d.metrics.nme_3d` (3K -> 3L regression, depth centred per
    image): ``nme3d`` from the discovered 3D keypoints; ``nme3d_depth`` from the discovered 2D
    keypoints with the 3D head's depth; ``nme3d_flat_baseline`` from the discovered 2D keypoints
    at the mean depth. The 3D head is only worth something if it beats the last: ``nme3d_depth``
    against it isolates what the predicted depth adds. ``rotation_spread_deg`` (no ground truth
    needed): the mean angle of the head's rotations from their mean; near 0 means the head gives
    every image the same pose, i.e. it acts as a 2D template and its depth carries nothing.
    ``tracks_sv3`` and ``tracks_sv3_gt`` (:func:`kp3d.metrics.track_singular_values`, test set):
    how much of the discovered keypoints' motion, and of the ground truth's, needs a third
    dimension; when the first is far below the second, the keypoints move as one flat template
    and no 3D head can add depth to them.

``lifting``: lifting methods (2D -> 3D), :func:`evaluate_lifting`
    C3DPO's protocol as recorded in ``shared/ANCHORS.md``: per sample, centre the visible 2D
    points and divide prediction and ground truth by ``s``, the RMS distance of the centred 2D
    points (so x, y of both are the normalised input); MPJPE with the mean depth set to 0 and
    the better of z and -z, Stress over all visible pairs, P-MPJPE after a similarity alignment;
    each in normalised units and in input units (per-sample error times ``s``). Baselines on the
    same split: ``flat`` (z = 0) and ``mean_shape`` (the mean of the *fit* set's normalised
    ground-truth 3D shapes, placed by the best orthographic fit to each test observation).
    A test set of several categories (``category`` labels) adds ``per_category`` rows, the same
    protocol per label on that category's keypoints (Can et al., Table 4).

``surface_depth``: depth maps, :func:`evaluate_surface_depth`
    Unsup3d's SIDE and MAD over the ground-truth foreground eroded by one pixel, with its two
    baselines (a constant depth and the fit set's mean depth map) on the same pixels.

``multiview_3d``: 3D keypoints of multi-view methods, :func:`evaluate_multiview_3d`
    The 3K -> 3L regression of :func:`kp3d.metrics.nme_3d` onto the first view's camera-frame
    joints, fitted on the fit set.

``foreground_mask``: per-view foreground masks of multi-view methods,
    :func:`evaluate_foreground_mask`: :func:`kp3d.metrics.mask_iou` of the predicted masks
    against the ground-truth masks (both at 0.5), with the all-foreground mask as a baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import roma
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from kp3d.data.schema import Sample, collate
from kp3d.geometry import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    pixel_to_unit,
    procrustes,
    rotation_spread,
)
from kp3d.geometry.keypoints import least_squares_scale, masked_mean, normalise_keypoints
from kp3d.methods.prediction import Prediction
from kp3d.metrics import (
    INTER_OCULAR_68,
    INTER_PUPIL_MAFL5,
    depth_to_normals,
    mad,
    mafl5_from_ibug68,
    mask_iou,
    mirror_permutation,
    mpjpe,
    nme_2d,
    nme_3d,
    p_mpjpe,
    side,
    stress,
    track_singular_values,
)

if TYPE_CHECKING:
    from kp3d.metrics.probe import ProbeConfig


@dataclass
class Collected:
    """Model outputs and ground truth over a whole dataset, batch first.

    Attributes:
        pred: concatenated outputs of ``model.predict``.
        gt: concatenated ground truth (a batch :class:`Sample` without images).
        image_size: (H, W) of the evaluated images, or None for keypoint-only data.
        landmark_names: names of the ground-truth landmarks, where the dataset has them.
        category_names: the name of each category label, where the dataset has them.
    """

    pred: Prediction
    gt: Sample
    image_size: tuple[int, int] | None
    landmark_names: list[str] | None = None
    category_names: list[str] | None = None


_GT_FIELDS = ("mask", "depth", "kp2d", "vis", "kp3d", "intrinsics", "extrinsics", "category")


@torch.no_grad()
def collect(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    workers: int = 0,
    predict: Callable[[Sample], Prediction] | None = None,
) -> Collected:
    """Run ``predict`` (default ``model.predict``; commands pass the spec's
    :meth:`~kp3d.data.inputs.Inputs.predict`, which keeps a moment's views together) over
    ``dataset`` and gather outputs with the ground truth."""
    model.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=workers
    )
    preds: list[Prediction] = []
    gts: dict[str, list[Tensor]] = {}
    names: list[str] = []
    size: tuple[int, int] | None = None
    for batch in loader:
        if batch.image is not None:
            size = (int(batch.image.shape[-2]), int(batch.image.shape[-1]))
        preds.append((predict or model.predict)(batch).detach_cpu())
        for f in _GT_FIELDS:
            v = getattr(batch, f)
            if v is not None:
                gts.setdefault(f, []).append(v.cpu())
        names.extend(batch.name)
    if not names:
        raise ValueError("collect: the dataset is empty")
    gt = Sample(**{k: torch.cat(v) for k, v in gts.items()}, name=names)
    return Collected(
        Prediction.cat(preds),
        gt,
        size,
        _dataset_names(dataset, "keypoint_names"),
        _dataset_names(dataset, "category_names"),
    )


def _dataset_names(dataset: Dataset, attribute: str) -> list[str] | None:
    """The dataset's list ``attribute`` (``keypoint_names``: the ground truth's landmarks;
    ``category_names``), looking through ``Subset``s."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    names = getattr(dataset, attribute, None)
    return None if names is None else list(names)


def format_value(name: str, value: float) -> str:
    """How a result is shown: NMEs (fractions) as percentages, anything else as a number."""
    return f"{100 * value:.2f}%" if name.startswith("nme") else f"{value:.4f}"


def _unit(points: Tensor, size: tuple[int, int]) -> Tensor:
    return pixel_to_unit(points, size)


def _unit3(points: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, K, 3) image-frame points in pixels -> x / W, y / H, z / ((W + H) / 2)."""
    h, w = size
    return torch.cat([pixel_to_unit(points[..., :2], size), points[..., 2:] / ((w + h) / 2)], -1)


def _landmark_mask(lm: Tensor, vis: Tensor | None = None) -> Tensor | None:
    mask = lm.isfinite().all(-1)
    if vis is not None:
        mask = mask & vis.bool()
    return None if bool(mask.all()) else mask


def image_frame_3d(kp3d: Tensor, kp2d: Tensor) -> Tensor:
    """3D ground truth in the image frame: x, y the 2D landmarks, z scaled like them.

    Camera-frame joints (synthetic sets: metres in front of a perspective camera) and image
    coordinates differ by a per-image scale (framing, distance), which no single linear
    regression can undo. Per image, ``s`` is the least-squares scale from the centred camera
    x, y to the centred 2D landmarks; the result is ``(u, v, s (z - mean z))``, the
    weak-perspective image frame in which AFLW2000-3D gives its 3D landmarks (for such data
    ``s = 1`` and nothing changes). Non-finite landmarks stay non-finite.

    Args:
        kp3d: (N, L, 3) ground truth, camera or image frame.
        kp2d: (N, L, 2) the same landmarks in the image.

    Returns:
        (N, L, 3) in the units of ``kp2d``.
    """
    if kp3d.shape[:-1] != kp2d.shape[:-1] or kp3d.shape[-1] != 3 or kp2d.shape[-1] != 2:
        raise ValueError(
            f"image_frame_3d: need kp3d (N, L, 3) and kp2d (N, L, 2) of the same landmarks, "
            f"got {tuple(kp3d.shape)} and {tuple(kp2d.shape)}"
        )
    ok = (kp3d.isfinite().all(-1) & kp2d.isfinite().all(-1))[..., None]
    w = ok.to(kp3d.dtype)
    X, x = kp3d.nan_to_num() * w, kp2d.nan_to_num() * w
    Xc = (X - masked_mean(X, w, -2, keepdim=True)) * w
    xc = (x - masked_mean(x, w, -2, keepdim=True)) * w
    s = least_squares_scale(Xc[..., :2], xc)
    out = torch.cat([kp2d, s[:, None, None] * Xc[..., 2:]], -1)
    return out.masked_fill(~ok, float("nan"))


_LR = "left/right swaps forgiven (AutoLink's Human3.6M protocol)"


def _mirror(test: Collected, n_landmarks: int) -> tuple[int, ...] | None:
    """The landmarks' left/right mirror from the test set's names, if they name sides in pairs."""
    names = test.landmark_names
    if names is None or len(names) != n_landmarks:
        return None
    try:
        return mirror_permutation(names)
    except ValueError:  # unpaired or repeated names: the protocol does not apply
        return None


def _track_sv3(points: Tensor) -> Tensor | None:
    """``tracks_sv3`` of (N, K, 2) points, or None where it is undefined (fewer than 3 points,
    or fewer than 2 images with all of them finite)."""
    try:
        return track_singular_values(points)[2]
    except ValueError:
        return None


def evaluate_keypoint_discovery(fit: Collected, test: Collected) -> dict[str, Any]:
    """Protocols for discovered image keypoints (see the module docstring).

    Returns:
        A dict of named results, each ``{"value": float, "protocol": str}``, plus ``counts``.
    """
    if fit.gt.kp2d is None or test.gt.kp2d is None:
        raise ValueError("2D NME needs landmarks (kp2d) in both the fit and the test set")
    if fit.pred.kp2d is None or test.pred.kp2d is None:
        raise ValueError("the model does not predict 2D keypoints")
    if fit.image_size is None or test.image_size is None:
        raise ValueError("2D NME needs images")
    fk, tk = _unit(fit.pred.kp2d, fit.image_size), _unit(test.pred.kp2d, test.image_size)
    fl, tl = (
        _unit(fit.gt.kp2d.float(), fit.image_size),
        _unit(test.gt.kp2d.float(), test.image_size),
    )
    fv, tv = _landmark_mask(fl, fit.gt.vis), _landmark_mask(tl, test.gt.vis)
    n_lm = fl.shape[1]
    results: dict[str, Any] = {
        "counts": {
            "fit": int(fk.shape[0]),
            "test": int(tk.shape[0]),
            "keypoints": int(fk.shape[1]),
            "landmarks": n_lm,
        }
    }

    def add(name: str, value: Tensor, protocol: str) -> None:
        results[name] = {"value": float(value), "protocol": protocol}

    # Face landmark sets have their own protocols, which keep the labels as given.
    mirror = None if n_lm in (5, 68) else _mirror(test, n_lm)

    # The headline 2D NME: its name, normaliser and protocol (on the landmarks as given).
    headline, normaliser, protocol = {
        68: ("nme68", INTER_OCULAR_68, "68 iBUG landmarks, outer-eye-corner distance (36, 45)"),
        5: ("nme5", INTER_PUPIL_MAFL5, "5 MAFL landmarks, eye-centre distance"),
    }.get(n_lm, ("nme", "bbox", f"{n_lm} landmarks, ground-truth box sqrt(w h)"))
    r = nme_2d(fk, fl, tk, tl, normaliser, fit_vis=fv, test_vis=tv)
    add(headline, r.nme, f"2D NME, {protocol}")
    if n_lm == 68:
        # Missing landmarks propagate as NaN through the 5-point means and are masked there.
        f5 = mafl5_from_ibug68(fl if fv is None else fl.masked_fill(~fv[..., None], float("nan")))
        t5 = mafl5_from_ibug68(tl if tv is None else tl.masked_fill(~tv[..., None], float("nan")))
        r = nme_2d(
            fk,
            f5,
            tk,
            t5,
            INTER_PUPIL_MAFL5,
            fit_vis=_landmark_mask(f5),
            test_vis=_landmark_mask(t5),
        )
        add("nme5", r.nme, "2D NME, MAFL 5 points from iBUG-68, eye-centre distance")
    elif mirror is not None:
        r = nme_2d(fk, fl, tk, tl, "bbox", fit_vis=fv, test_vis=tv, mirror=mirror)
        add("nme_lr", r.nme, f"2D NME, {n_lm} landmarks, ground-truth box sqrt(w h), " + _LR)

    # The same protocol from one constant keypoint: the regression can only output the fit
    # set's mean landmark layout, which is what keypoints that follow nothing score.
    const_f, const_t = torch.ones_like(fk[:, :1]), torch.ones_like(tk[:, :1])
    r = nme_2d(const_f, fl, const_t, tl, normaliser, fit_vis=fv, test_vis=tv)
    add(
        f"{headline}_mean_layout_baseline",
        r.nme,
        f"{results[headline]['protocol']}, of the fit set's mean landmark layout for every image "
        "(baseline: keypoints that follow nothing)",
    )

    sv3, sv3_gt = _track_sv3(tk), _track_sv3(tl)
    if sv3 is not None:
        add(
            "tracks_sv3",
            sv3,
            "discovered keypoints' tracks (test set, centred and "
            "scale-normalised per image): 3rd singular value over the 1st; near 0 = affine maps "
            "of one flat template, no depth for any lifting to recover",
        )
    if sv3_gt is not None:
        add(
            "tracks_sv3_gt",
            sv3_gt,
            "the same for the ground-truth landmarks (every finite one, occluded or not)",
        )
    if test.pred.R is not None:
        add(
            "rotation_spread_deg",
            rotation_spread(test.pred.R) * 180 / torch.pi,
            "3D head: mean angle (degrees) of the predicted rotations from their mean rotation",
        )
    key3d = "kp3d_image" if fit.pred.kp3d_image is not None else "kp3d"
    fp3, tp3 = getattr(fit.pred, key3d), getattr(test.pred, key3d)
    if fp3 is not None and tp3 is not None and fit.gt.kp3d is not None and test.gt.kp3d is not None:
        fg = image_frame_3d(fit.gt.kp3d.float(), fit.gt.kp2d.float())
        tg = image_frame_3d(test.gt.kp3d.float(), test.gt.kp2d.float())
        fv3, tv3 = _landmark_mask(fg), _landmark_mask(tg)
        fp, tp = _unit3(fp3, fit.image_size), _unit3(tp3, test.image_size)

        inputs = {
            "nme3d": (
                fp,
                tp,
                "3D NME from the discovered 3D keypoints, ground-truth box sqrt(w h)",
            ),
            "nme3d_depth": (
                torch.cat([fk, fp[..., 2:]], -1),
                torch.cat([tk, tp[..., 2:]], -1),
                "3D NME from the discovered 2D keypoints with the 3D head's depth",
            ),
            "nme3d_flat_baseline": (
                torch.cat([fk, torch.zeros_like(fk[..., :1])], -1),
                torch.cat([tk, torch.zeros_like(tk[..., :1])], -1),
                "3D NME from the discovered 2D keypoints at the mean depth (baseline)",
            ),
        }
        variants = [("", None)] + ([("_lr", mirror)] if mirror is not None else [])
        for suffix, m in variants:
            for name, (fit_kp, test_kp, protocol) in inputs.items():
                r = nme_3d(fit_kp, fg, test_kp, tg, "bbox", fit_vis=fv3, test_vis=tv3, mirror=m)
                add(name + suffix, r.nme, protocol + (f", {_LR}" if suffix else ""))
    return results


# --------------------------------------------------------------------------- lifting protocol


def normalise_per_sample(kp2d: Tensor, vis: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """C3DPO/ANCHORS per-sample normalisation of 2D observations.

    Args:
        kp2d: (..., K, 2) observations.
        vis: (..., K) bool, or None for all visible.

    Returns:
        ``(centre (..., 2), scale (...))``: the mean of the visible points and the RMS distance of
        the centred visible points from it.
    """
    norm = normalise_keypoints(kp2d, vis, eps=0.0)
    return norm.centre, norm.scale


def _to_normalised(points: Tensor, centre: Tensor, scale: Tensor) -> Tensor:
    shifted = points.clone()
    shifted[..., :2] = shifted[..., :2] - centre[..., None, :]
    return shifted / scale[..., None, None]


def fit_orthographic_depth(
    shape: Tensor, obs: Tensor, vis: Tensor | None = None, *, iterations: int = 60
) -> Tensor:
    """Depths of a fixed 3D ``shape`` placed by the best orthographic fit to each observation.

    Minimises ``sum_k w_k || s (R X_k)_{xy} + t - y_k ||^2`` over rotation, scale and translation
    per sample (the mean-shape baseline of the lifting protocol), starting from the nearest
    scaled-Stiefel projection of the affine fit and its depth mirror, refined by L-BFGS.

    Args:
        shape: (K, 3) shape, centred.
        obs: (N, K, 2) observations, centred.
        vis: (N, K) bool.

    Returns:
        (N, K) depths ``s (R X_k)_z`` of the fitted shape (mean over visible points not removed).
    """
    X = shape.to(torch.float64)
    Y = obs.to(torch.float64)
    w = torch.ones_like(Y[..., 0]) if vis is None else vis.to(torch.float64)
    N = Y.shape[0]
    Xb = X.expand(N, -1, -1)
    # Affine initialisation: A (N, 2, 3) with Y ~ X A^T, then project onto s * (orthonormal rows).
    XtW = (Xb * w[..., None]).transpose(1, 2)
    A = torch.linalg.solve(XtW @ Xb + 1e-9 * torch.eye(3, dtype=X.dtype), XtW @ Y).transpose(1, 2)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    rows = U @ Vh
    third = torch.linalg.cross(rows[:, 0], rows[:, 1])
    best_depth = None
    best_loss = None
    R0 = roma.special_procrustes(torch.stack([rows[:, 0], rows[:, 1], third], 1))
    flip = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=X.dtype))
    # Two starts: the projected affine fit and its depth-reversed (Necker) twin D R D.
    for start in (R0, flip @ R0 @ flip):
        loss, P = _refine_orthographic_pose(Xb, Y, w, start, S.mean(-1), iterations)
        if best_loss is None:
            best_loss, best_depth = loss, P[..., 2]
        else:
            better = loss < best_loss
            best_depth = torch.where(better[:, None], P[..., 2], best_depth)
            best_loss = torch.minimum(loss, best_loss)
    return best_depth.to(obs.dtype)


def _refine_orthographic_pose(
    X: Tensor, Y: Tensor, w: Tensor, R0: Tensor, s0: Tensor, iterations: int
) -> tuple[Tensor, Tensor]:
    """L-BFGS on rotation (axis-angle), log-scale and 2D translation from (R0, s0).

    X (N, K, 3), Y (N, K, 2), w (N, K) -> per-sample weighted residual (N,), posed X (N, K, 3).

    Not shared with the lifters' test-time refinement (``LiftingNet.refine_rotations``), which
    also starts from R and its depth twin D R D: that one refines the rotation alone, by a fixed
    number of Adam steps, on the ridge-regularised fit of a deformable shape, while this baseline
    poses a fixed shape with scale and translation to convergence. One function for both would
    change the numbers of one or the other.
    """
    rotvec = matrix_to_axis_angle(R0).detach().clone().requires_grad_(True)
    log_s = s0.clamp_min(1e-9).log().detach().clone().requires_grad_(True)
    t = torch.zeros_like(Y[:, 0]).requires_grad_(True)
    opt = torch.optim.LBFGS([rotvec, log_s, t], max_iter=iterations, line_search_fn="strong_wolfe")

    def residual() -> tuple[Tensor, Tensor]:
        P = log_s.exp()[:, None, None] * (X @ axis_angle_to_matrix(rotvec).transpose(1, 2))
        r = P[..., :2] + t[:, None] - Y
        return (r * w[..., None]).pow(2).sum((1, 2)), P

    def closure() -> Tensor:
        opt.zero_grad()
        loss = residual()[0].sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return residual()


def procrustes_mean_shape(
    shapes: Tensor, vis: Tensor | None = None, *, iterations: int = 10
) -> Tensor:
    """Generalised Procrustes mean of 3D shapes (N, K, 3): each shape is rotated and scaled
    (no reflection) onto the current mean, which is then re-estimated; the result is centred.
    Ground-truth poses vary, so a plain mean of camera-frame shapes would be meaningless."""
    x = shapes.to(torch.float64)
    x = x - x.mean(-2, keepdim=True)
    mean = x[0]
    for _ in range(iterations):
        aligned = procrustes(
            x, mean.expand_as(x), weights=None if vis is None else vis.to(x.dtype)
        ).aligned
        new = aligned.mean(0)
        new = new - new.mean(0)
        new = new / new.norm() * x[0].norm()
        if torch.allclose(new, mean, atol=1e-10):
            break
        mean = new
    return mean.to(shapes.dtype)


def lifting_errors(
    pred: Tensor, gt: Tensor, kp2d: Tensor, vis: Tensor | None
) -> dict[str, dict[str, float]]:
    """MPJPE / Stress / P-MPJPE of ``pred`` against ``gt`` with the per-sample normalisation of
    the 2D input ``kp2d``: ``{"mpjpe": {"norm": .., "input_units": ..}, ...}``."""
    centre, s = normalise_per_sample(kp2d, vis)
    p, g = _to_normalised(pred, centre, s), _to_normalised(gt, centre, s)
    per = {
        "mpjpe": mpjpe(p, g, vis=vis, flip_z=True, reduction="none"),
        "stress": stress(p, g, vis=vis, reduction="none"),
        "p_mpjpe": p_mpjpe(p, g, vis=vis, flip_z=True, reduction="none"),
    }
    return {
        k: {"norm": float(v.mean()), "input_units": float((v * s).mean())} for k, v in per.items()
    }


def _mean_shape_prediction(test: Sample, fit: Sample) -> Tensor:
    """The mean-shape baseline's 3D keypoints (N, K, 3) for ``test``: the Procrustes mean of
    ``fit``'s normalised ground-truth shapes, placed by the best orthographic fit to each test
    observation."""
    assert test.kp2d is not None and fit.kp2d is not None and fit.kp3d is not None
    kp2d, vis = test.kp2d.double(), test.vis
    fc, fs = normalise_per_sample(fit.kp2d.double(), fit.vis)
    fg = _to_normalised(image_frame_3d(fit.kp3d.double(), fit.kp2d.double()), fc, fs)
    mean_shape = procrustes_mean_shape(fg, fit.vis)
    tc, ts = normalise_per_sample(kp2d, vis)
    obs = (kp2d - tc[..., None, :]) / ts[..., None, None]
    depth = fit_orthographic_depth(mean_shape, obs, vis)
    return torch.cat([kp2d, (depth * ts[..., None])[..., None]], -1)


def _category_part(sample: Sample, rows: Tensor, cols: Tensor) -> Sample:
    """The rows ``rows`` (N,) bool of a batch ``sample`` and, of its keypoint fields, the
    columns ``cols`` (K,) bool."""
    fields: dict[str, Any] = {}
    for f in sample.present():
        t = getattr(sample, f)[rows]
        fields[f] = t[:, cols] if f in ("kp2d", "vis", "kp3d") else t
    names = sample.name
    if isinstance(names, list):
        fields["name"] = [n for n, keep in zip(names, rows.tolist(), strict=True) if keep]
    return sample.replace(**fields)


def category_columns(sample: Sample, rows: Tensor) -> Tensor:
    """(K,) bool: the keypoints of the samples ``rows`` (N,) bool of a multi-category batch,
    those with finite 2D and 3D ground truth that some of them see (``vis``)."""
    assert sample.kp2d is not None and sample.kp3d is not None
    ok = sample.kp2d[rows].isfinite().all(-1) & sample.kp3d[rows].isfinite().all(-1)
    if sample.vis is not None:
        ok = ok & sample.vis[rows].bool()
    return ok.any(0)


def evaluate_lifting(
    pred_kp3d: Tensor,
    test: Sample,
    *,
    fit: Sample | None = None,
    category_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The lifting protocol (module docstring) for predictions ``pred_kp3d`` (N, K, 3) of the test
    set ``test`` (a batch Sample with kp2d, kp3d and optionally vis). ``fit`` (with kp3d) enables
    the mean-shape baseline. Ground truth in a camera frame (synthetic sets: metres) is first
    brought into the image frame of ``kp2d`` by :func:`image_frame_3d`, a no-op for ground truth
    that already shares x, y with the 2D input (AFLW2000-3D).

    A test set of several categories (``category`` labels) adds ``per_category``: the same
    protocol per label (Can et al., Table 4), on that category's samples and keypoints
    (:func:`category_columns`), its mean shape from the fit set's samples of that label (when
    the fit set has labels); the pooled mean-shape row then uses each category's own mean
    shape. Those rows are keyed by label (``"0"``, ...), each with its ``category`` name from
    ``category_names`` when given."""
    if test.kp2d is None or test.kp3d is None:
        raise ValueError("the lifting protocol needs 2D inputs and 3D ground truth (kp2d, kp3d)")
    kp2d, vis = test.kp2d.double(), test.vis
    gt = image_frame_3d(test.kp3d.double(), kp2d)
    out: dict[str, Any] = {"counts": {"test": int(kp2d.shape[0]), "keypoints": int(kp2d.shape[1])}}
    out["method"] = lifting_errors(pred_kp3d.double(), gt, kp2d, vis)
    flat = torch.cat([kp2d, torch.zeros_like(kp2d[..., :1])], -1)
    out["flat"] = lifting_errors(flat, gt, kp2d, vis)
    labels = [] if test.category is None else sorted(set(test.category.tolist()))
    with_fit = fit is not None and fit.kp3d is not None and fit.kp2d is not None
    if len(labels) > 1:
        assert test.category is not None
        per: dict[str, Any] = {}
        pred_ms = flat.clone()
        for z in labels:
            rows = test.category == z
            cols = category_columns(test, rows)
            fit_z = None
            if with_fit and fit is not None and fit.category is not None:
                fit_rows = fit.category == z
                fit_z = _category_part(fit, fit_rows, cols) if bool(fit_rows.any()) else None
            test_z = _category_part(test, rows, cols)
            per[str(z)] = evaluate_lifting(pred_kp3d[rows][:, cols], test_z, fit=fit_z)
            if category_names is not None and 0 <= z < len(category_names):
                per[str(z)]["category"] = category_names[z]
            if fit_z is not None:
                idx = rows.nonzero().squeeze(1)
                pred_ms[idx[:, None], cols.nonzero().squeeze(1)[None]] = _mean_shape_prediction(
                    test_z, fit_z
                ).to(pred_ms.dtype)
        if with_fit and all("mean_shape" in r for r in per.values()):
            assert fit is not None and fit.kp2d is not None
            out["mean_shape"] = lifting_errors(pred_ms, gt, kp2d, vis)
            out["counts"]["fit"] = int(fit.kp2d.shape[0])
        out["per_category"] = per
    elif with_fit:
        assert fit is not None and fit.kp2d is not None
        out["mean_shape"] = lifting_errors(_mean_shape_prediction(test, fit), gt, kp2d, vis)
        out["counts"]["fit"] = int(fit.kp2d.shape[0])
    return out


# --------------------------------------------------------------------------- surface protocol


def erode_mask(mask: Tensor) -> Tensor:
    """Unsup3d's one-pixel erosion of (..., 1, H, W) masks: a pixel stays where its whole 3x3
    neighbourhood is in the mask (3x3 average pool > 0.99, zero padding, so the border goes)."""
    m = mask.to(torch.float32)
    flat = m.reshape(-1, 1, *m.shape[-2:])
    pooled = torch.nn.functional.avg_pool2d(flat, 3, stride=1, padding=1)
    return (pooled > 0.99).reshape(mask.shape)


def _surface_errors(
    pred: Tensor, gt: Tensor, mask: Tensor, intrinsics: Tensor | None
) -> tuple[float, float]:
    """Mean SIDE and MAD (degrees) of (N, 1, H, W) depth maps over ``mask``."""
    n_pred = depth_to_normals(pred, intrinsics)
    n_gt = depth_to_normals(gt, intrinsics)
    return float(side(pred, gt, mask)), float(mad(n_pred, n_gt, mask))


def evaluate_surface_depth(fit: Collected, test: Collected) -> dict[str, Any]:
    """Unsup3d's depth protocol (Wu, Rupprecht & Vedaldi, CVPR 2020) on ``Prediction.depth``.

    Per test image, the evaluated pixels are the ground-truth foreground (``mask > 0.5`` and
    ``depth > 0``), eroded by one pixel (:func:`erode_mask`), intersected with the prediction's
    own eroded ``mask`` where the method predicts one (Unsup3d's rendered-pixel mask); images
    with no pixel left are not scored. ``side`` (:func:`kp3d.metrics.side`) and ``mad_deg``
    (:func:`kp3d.metrics.mad`, normals from each depth map by :func:`kp3d.metrics.depth_to_normals`
    with the test set's intrinsics, else Unsup3d's camera) are means over images. Baselines on the
    same pixels, as Unsup3d's Table 2: ``_null_baseline``, a constant depth (the image's mean
    ground-truth depth: a fronto-parallel plane), and ``_average_baseline``, the per-pixel mean
    of the *fit* set's ground-truth depth maps (the mean over all fit pixels where no fit image
    has a surface).

    Returns:
        ``{"side": {"value", "protocol"}, "mad_deg": ..., "side_null_baseline": ...,
        "mad_deg_null_baseline": ..., "side_average_baseline": ...,
        "mad_deg_average_baseline": ..., "counts": ...}``.

    Raises:
        ValueError: missing depth or masks, maps of different sizes, no pixel left to score.
    """
    pred, gt, gm = test.pred.depth, test.gt.depth, test.gt.mask
    if pred is None or gt is None or gm is None:
        raise ValueError("the surface protocol needs predicted depth and ground-truth depth+mask")
    if fit.gt.depth is None or fit.gt.mask is None:
        raise ValueError("the surface protocol's average-depth baseline needs depth+mask to fit")
    if pred.shape != gt.shape or fit.gt.depth.shape[1:] != gt.shape[1:] or gt.ndim != 4:
        raise ValueError(
            f"the surface protocol needs (N, 1, H, W) depth maps of one size, got prediction "
            f"{tuple(pred.shape)}, test {tuple(gt.shape)}, fit {tuple(fit.gt.depth.shape)}"
        )
    gt = gt.double()
    mask = erode_mask((gm > 0.5) & (gt > 0))
    if test.pred.mask is not None:
        mask = mask & erode_mask(test.pred.mask > 0.5)
    keep = mask.flatten(1).any(1)
    if not bool(keep.any()):
        raise ValueError("the surface protocol: no test image has a pixel left to score")
    K = test.gt.intrinsics
    K = None if K is None or K.ndim != 3 else K[keep].double()
    pred, gt, mask = pred[keep].double(), gt[keep], mask[keep]

    fd, fm = fit.gt.depth.double(), ((fit.gt.mask > 0.5) & (fit.gt.depth > 0)).double()
    total = (fd * fm).sum(0)
    count = fm.sum(0)
    fill = total.sum() / count.sum().clamp_min(1)
    average = torch.where(count > 0, total / count.clamp_min(1), fill).expand_as(gt)
    level = (gt * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3))
    null = level[:, None, None, None].expand_as(gt)

    results: dict[str, Any] = {
        "counts": {"fit": int(fd.shape[0]), "test": int(keep.shape[0]), "scored": int(keep.sum())}
    }
    where = "ground-truth foreground eroded by 1 px"
    for suffix, depth, what in (
        ("", pred, "predicted depth"),
        ("_null_baseline", null, "constant depth (baseline)"),
        ("_average_baseline", average, "mean ground-truth depth map of the fit set (baseline)"),
    ):
        s_err, m_err = _surface_errors(depth, gt, mask, K)
        results["side" + suffix] = {"value": s_err, "protocol": f"SIDE (Unsup3d), {what}, {where}"}
        results["mad_deg" + suffix] = {
            "value": m_err,
            "protocol": f"MAD in degrees (Unsup3d), {what}, {where}",
        }
    return results


# ----------------------------------------------------------------------- multi-view protocol


def _centred(points: Tensor) -> Tensor:
    """(N, K, 3) minus the mean of each sample's finite points (non-finite stay non-finite)."""
    ok = points.isfinite().all(-1, keepdim=True)
    n = ok.sum(-2, keepdim=True).clamp_min(1)
    mean = torch.where(ok, points, 0.0).sum(-2, keepdim=True) / n
    return points - mean


def _first_view(kp3d: Tensor) -> Tensor:
    """Ground-truth 3D joints (N, V, L, 3) of multi-view samples -> the first view's (N, L, 3)."""
    return kp3d[:, 0] if kp3d.ndim == 4 else kp3d


def evaluate_multiview_3d(fit: Collected, test: Collected) -> dict[str, Any]:
    """3D keypoints of a multi-view method against the ground-truth 3D joints.

    ``Prediction.kp3d`` (N, K, 3) is compared with the joints in the camera frame of each
    sample's first view (``Sample.kp3d[:, 0]``), both centred per sample, through the bias-free
    3K -> 3L regression of :func:`kp3d.metrics.nme_3d` fitted on the *fit* set: ``nme3d``,
    normalised by the ground-truth box ``sqrt(w h)`` of the joints' x, y (every finite joint).

    Raises:
        ValueError: missing 3D keypoints or joints.
    """
    if test.pred.kp3d is None or fit.pred.kp3d is None:
        raise ValueError("the multi-view protocol needs predicted 3D keypoints (kp3d)")
    if test.gt.kp3d is None or fit.gt.kp3d is None:
        raise ValueError("the multi-view protocol needs ground-truth 3D joints (kp3d)")
    fg, tg = (
        _centred(_first_view(fit.gt.kp3d).double()),
        _centred(_first_view(test.gt.kp3d).double()),
    )
    fp, tp = _centred(fit.pred.kp3d.double()), _centred(test.pred.kp3d.double())
    r = nme_3d(fp, fg, tp, tg, "bbox", fit_vis=_landmark_mask(fg), test_vis=_landmark_mask(tg))
    return {
        "counts": {
            "fit": int(fp.shape[0]),
            "test": int(tp.shape[0]),
            "keypoints": int(tp.shape[1]),
            "landmarks": int(tg.shape[1]),
        },
        "nme3d": {
            "value": float(r.nme),
            "protocol": "3D NME, multi-view 3D keypoints against "
            "the first view's camera-frame joints (both centred), 3K -> 3L regression on "
            "the fit set, ground-truth box sqrt(w h)",
        },
    }


def evaluate_foreground_mask(fit: Collected, test: Collected) -> dict[str, Any]:
    """Predicted foreground masks against the ground-truth masks of the test set.

    ``mask_iou``: the mean over every view of every moment of :func:`kp3d.metrics.mask_iou`
    (both masks binarised at 0.5); ``mask_iou_full_baseline``: the same for a mask that calls
    every pixel foreground (the ground truth's foreground fraction). The fit set is not used.

    Raises:
        ValueError: missing masks or masks of different shapes.
    """
    pred, gt = test.pred.mask, test.gt.mask
    if pred is None or gt is None:
        raise ValueError("the mask protocol needs predicted and ground-truth masks (mask)")
    if pred.shape != gt.shape:
        raise ValueError(
            f"the mask protocol needs predicted masks of the ground truth's shape "
            f"{tuple(gt.shape)}, got {tuple(pred.shape)}"
        )
    return {
        "counts": {"test": int(gt.shape[0]), "masks": int(gt[..., 0, 0].numel())},
        "mask_iou": {
            "value": float(mask_iou(pred, gt)),
            "protocol": "foreground IoU per view, predicted and ground-truth masks at 0.5",
        },
        "mask_iou_full_baseline": {
            "value": float(mask_iou(torch.ones_like(gt), gt)),
            "protocol": "foreground IoU per view of an all-foreground mask (baseline)",
        },
    }


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: the fields it needs and how it runs.

    Attributes:
        prediction: :class:`~kp3d.methods.prediction.Prediction` fields the model must give.
        ground_truth: :class:`~kp3d.data.schema.Sample` fields the *test* set must have.
        fit_ground_truth: the fields the *fit* set must have.
        images: whether it needs the images' size (keypoints in pixels of images).
        run: ``(fit, test) -> results``, both :class:`Collected` (predictions and ground truth
            over a whole set); results are named ``{"value": float, "protocol": str}`` entries
            (or groups of them) and ``counts``.
        description: one line for messages.
        views: whether it scores multi-view sets (moments of V calibrated views: ground truth
            with a view axis) or single views; it is skipped on the other kind.
        options: names of the evaluation options (:func:`evaluate_protocols`) ``run`` takes as
            keywords.
    """

    prediction: tuple[str, ...]
    ground_truth: tuple[str, ...]
    run: Callable[..., dict[str, Any]]
    description: str
    fit_ground_truth: tuple[str, ...] = ()
    images: bool = False
    views: bool = False
    options: tuple[str, ...] = ()


def _lifting(fit: Collected, test: Collected) -> dict[str, Any]:
    assert test.pred.kp3d is not None  # checked by the registry's fields
    return evaluate_lifting(test.pred.kp3d, test.gt, fit=fit.gt, category_names=test.category_names)


def _pose_probe(fit: Collected, test: Collected, *, probe: ProbeConfig | None = None) -> dict:
    """The pose probe of :mod:`kp3d.metrics.probe` on a multi-view set: per-view 3D keypoints
    (N, V, K, 3) of a single-view method in each camera's frame, or one set per moment (N, K, 3)
    in the first view's camera frame (a multi-view method), brought to the world frame."""
    from kp3d.metrics.probe import (
        MultiviewTruth,
        ProbeConfig,
        camera_to_world,
        evaluate_multiview,
    )

    def keypoints(c: Collected) -> Tensor:
        kp = c.pred.kp3d.double()  # type: ignore[union-attr]
        if kp.ndim == 3:
            kp = camera_to_world(kp, c.gt.extrinsics[:, 0].double())  # type: ignore[index]
        return kp

    per_view = test.pred.kp3d is not None and test.pred.kp3d.ndim == 4
    f_cam, t_cam = fit.gt.extrinsics[:, 0].double(), test.gt.extrinsics[:, 0].double()  # type: ignore[index]
    if per_view and not torch.allclose(f_cam.mean(0), t_cam.mean(0), atol=1e-4):
        # Per-view keypoints are probed for the joints in camera 0's frame: another camera 0
        # would ask the probe for another mapping than the one it was fitted for.
        raise ValueError(
            "the pose probe needs the fit and test moments from one rig (their camera 0 "
            "differs); evaluate one rig set (without --fit: first half fit, second half test)"
        )

    return evaluate_multiview(
        keypoints(fit),
        keypoints(test),
        MultiviewTruth.from_batch(fit.gt),
        MultiviewTruth.from_batch(test.gt),
        config=probe or ProbeConfig(),
    )


PROTOCOLS: dict[str, Protocol] = {
    "keypoint_discovery": Protocol(
        prediction=("kp2d",),
        ground_truth=("kp2d",),
        fit_ground_truth=("kp2d",),
        images=True,
        run=evaluate_keypoint_discovery,
        description="discovered keypoints against landmarks by linear regression (2D and 3D NME)",
    ),
    "lifting": Protocol(
        prediction=("kp3d",),
        ground_truth=("kp2d", "kp3d"),
        run=_lifting,
        description="lifted 3D keypoints: MPJPE, Stress, P-MPJPE (C3DPO's protocol)",
    ),
    "surface_depth": Protocol(
        prediction=("depth",),
        ground_truth=("depth", "mask"),
        fit_ground_truth=("depth", "mask"),
        run=evaluate_surface_depth,
        description="depth maps: SIDE and MAD (Unsup3d's protocol)",
    ),
    "multiview_3d": Protocol(
        prediction=("kp3d",),
        ground_truth=("kp3d",),
        fit_ground_truth=("kp3d",),
        run=evaluate_multiview_3d,
        description="multi-view 3D keypoints against 3D joints by a 3K -> 3L regression",
        views=True,
    ),
    "pose_probe": Protocol(
        prediction=("kp3d",),
        ground_truth=("kp3d", "kp2d", "intrinsics", "extrinsics"),
        fit_ground_truth=("kp3d", "kp2d", "intrinsics", "extrinsics"),
        run=_pose_probe,
        description="frozen 3D keypoints probed for the 3D joints (Honari & Fua's multi-view "
        "protocol: linear and MLP probes on 1/10/100% labels, consistency, relative pose)",
        views=True,
        options=("probe",),
    ),
    "foreground_mask": Protocol(
        prediction=("mask",),
        ground_truth=("mask",),
        run=evaluate_foreground_mask,
        description="per-view foreground masks against ground-truth masks (IoU)",
        views=True,
    ),
}
"""Every evaluation protocol by name; a method's ``MethodSpec.protocols`` names those that apply
(register another by adding an entry)."""

_FIELD_WORDS = {
    "kp2d": "2D landmarks (kp2d)",
    "kp3d": "3D keypoints (kp3d)",
    "depth": "depth maps (depth)",
    "mask": "foreground masks (mask)",
}


def _words(field: str) -> str:
    return _FIELD_WORDS.get(field, field)


def why_not(protocol: Protocol, fit: Collected, test: Collected) -> str | None:
    """Why ``protocol`` cannot run on these sets (one line), or None when it can."""
    for f in protocol.prediction:
        if getattr(test.pred, f) is None:
            return f"the model predicts no {_words(f)}"
    for f in protocol.ground_truth:
        if getattr(test.gt, f) is None:
            return f"the test set has no {_words(f)}"
    for f in protocol.fit_ground_truth:
        if getattr(fit.gt, f) is None:
            return f"the fit set has no {_words(f)}"
    if protocol.images and (fit.image_size is None or test.image_size is None):
        return "the sets have no images"
    if protocol.views != _multiview(test):
        return "the test set is multi-view" if _multiview(test) else "the test set is single-view"
    return None


def _multiview(c: Collected) -> bool:
    """Whether the ground truth has a view axis (moments of V calibrated views)."""
    e = c.gt.extrinsics
    return (e is not None and e.ndim == 4) or (c.gt.kp2d is not None and c.gt.kp2d.ndim == 4)


class ProtocolResults(NamedTuple):
    """Results by protocol name, and the protocols skipped with their one-line reasons."""

    results: dict[str, dict[str, Any]]
    skipped: dict[str, str]


def evaluate_protocols(
    names: Sequence[str], fit: Collected, test: Collected, **options: Any
) -> ProtocolResults:
    """Run the protocols ``names`` (in order) that these sets allow; skip the others.
    ``options`` go to the protocols that take them (``probe``: a
    :class:`~kp3d.metrics.probe.ProbeConfig` for ``pose_probe``).

    Raises:
        KeyError: a name that is not in :data:`PROTOCOLS`.
        ValueError: from a protocol that runs but cannot score the data (message says why).
    """
    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name not in PROTOCOLS:
            raise KeyError(f"unknown evaluation protocol {name!r}; known: {sorted(PROTOCOLS)}")
        protocol = PROTOCOLS[name]
        reason = why_not(protocol, fit, test)
        if reason is None:
            taken = {k: v for k, v in options.items() if k in protocol.options}
            results[name] = protocol.run(fit, test, **taken)
        else:
            skipped[name] = reason
    return ProtocolResults(results, skipped)


def result_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(metric, shown value, protocol)`` rows of evaluation results for tables: entries with
    a ``value``, groups of ``{"norm", "input_units"}`` errors, pose errors ``{"mpjpe",
    "n_mpjpe", "p_mpjpe"}`` (the pose probe's), other numbers as they are, and groups of any of
    these; ``counts`` left out."""
    rows: list[tuple[str, str, str]] = []

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for name, r in tree.items():
            if name == "counts":
                continue
            if isinstance(r, (int, float)) and not isinstance(r, bool):
                rows.append((prefix + name, f"{r:.4g}", ""))
                continue
            if not isinstance(r, dict):
                continue
            if {"mpjpe", "n_mpjpe", "p_mpjpe"} <= set(r):
                shown = " / ".join(f"{r[k]:.4f}" for k in ("mpjpe", "n_mpjpe", "p_mpjpe"))
                rows.append((prefix + name, shown, "MPJPE / N-MPJPE / P-MPJPE, data units"))
            elif "value" in r:
                rows.append((prefix + name, format_value(name, r["value"]), r.get("protocol", "")))
            elif "norm" in r:
                rows.append(
                    (
                        prefix + name,
                        f"{r['norm']:.4f} / {r['input_units']:.3f}",
                        "normalised / input units",
                    )
                )
            else:
                walk(r, f"{prefix}{name} ")

    walk(results, "")
    return rows
