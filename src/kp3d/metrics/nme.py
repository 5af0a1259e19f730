"""Landmark-regression NME: how well unsupervised keypoints predict annotated landmarks.

Protocol (Thewlis et al., ICCV 2017; Zhang et al., CVPR 2018; used verbatim by AutoLink, He et
al., NeurIPS 2022, ``datasets/celeba_wild.py`` and ``datasets/cub.py`` of its official code):

1. The K discovered keypoints of each image, in *unit* coordinates ``(u / W, v / H)`` of the
   image the detector saw, are flattened to a vector of length D·K (x0, y0, x1, y1, ...).
2. A linear map **without bias** ``W`` (D·K × D·L) from those vectors to the flattened L
   annotated landmarks is fitted in closed form by least squares on a labelled *fit* set.
3. It is applied unchanged to a *test* set; per landmark the L2 error is divided by the image's
   normaliser, then averaged over landmarks and images.

Because there is no bias, the coordinate origin is part of the protocol: keypoints must be unit
coordinates in [0, 1] (AutoLink maps its [-1, 1] keypoints by ``x * 0.5 + 0.5``, which is exactly
``u / W`` under kp3d's ``align_corners=False`` convention), and landmarks must be in the *same*
frame, in unit coordinates or any uniform multiple of them (for example pixels of a square
network input): a uniform scale of the landmarks scales predictions, errors and landmark-derived
normalisers alike and leaves the NME unchanged. Landmarks annotated on an image that was resized
to a different aspect ratio for the detector must first be mapped with separate x / W and y / H
factors (:func:`pixel_to_unit`).

Normalisers: inter-ocular distance between the outer eye corners for 68-point iBUG landmarks
(:data:`INTER_OCULAR_68`), eye-centre distance for the 5 MAFL landmarks
(:data:`INTER_PUPIL_MAFL5`), the ground-truth bounding-box size ``sqrt(w h)`` of 3DDFA's
AFLW2000-3D protocol (``"bbox"``), or any per-image distances.

Missing landmarks (CUB-200-2011; AutoLink ``datasets/cub.py``): each landmark's regression
columns are fitted only on the fit images where that landmark is visible, and the NME is the mean
over all visible (test image, landmark) pairs, pooled. Without missing landmarks the pooled mean
equals the mean over landmarks then images. AutoLink reports CUB errors unnormalised in unit
coordinates, i.e. ``normaliser=1.0``.

Left/right ambiguity (AutoLink's Human3.6M protocol, ``regress_kp`` and ``test_epoch_end`` of
its ``datasets/h36m.py``): unsupervised keypoints on a bilaterally symmetric body often follow the
side of the image rather than the side of the body, so with ``mirror`` (the landmark index of
each landmark's left/right counterpart, :func:`mirror_permutation`) the ground truth of an image
is replaced by its mirror labelling wherever that is closer to the regression's prediction: on
the fit set repeatedly, refitting after each round, until at most ten images would change; then
fit images whose mean error exceeds the mean plus three standard deviations are left out and
the map is fitted once more; on the test set in one round, applied only if more than ten images
would change (all as in AutoLink's code; the per-image errors deciding are unnormalised, over
visible landmarks).

The solve is ``torch.linalg.lstsq`` with the SVD-based ``gelsd`` driver in float64, the same
solution as AutoLink's normal equations ``(X^T X)^{-1} X^T Y`` whenever ``X^T X`` is invertible
and the minimum-norm one otherwise. No regularisation unless ``ridge > 0`` is asked for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

import torch
from torch import Tensor

from kp3d import geometry
from kp3d.metrics._utils import ArrayLike, as_mask, as_tensor, float_dtype

INTER_OCULAR_68: Final[tuple[int, int]] = (36, 45)
"""Outer eye corners of the 68-point iBUG scheme (0-based): the 68-landmark normaliser."""
INTER_PUPIL_MAFL5: Final[tuple[int, int]] = (0, 1)
"""Eye centres of the 5 MAFL landmarks: the 5-landmark normaliser ("inter-ocular" in MAFL work)."""
IBUG68_EYE_1: Final[tuple[int, ...]] = tuple(range(36, 42))
"""iBUG-68 contour of the eye on the image left (the subject's right eye)."""
IBUG68_EYE_2: Final[tuple[int, ...]] = tuple(range(42, 48))
"""iBUG-68 contour of the eye on the image right (the subject's left eye)."""
IBUG68_NOSE_TIP: Final[int] = 30
IBUG68_MOUTH_CORNERS: Final[tuple[int, int]] = (48, 54)

Normaliser = Tensor | float | tuple[int, int] | Literal["bbox"]


class NMEResult(NamedTuple):
    """Result of :func:`nme_2d` / :func:`nme_3d`; errors are fractions (multiply by 100 for %)."""

    nme: Tensor
    """() the NME: mean normalised error over all visible (test image, landmark) pairs."""
    per_image: Tensor
    """(N_test,) mean normalised error over each image's visible landmarks (NaN if none)."""
    errors: Tensor
    """(N_test, L) normalised error of each landmark; NaN where the landmark is not visible."""
    pred: Tensor
    """(N_test, L, D) landmarks predicted by the fitted map, in the landmarks' units."""
    weights: Tensor
    """(D·K, D·L) the fitted map: ``pred.flatten(1) = test_kp.flatten(1) @ weights``."""
    mirrored: Tensor | None = None
    """(N_test,) bool, test images scored against the mirrored labelling (``mirror`` given)."""


def pixel_to_unit(points: ArrayLike, image_size: tuple[int, int]) -> Tensor:
    """Continuous pixel coordinates (u, v) to unit coordinates (u / W, v / H).

    Args:
        points: (..., 2) pixel coordinates (x right, y down) of an image of ``image_size``.
        image_size: ``(H, W)`` of that image, in pixels.

    Returns:
        (..., 2) unit coordinates; the image covers [0, 1] x [0, 1].
    """
    p = as_tensor(points, "points", "pixel_to_unit")
    if p.shape[-1:] != (2,):
        raise ValueError(f"pixel_to_unit: points must be (..., 2), got {tuple(p.shape)}")
    H, W = image_size
    if not (H > 0 and W > 0):
        raise ValueError(f"pixel_to_unit: image_size (H, W) must be positive, got {image_size}")
    return geometry.pixel_to_unit(p.to(float_dtype(p)), image_size)


def mafl5_from_ibug68(landmarks: ArrayLike) -> Tensor:
    """The 5 MAFL landmarks from 68-point iBUG landmarks.

    In MAFL/CelebA order: eye centre on the image left (mean of points 36-41), eye centre on the
    image right (mean of 42-47), nose tip (30), mouth corner on the image left (48), mouth corner
    on the image right (54); 0-based indices.

    Args:
        landmarks: (..., 68, D) iBUG-68 landmarks, D = 2 or 3.

    Returns:
        (..., 5, D).
    """
    lm = as_tensor(landmarks, "landmarks", "mafl5_from_ibug68")
    if lm.ndim < 2 or lm.shape[-2] != 68:
        raise ValueError(
            f"mafl5_from_ibug68: landmarks must be (..., 68, D), got {tuple(lm.shape)}"
        )
    eye_1 = lm[..., list(IBUG68_EYE_1), :].mean(-2)
    eye_2 = lm[..., list(IBUG68_EYE_2), :].mean(-2)
    nose = lm[..., IBUG68_NOSE_TIP, :]
    mouth_1, mouth_2 = (lm[..., i, :] for i in IBUG68_MOUTH_CORNERS)
    return torch.stack([eye_1, eye_2, nose, mouth_1, mouth_2], dim=-2)


_SIDE_SWAP: Final[dict[str, str]] = {"left": "right", "right": "left"}


def mirror_permutation(names: Sequence[str]) -> tuple[int, ...] | None:
    """Each named landmark's left/right counterpart, for ``nme_2d(..., mirror=...)``.

    A name's counterpart has the words ``left`` and ``right`` exchanged (words are separated by
    ``_``, ``-`` or spaces; any case): ``left_knee`` and ``right_knee``, ``"left eye"`` and
    ``"right eye"``; a name with neither word (``pelvis``) is its own counterpart. Only for
    landmark sets whose sided names correspond one to one: iBUG-68 face names, for instance,
    pair ``right_brow_1`` with ``left_brow_1``, which are not mirror images of each other.

    Args:
        names: the L landmark names.

    Returns:
        (L,) indices, an involution; None when no name mentions a side.

    Raises:
        ValueError: duplicate names, or a sided name whose counterpart is missing.
    """
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        dup = sorted({n for n in lowered if lowered.count(n) > 1})
        raise ValueError(f"mirror_permutation: duplicate landmark names {dup}")
    index = {n: i for i, n in enumerate(lowered)}
    sided = False
    out = []
    for name in lowered:
        words = re.split(r"([_\-\s]+)", name)
        swapped = "".join(_SIDE_SWAP.get(w, w) for w in words)
        sided |= swapped != name
        if swapped not in index:
            raise ValueError(
                f"mirror_permutation: landmark {name!r} has no counterpart {swapped!r}"
            )
        out.append(index[swapped])
    return tuple(out) if sided else None


def fit_linear_regression(
    x: ArrayLike, y: ArrayLike, *, mask: ArrayLike | None = None, ridge: float = 0.0
) -> Tensor:
    """Least-squares linear map without bias, ``argmin_W ||x W - y||^2 + ridge ||W||^2``.

    Output columns are independent least-squares problems; with ``mask``, column q is fitted only
    on the rows where ``mask[:, q]`` is true (rows are dropped, so masked-out entries of ``y``
    may hold anything, NaN included). Columns sharing a mask are solved together.

    Args:
        x: (N, P) inputs.
        y: (N, Q) targets.
        mask: (N, Q) bool, which targets are observed; ``None`` = all.
        ridge: >= 0 Tikhonov weight; 0 (default) is plain least squares.

    Returns:
        (P, Q) the map, in the promoted dtype of x and y and on x's device. Solved in float64 on
        the CPU with the SVD-based ``gelsd`` driver: the minimum-norm solution when x is rank
        deficient (as ``numpy.linalg.lstsq``).

    Raises:
        ValueError: on shape mismatches, a negative ridge, or a column with no observed row.
    """
    fn = "fit_linear_regression"
    X = as_tensor(x, "x", fn)
    Y = as_tensor(y, "y", fn)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"{fn}: x must be (N, P) and y (N, Q), got {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{fn}: no rows to fit")
    if not ridge >= 0:
        raise ValueError(f"{fn}: ridge must be >= 0, got {ridge}")
    M = as_mask(mask, tuple(Y.shape), "mask", fn)
    dtype, device = float_dtype(X, Y), X.device
    X64, Y64 = X.detach().cpu().double(), Y.detach().cpu().double()

    if M is None:
        return _lstsq(X64, Y64, ridge).to(device, dtype)
    M = M.cpu()
    W = torch.empty(X.shape[1], Y.shape[1], dtype=torch.float64)
    col_masks, group = torch.unique(M.T.to(torch.uint8), dim=0, return_inverse=True)
    for g, rows in enumerate(col_masks.bool()):
        cols = (group == g).nonzero().squeeze(1)
        if not rows.any():
            raise ValueError(
                f"{fn}: target column(s) {cols.tolist()} are never observed (mask all false)"
            )
        W[:, cols] = _lstsq(X64[rows], Y64[rows][:, cols], ridge)
    return W.to(device, dtype)


