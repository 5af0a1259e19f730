"""The protocol registry: selection and skip reasons, surface depth against a hand computation,
the multi-view protocol, result rows."""

from __future__ import annotations

import math

import pytest
import torch

from kp3d.data.schema import Sample
from kp3d.evaluation import (
    PROTOCOLS,
    Collected,
    erode_mask,
    evaluate_multiview_3d,
    evaluate_protocols,
    evaluate_surface_depth,
    result_rows,
)
from kp3d.geometry import random_rotation
from kp3d.methods.prediction import Prediction
from kp3d.metrics import depth_to_normals


def test_erode_mask_removes_one_pixel_around_holes_and_the_border() -> None:
    m = torch.ones(1, 1, 7, 7, dtype=torch.bool)
    m[0, 0, 3, 3] = False
    out = erode_mask(m)
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[1:6, 1:6] = True
    expected[2:5, 2:5] = False
    assert torch.equal(out[0, 0], expected)
    assert erode_mask(torch.ones(2, 3, 1, 4, 4)).shape == (2, 3, 1, 4, 4)


def _surface_sets(seed: int = 0) -> tuple[Collected, Collected, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    N, H, W = 3, 8, 9
    mask = torch.zeros(N, 1, H, W)
    mask[:, :, 1:7, 1:8] = 1
    mask[2, :, 1:7, 5:8] = 0  # a smaller object in the last image
    depth = (1.5 + 0.3 * torch.rand(N, 1, H, W, generator=g)) * mask
    K = torch.tensor([[8.0, 0, W / 2], [0, 8.0, H / 2], [0, 0, 1]]).expand(N, 3, 3)
    fit_depth = (1.0 + torch.rand(N + 1, 1, H, W, generator=g)) * torch.cat([mask, mask[:1]])
    fit = Collected(
        Prediction(),
        Sample(depth=fit_depth, mask=(fit_depth > 0).float(), name=[""] * (N + 1)),
        (H, W),
    )
    pred = 2.0 + torch.rand(N, 1, H, W, generator=g)
    test = Collected(
        Prediction(depth=pred, image_size=(H, W)),
        Sample(depth=depth, mask=mask, intrinsics=K, name=[""] * N),
        (H, W),
    )
    return fit, test, K


def _hand_side_mad(pred, gt, m, K) -> tuple[float, float]:
    sides, mads = [], []
    for i in range(pred.shape[0]):
        d = (pred[i].double().log() - gt[i].double().log())[m[i]]
        sides.append(math.sqrt(float((d**2).mean() - d.mean() ** 2)))
        n1 = depth_to_normals(pred[i : i + 1].double(), K[i : i + 1].double())[0]
        n2 = depth_to_normals(gt[i : i + 1].double(), K[i : i + 1].double())[0]
        cos = (n1 * n2).sum(0).clamp(-1, 1)[m[i][0]]
        mads.append(float(torch.rad2deg(torch.acos(cos)).mean()))
    return sum(sides) / len(sides), sum(mads) / len(mads)


def test_surface_depth_matches_a_hand_computation_with_both_baselines() -> None:
    fit, test, K = _surface_sets()
    out = evaluate_surface_depth(fit, test)
    gt = test.gt.depth
    # Hand-made evaluation mask: the foreground eroded by one pixel, pixel by pixel.
    fg = test.gt.mask[:, 0] > 0.5
    m = torch.zeros_like(fg)
    for i in range(fg.shape[0]):
        for y in range(fg.shape[1]):
            for x in range(fg.shape[2]):
                m[i, y, x] = bool(
                    y > 0
                    and x > 0
                    and y < fg.shape[1] - 1
                    and x < fg.shape[2] - 1
                    and fg[i, y - 1 : y + 2, x - 1 : x + 2].all()
                )
    m = m[:, None]
    s, a = _hand_side_mad(test.pred.depth, gt, m, K)
    assert out["side"]["value"] == pytest.approx(s, rel=1e-9)
    assert out["mad_deg"]["value"] == pytest.approx(a, rel=1e-9)
    # Constant depth at each image's mean ground-truth depth.
    level = torch.stack([gt[i][m[i]].double().mean() for i in range(3)])
    null = level[:, None, None, None].expand(gt.shape)
    s, a = _hand_side_mad(null, gt, m, K)
    assert out["side_null_baseline"]["value"] == pytest.approx(s, rel=1e-9)
    assert out["mad_deg_null_baseline"]["value"] == pytest.approx(a, rel=1e-9)
    # Per-pixel mean of the fit set's depth where it has a surface, else the overall mean.
    fd, fm = fit.gt.depth.double(), fit.gt.mask.double()
    avg = torch.empty(1, fd.shape[2], fd.shape[3], dtype=torch.float64)
    for y in range(fd.shape[2]):
        for x in range(fd.shape[3]):
            n = fm[:, 0, y, x].sum()
            avg[0, y, x] = (fd[:, 0, y, x] * fm[:, 0, y, x]).sum() / n if n else float("nan")
    avg = torch.where(avg.isnan(), (fd * fm).sum() / fm.sum(), avg)
    s, a = _hand_side_mad(avg.expand(gt.shape), gt, m, K)
    assert out["side_average_baseline"]["value"] == pytest.approx(s, rel=1e-9)
    assert out["mad_deg_average_baseline"]["value"] == pytest.approx(a, rel=1e-9)
    assert out["counts"] == {"fit": 4, "test": 3, "scored": 3}


def test_surface_depth_is_scale_invariant_and_uses_the_predicted_mask() -> None:
    fit, test, _ = _surface_sets(1)
    test.pred.depth = 7.0 * test.gt.depth.clamp_min(1e-3)
    out = evaluate_surface_depth(fit, test)
    # MAD keeps Unsup3d's absolute eps in the normals: a small floor, not 0 (metrics/surface.py).
    assert out["side"]["value"] < 1e-6 and out["mad_deg"]["value"] < 0.5
    assert out["side_null_baseline"]["value"] > 0.01
    # A predicted mask empty on one image leaves that image unscored.
    test.pred.mask = torch.ones_like(test.gt.mask)
    test.pred.mask[1] = 0
    assert evaluate_surface_depth(fit, test)["counts"]["scored"] == 2
    test.pred.mask[:] = 0
    with pytest.raises(ValueError, match="no test image has a pixel left"):
        evaluate_surface_depth(fit, test)


def test_surface_depth_refuses_maps_of_another_size() -> None:
    fit, test, _ = _surface_sets()
    test.pred.depth = test.pred.depth[..., :-1]
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\) depth maps of one size"):
        evaluate_surface_depth(fit, test)


