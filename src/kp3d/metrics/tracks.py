"""How much 3D motion a set of 2D keypoint tracks carries, before any lifting.

Under an affine camera the centred 2D keypoints of B images, stacked into the 2B x K measurement
matrix W, have rank at most 3 for a rigid 3D object (Tomasi & Kanade, IJCV 1992), and at most 2
when every image's keypoints are an affine map of one flat 2D template. The third singular value
of W relative to the first therefore says how much of the keypoints' motion needs a third
dimension (a rotation in depth, or a deformation): near 0, no lifting of those keypoints, however
good, can recover more depth than the mean depth; ground-truth joints of an object seen from all
around score far higher. Articulation and noise add rank too (keypoints scattered at random score
high), so the ratio is a necessary condition for recoverable depth, not a measure of its quality:
read it beside the landmark error.

Each image's keypoints are centred and scaled to unit RMS radius first, so that images weigh
alike whatever the object's size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kp3d.geometry.keypoints import normalise_keypoints
from kp3d.metrics._utils import ArrayLike, as_mask, as_tensor, float_dtype


def track_singular_values(kp2d: ArrayLike, vis: ArrayLike | None = None) -> Tensor:
    """Singular values of the centred, scale-normalised measurement matrix, over the first.

    Args:
        kp2d: (B, K, 2) keypoints of B images, any consistent units.
        vis: optional (B, K) bool; an image with a hidden keypoint is left out (a track with a
            gap has no place in W), as is an image whose keypoints all coincide.

    Returns:
        (min(2B', K),) non-increasing values, the first 1 (B' images kept), in the promoted input
        dtype (computed in float64). ``[2]`` is the share of motion beyond one flat template.
    """
    fn = "track_singular_values"
    kp = as_tensor(kp2d, "kp2d", fn)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise ValueError(f"{fn}: kp2d must have shape (B, K, 2), got {tuple(kp.shape)}")
    if kp.shape[1] < 3:
        raise ValueError(f"{fn}: need at least 3 keypoints, got {kp.shape[1]}")
    keep = torch.isfinite(kp).all(-1)
    mask = as_mask(vis, tuple(kp.shape[:2]), "vis", fn)
    if mask is not None:
        keep = keep & mask.to(keep.device)
    norm = normalise_keypoints(kp.double()[keep.all(-1)], eps=0.0)
    x = norm.kp2d[norm.scale > 0]
    if x.shape[0] < 2:
        raise ValueError(
            f"{fn}: need at least 2 images with every keypoint visible and spread, got {x.shape[0]}"
        )
    s = torch.linalg.svdvals(x.transpose(-1, -2).reshape(-1, x.shape[-2]))
    return (s / s[0]).to(float_dtype(kp))