def _lstsq(X: Tensor, Y: Tensor, ridge: float) -> Tensor:
    if ridge > 0:
        P = X.shape[1]
        X = torch.cat([X, math.sqrt(ridge) * torch.eye(P, dtype=X.dtype)])
        Y = torch.cat([Y, Y.new_zeros(P, Y.shape[1])])
    return torch.linalg.lstsq(X, Y, driver="gelsd").solution


def nme_2d(
    fit_kp: ArrayLike,
    fit_lm: ArrayLike,
    test_kp: ArrayLike,
    test_lm: ArrayLike,
    normaliser: Normaliser,
    *,
    fit_vis: ArrayLike | None = None,
    test_vis: ArrayLike | None = None,
    ridge: float = 0.0,
    mirror: Sequence[int] | None = None,
) -> NMEResult:
    """2D landmark NME of unsupervised keypoints via a bias-free linear regression (AutoLink).

    See the module docstring for the protocol and the units. Typical uses::

        nme_2d(fk, mafl5_from_ibug68(fl), tk, mafl5_from_ibug68(tl), INTER_PUPIL_MAFL5)  # MAFL-5
        nme_2d(fk, fl, tk, tl, INTER_OCULAR_68)                                          # iBUG-68
        nme_2d(fk, fl, tk, tl, 1.0, fit_vis=fv, test_vis=tv)                              # CUB

    Args:
        fit_kp: (N_fit, K, 2) keypoints of the fit images, unit coordinates in [0, 1].
        fit_lm: (N_fit, L, 2) landmarks of the fit images, same frame (unit coordinates).
        test_kp: (N_test, K, 2) keypoints of the test images.
        test_lm: (N_test, L, 2) landmarks of the test images.
        normaliser: per-test-image distance the errors are divided by: a pair of landmark indices
            ``(i, j)`` whose ground-truth test distance is used (e.g. :data:`INTER_OCULAR_68`),
            ``"bbox"`` for ``sqrt(w h)`` of the ground-truth landmarks' bounding box, a (N_test,)
            tensor, or a number (e.g. 1.0 for unnormalised errors).
        fit_vis: (N_fit, L) bool, landmark visibility on the fit images; ``None`` = all visible.
        test_vis: (N_test, L) bool, landmark visibility on the test images.
        ridge: Tikhonov weight of the fit; 0 (default, the protocol) = plain least squares.
        mirror: (L,) index of each landmark's left/right counterpart (an involution, e.g. from
            :func:`mirror_permutation`): score with AutoLink's Human3.6M protocol, which takes
            the mirror labelling of an image's ground truth where it fits better (module
            docstring); None (default) = labels as given.

    Returns:
        :class:`NMEResult` in the promoted input dtype, on the device of ``test_kp``.

    Raises:
        ValueError: on shape mismatches, a normaliser landmark that is not visible in some test
            image, a non-positive normaliser, or a landmark never visible in the fit set.
    """
    return _regression_nme(
        "nme_2d",
        2,
        fit_kp,
        fit_lm,
        test_kp,
        test_lm,
        normaliser,
        fit_vis,
        test_vis,
        ridge,
        mirror,
    )