def test_multiview_3d_scores_a_linear_map_of_the_first_views_joints_as_exact() -> None:
    g = torch.Generator().manual_seed(3)
    N, V, L, K = 60, 2, 6, 9
    joints = torch.randn(N, L, 3, generator=g, dtype=torch.float64)
    R = random_rotation(N * V, generator=g, dtype=torch.float64).view(N, V, 3, 3)
    gt = joints[:, None] @ R.transpose(-1, -2) + torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    A = torch.randn(L * 3, K * 3, generator=g, dtype=torch.float64)
    cam0 = gt[:, 0] - gt[:, 0].mean(1, keepdim=True)
    kp = (cam0.flatten(1) @ A).view(N, K, 3) + torch.randn(N, 1, 3, generator=g)  # any offset

    def sets(pred: torch.Tensor) -> tuple[Collected, Collected]:
        def one(sl: slice) -> Collected:
            return Collected(Prediction(kp3d=pred[sl]), Sample(kp3d=gt[sl], name=[""]), None)

        return one(slice(0, 40)), one(slice(40, None))

    out = evaluate_multiview_3d(*sets(kp))
    assert out["nme3d"]["value"] < 1e-6
    assert out["counts"] == {"fit": 40, "test": 20, "keypoints": K, "landmarks": L}
    noise = torch.randn(N, K, 3, generator=g, dtype=torch.float64)
    assert evaluate_multiview_3d(*sets(noise))["nme3d"]["value"] > 0.05


