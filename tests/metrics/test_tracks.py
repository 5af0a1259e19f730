import numpy as np
import pytest
import torch

from kp3d.geometry import random_rotation
from kp3d.metrics import track_singular_values


def _rigid_tracks(n: int = 40, k: int = 9, seed: int = 0) -> torch.Tensor:
    """Scaled-orthographic images of one rigid 3D shape under random rotations and shifts."""
    g = torch.Generator().manual_seed(seed)
    shape = torch.randn(k, 3, generator=g, dtype=torch.float64)
    R = random_rotation((n,), generator=g, dtype=torch.float64)
    scale = 1 + torch.rand(n, 1, 1, generator=g, dtype=torch.float64)
    shift = torch.randn(n, 1, 2, generator=g, dtype=torch.float64)
    return scale * (shape @ R.transpose(-1, -2))[..., :2] + shift


def _flat_tracks(n: int = 40, k: int = 9, seed: int = 0) -> torch.Tensor:
    """Random affine maps of one flat 2D template."""
    g = torch.Generator().manual_seed(seed)
    template = torch.randn(k, 2, generator=g, dtype=torch.float64)
    A = torch.randn(n, 2, 2, generator=g, dtype=torch.float64)
    shift = torch.randn(n, 1, 2, generator=g, dtype=torch.float64)
    return template @ A.transpose(-1, -2) + shift


def _naive(kp: np.ndarray) -> np.ndarray:
    rows = []
    for image in kp:
        centred = image - image.mean(0)
        centred = centred / np.sqrt((centred**2).sum(1).mean())
        rows += [centred[:, 0], centred[:, 1]]
    s = np.linalg.svd(np.stack(rows), compute_uv=False)
    return s / s[0]


def test_matches_a_naive_loop_over_images() -> None:
    g = torch.Generator().manual_seed(3)
    kp = torch.randn(25, 7, 2, generator=g, dtype=torch.float64)
    expected = _naive(kp.numpy())
    assert expected[-1] < 1e-12  # centring takes one dimension away
    np.testing.assert_allclose(track_singular_values(kp).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_flat_template_has_rank_two_and_rigid_3d_shape_rank_three() -> None:
    flat = track_singular_values(_flat_tracks())
    rigid = track_singular_values(_rigid_tracks())
    assert flat.shape == rigid.shape == (9,)
    assert flat[0] == rigid[0] == 1
    assert flat[2] < 1e-10 and flat[1] > 0.1
    assert rigid[2] > 0.1 and rigid[3] < 1e-10


def test_a_3d_shape_that_never_turns_in_depth_scores_as_flat() -> None:
    g = torch.Generator().manual_seed(4)
    shape = torch.randn(9, 3, generator=g, dtype=torch.float64)
    angle = torch.rand(30, generator=g, dtype=torch.float64) * 6.3
    c, s = angle.cos()[:, None, None], angle.sin()[:, None, None]
    in_plane = torch.cat([torch.cat([c, -s], -1), torch.cat([s, c], -1)], -2)  # about the view axis
    kp = shape[:, :2] @ in_plane.transpose(-1, -2)
    assert track_singular_values(kp)[2] < 1e-10


def test_invariant_to_per_image_scale_shift_and_image_order() -> None:
    kp = _rigid_tracks(seed=1)
    g = torch.Generator().manual_seed(2)
    moved = kp * (0.1 + torch.rand(40, 1, 1, generator=g, dtype=torch.float64)) + 5
    expected = track_singular_values(kp)
    torch.testing.assert_close(track_singular_values(moved), expected)
    torch.testing.assert_close(track_singular_values(moved.flip(0)), expected)


def test_images_with_hidden_or_missing_keypoints_are_left_out() -> None:
    kp = _rigid_tracks(n=30, seed=5)
    vis = torch.ones(30, 9, dtype=torch.bool)
    vis[3, 2] = vis[7, 0] = False
    garbage = kp.clone()
    garbage[3, 2] = 1e6
    garbage[7, 0] = float("nan")
    garbage[11, 4] = float("inf")
    kept = [i for i in range(30) if i not in (3, 7, 11)]
    torch.testing.assert_close(track_singular_values(garbage, vis), track_singular_values(kp[kept]))


def test_keeps_the_input_dtype_and_takes_numpy() -> None:
    kp = _rigid_tracks().float()
    assert track_singular_values(kp).dtype == torch.float32
    out = track_singular_values(kp.numpy())
    torch.testing.assert_close(out, track_singular_values(kp))


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        track_singular_values(torch.zeros(4, 5, 3))
    with pytest.raises(ValueError, match="at least 3 keypoints"):
        track_singular_values(torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match="at least 2 images"):
        track_singular_values(torch.randn(1, 5, 2))
    with pytest.raises(ValueError, match="at least 2 images"):
        track_singular_values(torch.ones(6, 5, 2))  # every image collapsed to a point
    with pytest.raises(ValueError, match="vis must have shape"):
        track_singular_values(torch.randn(4, 5, 2), torch.ones(4, 4, dtype=torch.bool))