def nme_3d(
    fit_kp: ArrayLike,
    fit_lm: ArrayLike,
    test_kp: ArrayLike,
    test_lm: ArrayLike,
    normaliser: Normaliser = "bbox",
    *,
    fit_vis: ArrayLike | None = None,
    test_vis: ArrayLike | None = None,
    ridge: float = 0.0,
    mirror: Sequence[int] | None = None,
) -> NMEResult:
    """3D landmark NME of unsupervised 3D keypoints: the 2D protocol with a 3K -> 3L regression.

    The error of a landmark is its 3D L2 distance, divided by default by the ground-truth 2D
    bounding-box size ``sqrt((max x - min x) (max y - min y))`` over the image's (visible)
    landmarks, as in 3DDFA's AFLW2000-3D benchmark (Zhu et al., CVPR 2016; ``calc_nme`` in
    ``benchmark_aflw2000.py``). 3DDFA additionally reports the mean of the per-yaw-bin means
    ([0, 30], [30, 60], [60, 90] degrees): compute it from ``per_image`` when needed.

    Depth handling: x and y are used as given (keypoints in unit coordinates, landmarks in the
    same frame, as in :func:`nme_2d`); z of the keypoints and z of the landmarks are each centred
    per image (minus their mean over the K keypoints, respectively over the visible landmarks)
    before both the fit and the evaluation. Ground-truth depth (AFLW2000-3D: "z up to an offset")
    and predicted depth (camera distance) both carry an arbitrary per-image offset that a
    bias-free map cannot absorb; centring removes exactly that and nothing else. z must be in the
    same units as x and y within each tensor (e.g. landmarks all in pixels of a square image).
    Centred keypoint depths sum to zero, so the fit's design matrix is rank deficient by one: the
    normal equations are singular, but the minimum-norm least-squares map is well defined and its
    predictions are unique, since test keypoints obey the same constraint.

    Args:
        fit_kp: (N_fit, K, 3) keypoints of the fit images (x, y unit coordinates; z any offset).
        fit_lm: (N_fit, L, 3) landmarks of the fit images.
        test_kp: (N_test, K, 3) keypoints of the test images.
        test_lm: (N_test, L, 3) landmarks of the test images.
        normaliser: ``"bbox"`` (default), a landmark index pair (3D ground-truth distance), a
            (N_test,) tensor, or a number; see :func:`nme_2d`.
        fit_vis, test_vis, ridge, mirror: as in :func:`nme_2d` (the mirror labelling swaps
            whole 3D landmarks).

    Returns:
        :class:`NMEResult`; ``pred`` holds the predicted landmarks with centred z.
    """
    return _regression_nme(
        "nme_3d",
        3,
        fit_kp,
        fit_lm,
        test_kp,
        test_lm,
        normaliser,
        fit_vis,
        test_vis,
        ridge,
        mirror,
    )


