"""The lifting protocol's per-category rows (Can et al., Table 4) on a multi-category set."""

import pytest
import torch

from kp3d.data.schema import Sample
from kp3d.evaluation import category_columns, evaluate_lifting, lifting_errors
from kp3d.geometry import random_rotation

OWN = (slice(0, 4), slice(4, 9))  # category 0: keypoints 0..3, category 1: 4..8


def _set(n: int, seed: int) -> tuple[Sample, torch.Tensor]:
    """Rigid shapes of two categories seen from random rotations in the joint layout (other
    category's keypoints: invisible, 2D 0, 3D NaN), and a noisy prediction."""
    fixed = torch.Generator().manual_seed(99)  # the same two shapes in every set
    shapes = [torch.randn(4, 3, generator=fixed), torch.randn(5, 3, generator=fixed)]
    g = torch.Generator().manual_seed(seed)
    category = torch.arange(n) % 2
    kp3d = torch.full((n, 9, 3), float("nan"), dtype=torch.float64)
    R = random_rotation(n, generator=g, dtype=torch.float64)
    for b in range(n):
        z = int(category[b])
        kp3d[b, OWN[z]] = 50 * shapes[z].double() @ R[b].T + 100
    vis = kp3d.isfinite().all(-1)
    kp2d = torch.where(vis[..., None], kp3d[..., :2], 0.0)
    pred = torch.where(vis[..., None], kp3d + torch.randn(n, 9, 3, generator=g) * 3, 0.0)
    return Sample(kp2d=kp2d, vis=vis, kp3d=kp3d, category=category), pred


def test_per_category_rows_are_the_protocol_on_each_category() -> None:
    test, pred = _set(12, 0)
    fit, _ = _set(20, 1)
    out = evaluate_lifting(pred, test, fit=fit)
    assert set(out["per_category"]) == {"0", "1"}
    for z in (0, 1):
        rows = test.category == z
        cols = torch.zeros(9, dtype=torch.bool)
        cols[OWN[z]] = True
        assert torch.equal(category_columns(test, rows), cols)
        part = Sample(kp2d=test.kp2d[rows][:, cols], vis=test.vis[rows][:, cols])
        part = part.replace(kp3d=test.kp3d[rows][:, cols])
        ref = evaluate_lifting(pred[rows][:, cols], part)
        got = out["per_category"][str(z)]
        assert got["method"] == ref["method"] and got["flat"] == ref["flat"]
        assert got["counts"]["test"] == 6 and got["counts"]["keypoints"] == int(cols.sum())
        # Rigid categories: each category's own mean shape explains its views exactly.
        assert got["mean_shape"]["mpjpe"]["norm"] < 1e-3
    assert out["mean_shape"]["mpjpe"]["norm"] < 1e-3
    # The pooled row weighs every sample alike: the mean of the two categories' (equal counts).
    pooled = lifting_errors(pred, test.kp3d, test.kp2d, test.vis)  # already in the image frame
    # Equal up to the order of a float sum (its last bit differs between CPUs).
    assert out["method"]["mpjpe"]["norm"] == pytest.approx(pooled["mpjpe"]["norm"], rel=1e-12)
    per = [out["per_category"][z]["method"]["mpjpe"]["norm"] for z in ("0", "1")]
    assert abs(out["method"]["mpjpe"]["norm"] - sum(per) / 2) < 1e-9


def test_per_category_rows_carry_the_category_names() -> None:
    test, pred = _set(6, 3)
    out = evaluate_lifting(pred, test, category_names=["cat", "dog"])
    assert [out["per_category"][z]["category"] for z in "01"] == ["cat", "dog"]
    assert "category" not in evaluate_lifting(pred, test)["per_category"]["0"]


def test_one_category_has_no_per_category_rows() -> None:
    test, pred = _set(6, 2)
    one = test.replace(category=torch.zeros(6, dtype=torch.long))
    assert "per_category" not in evaluate_lifting(pred, one)
    assert "per_category" not in evaluate_lifting(pred, test.replace(category=None))
