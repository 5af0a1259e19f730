"""Pure, batched geometry functions. THE conventions of kp3d are stated here, once.

Camera frame
    Right-handed, x to the right, y down, z forward (into the scene), as in OpenCV.
    A point X in world (or canonical-object) coordinates maps to the camera by column vectors,
    ``X_cam = R @ X + t``; with batch-first row-stacked points ``(..., K, 3)`` that is
    ``X_cam = X @ R.transpose(-1, -2) + t[..., None, :]``. Rotation matrices are proper
    (det = +1) unless a function says otherwise. Extrinsics are ``[R | t]`` of shape (..., 3, 4),
    world to camera.

Image coordinates
    Continuous pixel coordinates ``(u, v)``: u to the right, v down, the image covers
    ``[0, W] x [0, H]``; the top-left pixel's centre is at (0.5, 0.5) and pixel (i, j) (column i,
    row j) has its centre at (i + 0.5, j + 0.5). Resizing an image by factors (sx, sy) maps
    coordinates exactly by ``u' = sx * u``, ``v' = sy * v``.
    Normalised coordinates ``x_n = 2 u / W - 1``, ``y_n = 2 v / H - 1`` lie in [-1, 1] with -1 at
    the left/top image *edge*: this is ``align_corners=False`` in ``torch.nn.functional.grid_sample``.
    Unit coordinates (used by the 2D NME protocol) are ``u / W`` and ``v / H`` in [0, 1].
    Keypoint tensors are ordered ``(x, y)``, i.e. (u, v), never (row, column).

Intrinsics
    ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in the same continuous pixel coordinates, so a
    principal point in the image centre is ``(W / 2, H / 2)``. Pinhole: ``u = fx X/Z + cx``.
    Orthographic / weak perspective: ``u = s * X + tx``, ``v = s * Y + ty`` (z dropped).

Keypoints
    Masked means, per-sample normalisation (centre and RMS scale), least-squares scale and the
    orthographic translation live once, in :mod:`kp3d.geometry.keypoints`, with the shape
    checker :func:`check_shape` (``check_shape(x, "B K 2", name="kp2d")``).

Shapes
    Batch first, coordinates last: kp2d (B, K, 2), kp3d (B, K, 3), views (B, V, K, 2),
    visibility (B, K), images (B, C, H, W). Functions accept any number of leading batch dims
    unless stated. Solvers (SVD, least squares) run in float64 internally and return the input
    dtype; device and dtype follow the inputs.
"""

from kp3d.geometry.cameras import (
    compose_extrinsics,
    crop_intrinsics,
    invert_extrinsics,
    make_extrinsics,
    normalised_to_pixel,
    pixel_to_normalised,
    pixel_to_unit,
    project_orthographic,
    project_pinhole,
    project_points,
    project_weak_perspective,
    projection_matrix,
    transform_points,
    unit_to_pixel,
    unproject_pinhole,
)
from kp3d.geometry.depth_mesh import LiftedPoints, lift_points, sample_depth
from kp3d.geometry.heatmaps import (
    SoftArgmax,
    expected_variance,
    pixel_centres,
    render_gaussian_heatmaps,
    soft_argmax,
    spatial_softmax,
)
from kp3d.geometry.keypoints import (
    LS_SCALE_EPS,
    Normalised,
    check_shape,
    least_squares_scale,
    masked_mean,
    normalise_keypoints,
    orthographic_translation,
    rms_radius,
    visibility_weights,
    weak_perspective_scale,
)
from kp3d.geometry.procrustes import ProcrustesResult, procrustes, procrustes_align
from kp3d.geometry.rotations import (
    axis_angle_to_matrix,
    geodesic_distance,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    random_rotation,
    rotation_6d_to_matrix,
    rotation_spread,
)
from kp3d.geometry.triangulation import reprojection_residuals, triangulate_dlt

__all__ = [
    "LS_SCALE_EPS",
    "LiftedPoints",
    "Normalised",
    "ProcrustesResult",
    "SoftArgmax",
    "axis_angle_to_matrix",
    "check_shape",
    "compose_extrinsics",
    "crop_intrinsics",
    "expected_variance",
    "geodesic_distance",
    "invert_extrinsics",
    "least_squares_scale",
    "lift_points",
    "make_extrinsics",
    "masked_mean",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "normalise_keypoints",
    "normalised_to_pixel",
    "orthographic_translation",
    "pixel_centres",
    "pixel_to_normalised",
    "pixel_to_unit",
    "procrustes",
    "procrustes_align",
    "project_orthographic",
    "project_pinhole",
    "project_points",
    "project_weak_perspective",
    "projection_matrix",
    "quaternion_to_matrix",
    "random_rotation",
    "render_gaussian_heatmaps",
    "reprojection_residuals",
    "rms_radius",
    "rotation_6d_to_matrix",
    "rotation_spread",
    "sample_depth",
    "soft_argmax",
    "spatial_softmax",
    "transform_points",
    "triangulate_dlt",
    "unit_to_pixel",
    "unproject_pinhole",
    "visibility_weights",
    "weak_perspective_scale",
]