def _regression_nme(
    fn: str,
    D: int,
    fit_kp: ArrayLike,
    fit_lm: ArrayLike,
    test_kp: ArrayLike,
    test_lm: ArrayLike,
    normaliser: Normaliser,
    fit_vis: ArrayLike | None,
    test_vis: ArrayLike | None,
    ridge: float,
    mirror: Sequence[int] | None,
) -> NMEResult:
    tensors = {
        name: as_tensor(v, name, fn)
        for name, v in (
            ("fit_kp", fit_kp),
            ("fit_lm", fit_lm),
            ("test_kp", test_kp),
            ("test_lm", test_lm),
        )
    }
    for name, t in tensors.items():
        if t.ndim != 3 or t.shape[-1] != D:
            raise ValueError(f"{fn}: {name} must be (N, n_points, {D}), got {tuple(t.shape)}")
    fk, fl, tk, tl = tensors.values()
    if fk.shape[0] != fl.shape[0] or tk.shape[0] != tl.shape[0]:
        raise ValueError(
            f"{fn}: keypoints and landmarks must cover the same images, got fit {fk.shape[0]} vs "
            f"{fl.shape[0]} and test {tk.shape[0]} vs {tl.shape[0]}"
        )
    if fk.shape[1] != tk.shape[1] or fl.shape[1] != tl.shape[1]:
        raise ValueError(
            f"{fn}: fit and test must have the same K and L, got K {fk.shape[1]} vs {tk.shape[1]} "
            f"and L {fl.shape[1]} vs {tl.shape[1]}"
        )
    if tk.shape[0] == 0:
        raise ValueError(f"{fn}: empty test set")
    (N_fit, K, _), (N_test, L, _) = fk.shape, tl.shape
    fv = as_mask(fit_vis, (N_fit, L), "fit_vis", fn)
    tv = as_mask(test_vis, (N_test, L), "test_vis", fn)
    perm = None if mirror is None else _check_mirror(fn, mirror, L)
    dtype, device = float_dtype(*tensors.values()), tk.device
    fk, fl, tk, tl = (t.detach().to(device, torch.float64) for t in (fk, fl, tk, tl))
    fv = fv.to(device) if fv is not None else None
    tv = tv.to(device) if tv is not None else None

    norm = _normaliser(fn, normaliser, tl, tv)
    if D == 3:
        fk, tk = _centre_z(fk, None), _centre_z(tk, None)
        fl, tl = _centre_z(fl, fv), _centre_z(tl, tv)

    fk, tk = fk.reshape(N_fit, K * D), tk.reshape(N_test, K * D)
    weights = _fit(fk, fl, fv, ridge) if perm is None else _fit_mirrored(fk, fl, fv, perm, ridge)
    pred = (tk @ weights).reshape(N_test, L, D)
    mirrored = None
    if perm is not None:
        tl, tv, mirrored = _mirror_closer(pred, tl, tv, perm)
    errors = (pred - tl).norm(dim=-1) / norm[:, None]
    if tv is None:
        nme, per_image = errors.mean(), errors.mean(dim=1)
    else:
        if not tv.any():
            raise ValueError(f"{fn}: no landmark is visible in any test image")
        errors = errors.masked_fill(~tv, math.nan)
        nme, per_image = errors[tv].mean(), errors.nanmean(dim=1)
    return NMEResult(*(t.to(dtype) for t in (nme, per_image, errors, pred, weights)), mirrored)


