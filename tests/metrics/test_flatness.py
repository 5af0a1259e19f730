import math

import pytest
import torch

from kp3d.metrics.flatness import (
    DEFAULT_FLAT_RATIO,
    depth_ratio,
    flatness,
    flatness_check,
    flatness_warning,
)


def naive_ratio(kp3d: torch.Tensor, vis: torch.Tensor) -> list[float]:
    out = []
    for x, v in zip(kp3d.double(), vis.bool(), strict=True):
        p = x[v]
        if len(p) < 2:
            out.append(math.nan)
            continue
        c = p - p.mean(0)
        r2 = math.sqrt(float(c[:, :2].square().sum(1).mean()))
        out.append(math.sqrt(float(c[:, 2].square().mean())) / r2 if r2 > 0 else math.nan)
    return out


def test_depth_ratio_matches_naive_with_visibility():
    g = torch.Generator().manual_seed(0)
    kp3d = torch.randn(6, 9, 3, generator=g) * torch.tensor([3.0, 2.0, 0.5])
    vis = torch.rand(6, 9, generator=g) > 0.3
    vis[0] = False
    vis[0, 4] = True  # one visible point: undefined
    got = depth_ratio(kp3d, vis)
    ref = torch.tensor(naive_ratio(kp3d, vis), dtype=torch.float64)
    assert got.shape == (6,)
    assert torch.allclose(got, ref, equal_nan=True)
    assert got[0].isnan()


def test_depth_ratio_has_no_units_and_ignores_translation():
    g = torch.Generator().manual_seed(1)
    kp3d = torch.randn(4, 7, 3, generator=g)
    moved = 25.4 * kp3d + torch.tensor([100.0, -40.0, 3.0])
    assert torch.allclose(depth_ratio(moved), depth_ratio(kp3d))


def test_depth_ratio_closed_form():
    # Square of side 2 in x, y (RMS radius sqrt 2), depths +-1 (RMS 1).
    kp3d = torch.tensor([[[1.0, 1, 1], [-1, 1, -1], [-1, -1, 1], [1, -1, -1]]])
    assert depth_ratio(kp3d).item() == pytest.approx(1 / math.sqrt(2))


def test_depth_ratio_coincident_points_nan():
    assert depth_ratio(torch.zeros(1, 5, 3)).isnan().all()


def test_depth_ratio_shape_errors():
    with pytest.raises(ValueError, match="kp3d must be"):
        depth_ratio(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="vis must be"):
        depth_ratio(torch.zeros(2, 4, 3), torch.ones(2, 5))


def test_flatness_flags_flat_and_not_deep():
    g = torch.Generator().manual_seed(2)
    xy = torch.randn(32, 10, 2, generator=g)
    flat = torch.cat([xy, 0.01 * torch.randn(32, 10, 1, generator=g)], -1)
    deep = torch.cat([xy, 0.6 * torch.randn(32, 10, 1, generator=g)], -1)
    f = flatness(flat)
    assert f.near_flat and f.flat_fraction == 1.0 and f.median_ratio < 0.05
    d = flatness(deep)
    assert not d.near_flat and d.flat_fraction < 0.5
    assert flatness_warning(d, method="lifter") is None
    msg = flatness_warning(f, method="lifter-fit")
    assert msg is not None and msg.startswith("lifter-fit:") and "near flat" in msg


def test_flatness_threshold_and_empty():
    kp3d = torch.tensor([[[1.0, 0, 0.3], [-1, 0, -0.3]]])  # ratio 0.3
    assert flatness(kp3d, threshold=0.31).near_flat
    assert not flatness(kp3d, threshold=0.29).near_flat
    empty = flatness(torch.zeros(2, 3, 3))
    assert math.isnan(empty.median_ratio) and not empty.near_flat
    with pytest.raises(ValueError, match="threshold"):
        flatness(kp3d, threshold=0.0)


def test_summary_and_check_are_json_values():
    g = torch.Generator().manual_seed(3)
    xy = torch.randn(16, 8, 2, generator=g)
    flat = torch.cat([xy, 0.01 * torch.randn(16, 8, 1, generator=g)], -1)
    values, warnings = flatness_check(flat, method="c3dpo")
    f = flatness(flat)
    assert values == {
        "median_depth_ratio": f.median_ratio,
        "flat_fraction": f.flat_fraction,
        "flat_threshold": DEFAULT_FLAT_RATIO,
        "near_flat": True,
    }
    assert warnings == [flatness_warning(f, method="c3dpo")]
    deep = torch.cat([xy, torch.randn(16, 8, 1, generator=g)], -1)
    assert flatness_check(deep, method="c3dpo")[1] == []
    # Nothing defined (coincident points): None, not NaN, which JSON cannot hold.
    empty = flatness(torch.zeros(2, 3, 3)).summary()
    assert empty["median_depth_ratio"] is None and empty["flat_fraction"] is None
