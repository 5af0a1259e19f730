"""crop_intrinsics: the intrinsics of a resampled box, against a direct projection of the
cropped patch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kp3d.geometry import (
    crop_intrinsics,
    pixel_to_normalised,
    project_pinhole,
    render_gaussian_heatmaps,
)
from kp3d.geometry.heatmaps import pixel_centres


def _K(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([[70.0, 0.0, 33.0], [0.0, 60.0, 30.0], [0.0, 0.0, 1.0]], dtype=dtype)


def test_the_stated_formula() -> None:
    K = _K()
    s, b = torch.tensor([2.5, 1.5], dtype=torch.float64), torch.tensor([10.0, -4.0]).double()
    expected = torch.tensor(
        [
            [2.5 * 70, 0, 2.5 * (33 - 10)],
            [0, 1.5 * 60, 1.5 * (30 + 4)],
            [0, 0, 1],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(crop_intrinsics(K, s, b), expected)


def test_batches_broadcast_and_shapes_are_checked() -> None:
    K = _K().expand(4, 3, 3, 3)
    out = crop_intrinsics(K, torch.ones(3, 2, dtype=torch.float64), torch.zeros(2).double())
    assert out.shape == (4, 3, 3, 3)
    torch.testing.assert_close(out, K)  # unit scale at the origin: the image itself
    with pytest.raises(ValueError, match="K must be"):
        crop_intrinsics(torch.eye(2), torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match="scale must be"):
        crop_intrinsics(_K(), torch.ones(3), torch.zeros(2))


def test_projection_through_the_patch_intrinsics_lands_on_the_point_in_the_cropped_patch() -> None:
    """A blob rendered at the projection of X in the image, cropped with grid_sample to a patch
    of a box (top-left corner b, side w pixels, P pixels): the blob's centre in the patch is
    the projection of X with crop_intrinsics(K, P / w, b) (a half-pixel convention error
    would be off by 0.5-1 patch pixels; bilinear resampling moves the centroid by < 0.05)."""
    H = W = 64
    P = 32
    K = _K()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        X = torch.cat((torch.rand(1, 2, generator=g) - 0.5, torch.rand(1, 1, generator=g) + 2), -1)
        X = X.double()
        uv = project_pinhole(X, K)  # (1, 2) image pixels
        image = render_gaussian_heatmaps(pixel_to_normalised(uv, (H, W)), (H, W), sigma=0.08)
        side = torch.tensor([30.0, 24.0], dtype=torch.float64)  # box w, h in pixels
        corner = uv[0] - side * (0.3 + 0.4 * torch.rand(2, generator=g, dtype=torch.float64))
        # The box as an affine_grid: patch normalised -> image normalised.
        centre = pixel_to_normalised(corner + side / 2, (H, W))
        half = side / torch.tensor([W, H], dtype=torch.float64)
        theta = torch.tensor([[[half[0], 0, centre[0]], [0, half[1], centre[1]]]]).double()
        grid = F.affine_grid(theta, [1, 1, P, P], align_corners=False)
        patch = F.grid_sample(image[None], grid, align_corners=False)[0, 0]
        # The blob's centre in the patch: the intensity-weighted mean of its pixel centres.
        w = patch / patch.sum()
        xs = (pixel_centres(P, dtype=torch.float64) + 1) * P / 2
        found = torch.stack(((w.sum(0) * xs).sum(), (w.sum(1) * xs).sum()))
        K_p = crop_intrinsics(K, P / side, corner)
        torch.testing.assert_close(project_pinhole(X, K_p)[0], found, atol=0.05, rtol=0)