def _normaliser(fn: str, normaliser: Normaliser, lm: Tensor, vis: Tensor | None) -> Tensor:
    """(N,) float64 per-image normaliser from the ground-truth test landmarks ``lm`` (N, L, D)."""
    N, L, _ = lm.shape
    if isinstance(normaliser, str):
        if normaliser != "bbox":
            raise ValueError(
                f"{fn}: normaliser must be 'bbox', an index pair, a tensor or a number, "
                f"got {normaliser!r}"
            )
        xy = lm[..., :2]
        if vis is not None:
            if not vis.any(dim=1).all():
                raise ValueError(
                    f"{fn}: 'bbox' normaliser needs a visible landmark in every test image"
                )
            v = vis[..., None]
            hi = torch.where(v, xy, -math.inf).amax(dim=1)
            lo = torch.where(v, xy, math.inf).amin(dim=1)
        else:
            hi, lo = xy.amax(dim=1), xy.amin(dim=1)
        wh = hi - lo
        norm = (wh[:, 0] * wh[:, 1]).sqrt()
    elif isinstance(normaliser, tuple | list):
        if len(normaliser) != 2 or not all(isinstance(i, int) for i in normaliser):
            raise ValueError(
                f"{fn}: a landmark-pair normaliser must be two ints, got {normaliser!r}"
            )
        i, j = normaliser
        if not (-L <= i < L and -L <= j < L):
            raise ValueError(
                f"{fn}: normaliser indices {normaliser} out of range for L = {L} landmarks"
            )
        if vis is not None:
            missing = (~(vis[:, i] & vis[:, j])).nonzero().squeeze(1)
            if missing.numel():
                raise ValueError(
                    f"{fn}: normaliser landmarks {normaliser} are not both visible in test "
                    f"image(s) {missing[:10].tolist()}"
                )
        norm = (lm[:, i] - lm[:, j]).norm(dim=-1)
    else:
        norm = torch.as_tensor(
            normaliser.detach() if isinstance(normaliser, Tensor) else normaliser,
            dtype=torch.float64,
            device=lm.device,
        )
        if norm.ndim > 1 or (norm.ndim == 1 and norm.shape[0] != N):
            raise ValueError(
                f"{fn}: a normaliser tensor must be () or ({N},), got {tuple(norm.shape)}"
            )
        norm = norm.expand(N)
    bad = (~(norm > 0) | ~norm.isfinite()).nonzero().squeeze(1)
    if bad.numel():
        raise ValueError(
            f"{fn}: normaliser must be positive and finite; not so in test image(s) "
            f"{bad[:10].tolist()}"
        )
    return norm


