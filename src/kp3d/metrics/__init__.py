"""Evaluation metrics, each following its reference paper's protocol exactly.

=====================  ===================================================  =====================
metric                 what                                                 protocol of
=====================  ===================================================  =====================
nme_2d                 landmark NME of keypoints via bias-free linear fit   AutoLink / Thewlis+17
nme_3d                 the same in 3D, GT-bbox normaliser                   3DDFA (AFLW2000-3D)
  mirror=...           left/right swaps of the ground truth forgiven        AutoLink (H36M)
mpjpe                  mean per-joint error, depth centring + depth flip    C3DPO
n_mpjpe                MPJPE after the optimal per-sample scale             Rhodin+18
p_mpjpe                MPJPE after similarity Procrustes                    H36M protocol #2
stress                 mean | pairwise-distance difference |                C3DPO
mutual_coherence       max |cosine| between basis shapes                    Can et al., Table 5
side, mad              scale-invariant depth error, normal angle error      Unsup3d
mask_iou               foreground IoU against ground-truth masks            Honari & Fua 22
track_singular_values  3D motion in 2D keypoint tracks (rank beyond 2)      Tomasi & Kanade 92
=====================  ===================================================  =====================

Inputs are torch tensors or numpy arrays, batch first; outputs are torch tensors in the inputs'
floating dtype, computed in float64. Errors are fractions or input units, never percentages.
"""

from kp3d.metrics.masks import mask_iou
from kp3d.metrics.nme import (
    IBUG68_EYE_1,
    IBUG68_EYE_2,
    IBUG68_MOUTH_CORNERS,
    IBUG68_NOSE_TIP,
    INTER_OCULAR_68,
    INTER_PUPIL_MAFL5,
    NMEResult,
    fit_linear_regression,
    mafl5_from_ibug68,
    mirror_permutation,
    nme_2d,
    nme_3d,
    pixel_to_unit,
)
from kp3d.metrics.pose3d import mpjpe, mutual_coherence, n_mpjpe, p_mpjpe, stress
from kp3d.metrics.surface import (
    depth_to_normals,
    mad,
    normal_roughness,
    side,
    unsup3d_intrinsics,
)
from kp3d.metrics.tracks import track_singular_values

__all__ = [
    "IBUG68_EYE_1",
    "IBUG68_EYE_2",
    "IBUG68_MOUTH_CORNERS",
    "IBUG68_NOSE_TIP",
    "INTER_OCULAR_68",
    "INTER_PUPIL_MAFL5",
    "NMEResult",
    "depth_to_normals",
    "fit_linear_regression",
    "mad",
    "mafl5_from_ibug68",
    "mask_iou",
    "mirror_permutation",
    "mpjpe",
    "mutual_coherence",
    "n_mpjpe",
    "nme_2d",
    "nme_3d",
    "normal_roughness",
    "p_mpjpe",
    "pixel_to_unit",
    "side",
    "stress",
    "track_singular_values",
    "unsup3d_intrinsics",
]