def _keypoint_sets(with_3d: bool) -> tuple[Collected, Collected]:
    g = torch.Generator().manual_seed(2)
    kp = torch.rand(80, 6, 2, generator=g) * 64

    def one(sl: slice) -> Collected:
        gt = Sample(
            kp2d=kp[sl],
            kp3d=torch.cat([kp[sl], kp[sl][..., :1]], -1) if with_3d else None,
            name=[""] * 40,
        )
        return Collected(Prediction(kp2d=kp[sl], image_size=(64, 64)), gt, (64, 64))

    return one(slice(0, 40)), one(slice(40, 80))


def test_evaluate_protocols_runs_what_applies_and_says_why_it_skips_the_rest() -> None:
    fit, test = _keypoint_sets(with_3d=False)
    done = evaluate_protocols(["lifting", "keypoint_discovery", "surface_depth"], fit, test)
    assert list(done.results) == ["keypoint_discovery"]
    assert done.results["keypoint_discovery"]["nme"]["value"] < 1e-5
    assert done.skipped == {
        "lifting": "the model predicts no 3D keypoints (kp3d)",
        "surface_depth": "the model predicts no depth maps (depth)",
    }
    fit.pred.kp3d = test.pred.kp3d = torch.zeros(40, 6, 3)
    done = evaluate_protocols(["lifting", "multiview_3d"], fit, test)
    assert done.results == {}
    assert done.skipped["lifting"] == "the test set has no 3D keypoints (kp3d)"
    fit, test = _keypoint_sets(with_3d=True)
    fit.pred.kp3d = test.pred.kp3d = torch.zeros(40, 6, 3)
    fit.gt.kp3d = None
    assert evaluate_protocols(["multiview_3d"], fit, test).skipped == {
        "multiview_3d": "the fit set has no 3D keypoints (kp3d)"
    }
    with pytest.raises(KeyError, match="unknown evaluation protocol 'nope'"):
        evaluate_protocols(["nope"], fit, test)


def test_every_protocol_names_fields_that_exist() -> None:
    from kp3d.data.schema import TENSOR_FIELDS
    from kp3d.methods.prediction import PREDICTION_FIELDS

    for name, p in PROTOCOLS.items():
        assert set(p.prediction) <= set(PREDICTION_FIELDS), name
        assert set(p.ground_truth) | set(p.fit_ground_truth) <= set(TENSOR_FIELDS), name


def test_result_rows_flatten_groups_and_skip_counts() -> None:
    results = {
        "counts": {"test": 3},
        "nme": {"value": 0.125, "protocol": "2D"},
        "method": {"mpjpe": {"norm": 0.5, "input_units": 2.0}},
        "side": {"value": 0.25, "protocol": "SIDE"},
    }
    assert result_rows(results) == [
        ("nme", "12.50%", "2D"),
        ("method mpjpe", "0.5000 / 2.000", "normalised / input units"),
        ("side", "0.2500", "SIDE"),
    ]


def test_result_rows_show_pose_errors_and_plain_numbers() -> None:
    from kp3d.evaluation import result_rows

    rows = result_rows(
        {
            "pose_probe": {
                "counts": {"fit": 3},
                "probe": {"linear": {"1%": {"mpjpe": 0.5, "n_mpjpe": 0.25, "p_mpjpe": 0.125}}},
                "relative_pose": {"median": 12.5},
            }
        }
    )
    assert rows == [
        (
            "pose_probe probe linear 1%",
            "0.5000 / 0.2500 / 0.1250",
            "MPJPE / N-MPJPE / P-MPJPE, data units",
        ),
        ("pose_probe relative_pose median", "12.5", ""),
    ]