_MIRROR_MIN_CHANGES: Final = 10
"""AutoLink's stopping rule: a round that would mirror this many images or fewer changes none."""
_MIRROR_MAX_ROUNDS: Final = 100
"""Bound on the fit's rounds (AutoLink's loop has none; they stop after a few in practice)."""


def _check_mirror(fn: str, mirror: Sequence[int], L: int) -> Tensor:
    perm = torch.as_tensor(list(mirror), dtype=torch.long)
    if perm.shape != (L,) or not bool(((perm >= 0) & (perm < L)).all()):
        raise ValueError(
            f"{fn}: mirror must hold {L} landmark indices in [0, {L}), got {list(mirror)}"
        )
    if not bool((perm[perm] == torch.arange(L)).all()):
        raise ValueError(
            f"{fn}: mirror must pair landmarks (mirror[mirror[i]] == i), got {list(mirror)}"
        )
    return perm


def _fit(x: Tensor, lm: Tensor, vis: Tensor | None, ridge: float) -> Tensor:
    """The bias-free map from flattened keypoints x (N, D·K) to landmarks lm (N, L, D)."""
    D = lm.shape[-1]
    mask = None if vis is None else vis.repeat_interleave(D, dim=1)
    return fit_linear_regression(x, lm.flatten(1), mask=mask, ridge=ridge)


def _mean_distance(pred: Tensor, lm: Tensor, vis: Tensor | None) -> Tensor:
    """(N,) mean landmark distance per image over its visible landmarks (NaN if none)."""
    d = (pred - lm).norm(dim=-1)
    return d.mean(1) if vis is None else d.masked_fill(~vis, math.nan).nanmean(1)


def _mirror_closer(
    pred: Tensor, lm: Tensor, vis: Tensor | None, perm: Tensor
) -> tuple[Tensor, Tensor | None, Tensor]:
    """One round: the mirror labelling where it is closer to ``pred``, if more than
    ``_MIRROR_MIN_CHANGES`` images change. Returns the landmarks, visibility, and which images
    now hold the mirror labelling (N,)."""
    vis_m = None if vis is None else vis[:, perm]
    closer = _mean_distance(pred, lm[:, perm], vis_m) < _mean_distance(pred, lm, vis)
    if not int(closer.sum()) > _MIRROR_MIN_CHANGES:
        return lm, vis, torch.zeros_like(closer)
    lm = torch.where(closer[:, None, None], lm[:, perm], lm)
    if vis is not None and vis_m is not None:
        vis = torch.where(closer[:, None], vis_m, vis)
    return lm, vis, closer


def _fit_mirrored(x: Tensor, lm: Tensor, vis: Tensor | None, perm: Tensor, ridge: float) -> Tensor:
    """AutoLink's fit under left/right ambiguity: mirror labellings and refit until a round
    changes nothing, then refit without the images beyond mean + 3 std of the error."""
    for _ in range(_MIRROR_MAX_ROUNDS):
        weights = _fit(x, lm, vis, ridge)
        pred = (x @ weights).reshape(lm.shape)
        lm, vis, changed = _mirror_closer(pred, lm, vis, perm)
        if not changed.any():
            break
    error = _mean_distance(pred, lm, vis)
    finite = error[error.isfinite()]
    keep = ~(error >= finite.mean() + 3 * finite.std())
    return _fit(x[keep], lm[keep], None if vis is None else vis[keep], ridge)


def _centre_z(points: Tensor, vis: Tensor | None) -> Tensor:
    """Subtract each image's mean depth (over visible points) from z; (N, n, 3) -> (N, n, 3)."""
    z = points[..., 2]
    if vis is None:
        mean = z.mean(dim=1, keepdim=True)
    else:
        count = vis.sum(dim=1, keepdim=True).clamp_min(1)
        mean = torch.where(vis, z, 0.0).sum(dim=1, keepdim=True) / count
    return torch.cat([points[..., :2], (z - mean)[..., None]], dim=-1)
