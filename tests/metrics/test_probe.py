"""The pose probe, multi-view consistency and relative-pose error."""

from __future__ import annotations

import math

import pytest
import torch

from kp3d.geometry import axis_angle_to_matrix, make_extrinsics, random_rotation
from kp3d.metrics.probe import (
    MultiviewTruth,
    ProbeConfig,
    camera_to_world,
    evaluate_multiview,
    fit_probe,
    multiview_consistency,
    probe_table,
    relative_pose_errors,
    relative_rotation,
    root_relative,
    rotation_errors,
    triangulated_keypoints,
)

SMALL = ProbeConfig(hidden=32, steps=60, batch=16, fractions=(0.1, 1.0), ridge=0.0)
EXACT = ProbeConfig(ridge=0.0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _joints(n: int, j: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, j, 3, generator=_gen(seed), dtype=torch.float64)


def _linear_keypoints(joints: torch.Tensor, k: int = 8, seed: int = 1) -> torch.Tensor:
    """Keypoints that are an exact linear function of the joints: (N, K, 3)."""
    A = torch.randn(k * 3, joints.shape[1] * 3, generator=_gen(seed), dtype=torch.float64)
    return (joints.flatten(1) @ A.T).unflatten(1, (k, 3))


def test_linear_probe_recovers_an_exact_linear_function() -> None:
    joints = _joints(200)
    # Keypoints carry the joints: the joints are an exact linear function of them.
    kp = joints * 2.0 + 1.0
    probe = fit_probe(kp[:150], joints[:150], kind="linear", config=EXACT)
    pred = probe.predict(kp[150:])
    assert torch.allclose(pred, root_relative(joints[150:]), atol=1e-6)


def test_linear_probe_matches_the_closed_form_least_squares() -> None:
    joints = _joints(80)
    kp = _linear_keypoints(joints, k=3) + 0.1 * torch.randn(
        80, 3, 3, generator=_gen(5), dtype=torch.float64
    )
    probe = fit_probe(kp, joints, kind="linear", config=EXACT)
    # Independent reference: the pseudo-inverse on centred inputs with a bias column.
    x = (kp - kp.mean(1, keepdim=True)).flatten(1)
    X = torch.cat((x, torch.ones(80, 1, dtype=x.dtype)), 1)
    y = root_relative(joints).flatten(1)
    W = torch.linalg.pinv(X) @ y  # minimum-norm least squares
    assert torch.allclose(probe.predict(kp).flatten(1), X @ W, atol=1e-8)


def test_known_error_on_noisy_test_keypoints() -> None:
    joints = _joints(300, seed=2)
    kp = joints.clone()
    noise = 0.05 * torch.randn(100, 6, 3, generator=_gen(3), dtype=torch.float64)
    probe = fit_probe(kp[:200], joints[:200], kind="linear", config=EXACT)
    pred = probe.predict(kp[200:] + noise)
    # The probe learned x -> x - x_root exactly; its error is the noise relative to the root's.
    expected = root_relative(noise).norm(dim=-1).mean()
    err = (pred - root_relative(joints[200:])).norm(dim=-1).mean()
    assert torch.allclose(err, expected, atol=1e-8)
    table = probe_table(
        kp[:200],
        joints[:200],
        kp[200:] + noise,
        joints[200:],
        config=ProbeConfig(fractions=(1.0,), ridge=0.0),
        kinds=("linear",),
    )
    assert math.isclose(table["linear"]["100%"]["mpjpe"], float(expected), rel_tol=1e-6)


def test_mlp_probe_learns_and_is_deterministic() -> None:
    joints = _joints(256, seed=4)
    kp = _linear_keypoints(joints)
    cfg = ProbeConfig(hidden=64, steps=300, batch=32, lr=3e-3, dropout=0.1)
    a = fit_probe(kp[:200], joints[:200], kind="mlp", config=cfg)
    b = fit_probe(kp[:200], joints[:200], kind="mlp", config=cfg)
    pa, pb = a.predict(kp[200:]), b.predict(kp[200:])
    assert torch.equal(pa, pb)
    gt = root_relative(joints[200:])
    mean_error = (gt - root_relative(joints[:200]).mean(0)).norm(dim=-1).mean()
    assert (pa - gt).norm(dim=-1).mean() < 0.5 * mean_error  # far better than the mean pose


def test_probe_table_shares_and_keys() -> None:
    joints = _joints(100)
    kp = _linear_keypoints(joints)
    t = probe_table(kp[:80], joints[:80], kp[80:], joints[80:], config=SMALL)
    only = probe_table(
        kp[:80], joints[:80], kp[80:], joints[80:], config=ProbeConfig(kinds=("linear",))
    )
    assert set(only) == {"linear"}
    assert set(t) == {"linear", "mlp"} and set(t["linear"]) == {"10%", "100%"}
    assert t["linear"]["10%"]["train"] == 8 and t["linear"]["100%"]["train"] == 80
    assert set(t["mlp"]["10%"]) == {"mpjpe", "n_mpjpe", "p_mpjpe", "train"}
    assert t["linear"]["100%"]["mpjpe"] < 1e-6


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="fractions"):
        ProbeConfig(fractions=(0.0,))
    with pytest.raises(ValueError, match="kinds"):
        ProbeConfig(kinds=("cubic",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="as many"):
        fit_probe(torch.zeros(3, 2, 3), torch.zeros(4, 2, 3), kind="linear")
    with pytest.raises(ValueError, match="kind"):
        fit_probe(torch.zeros(3, 2, 3), torch.zeros(3, 2, 3), kind="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, K, 3\)"):
        fit_probe(torch.zeros(3, 2), torch.zeros(3, 2, 3), kind="linear")


# -- relative pose and consistency -------------------------------------------------------------


def test_relative_pose_error_is_zero_for_exact_rotated_sets_and_a_known_angle_otherwise() -> None:
    X = torch.randn(10, 7, 3, generator=_gen(6), dtype=torch.float64)
    R = random_rotation(10, generator=_gen(7), dtype=torch.float64)
    Y = X @ R.transpose(-1, -2) + torch.randn(10, 1, 3, generator=_gen(8), dtype=torch.float64)
    exact = relative_pose_errors(X, Y, R)
    assert exact["mean"] < 1e-6 and exact["under_15"] == 1.0 and exact["pairs"] == 10
    angles = torch.tensor([5.0, 20.0, 40.0, 10.0] * 2 + [20.0, 20.0], dtype=torch.float64)
    axis = torch.nn.functional.normalize(
        torch.randn(10, 3, generator=_gen(9), dtype=torch.float64), dim=-1
    )
    off = axis_angle_to_matrix(axis * torch.deg2rad(angles)[:, None])
    r = relative_pose_errors(X, Y, off @ R)
    assert math.isclose(r["mean"], float(angles.mean()), abs_tol=1e-6)
    assert math.isclose(r["median"], float(angles.median()), abs_tol=1e-6)
    assert r["under_15"] == pytest.approx(0.4) and r["under_30"] == pytest.approx(0.8)


def test_rotation_errors_are_the_angles_of_known_offsets() -> None:
    R = random_rotation(4, generator=_gen(11), dtype=torch.float64)
    angles = torch.tensor([10.0, 16.0, 29.0, 50.0], dtype=torch.float64)
    axis = torch.nn.functional.normalize(
        torch.randn(4, 3, generator=_gen(12), dtype=torch.float64), dim=-1
    )
    off = axis_angle_to_matrix(axis * torch.deg2rad(angles)[:, None])
    r = rotation_errors((off @ R).float(), R)  # any float dtype; measured in float64
    assert set(r) == {"mean", "median", "under_15", "under_30"}
    assert math.isclose(r["mean"], 26.25, abs_tol=1e-3)
    assert math.isclose(r["median"], float(angles.median()), abs_tol=1e-3)  # lower middle: 16
    assert r["under_15"] == 0.25 and r["under_30"] == 0.75


def test_relative_rotation_maps_camera_a_directions_to_camera_b() -> None:
    Ra, Rb = random_rotation(2, generator=_gen(10), dtype=torch.float64)
    Ea = make_extrinsics(Ra, torch.zeros(3, dtype=torch.float64))
    Eb = make_extrinsics(Rb, torch.ones(3, dtype=torch.float64))
    d = torch.randn(3, dtype=torch.float64)
    assert torch.allclose(relative_rotation(Ea, Eb) @ (Ra @ d), Rb @ d)


def test_consistency_is_zero_for_exact_views_and_grows_with_disagreement() -> None:
    world = torch.randn(4, 5, 3, generator=_gen(11), dtype=torch.float64)
    R = random_rotation((4, 3), generator=_gen(12), dtype=torch.float64)
    t = torch.randn(4, 3, 3, generator=_gen(13), dtype=torch.float64)
    E = make_extrinsics(R, t)
    cam = world[:, None] @ R.transpose(-1, -2) + t[..., None, :]
    assert torch.allclose(camera_to_world(cam, E), world[:, None].expand_as(cam))
    c = multiview_consistency(cam, E)
    assert c["spread"] < 1e-10 and c["spread_normalised"] < 1e-10
    moved = cam.clone()
    moved[:, 0] += 0.3 * R[:, 0, 2][:, None, :]  # view 0 pushed 0.3 along its optical axis
    c = multiview_consistency(moved, E)
    # Naive twin: per moment and keypoint, RMS distance of the 3 world points to their mean.
    w = camera_to_world(moved, E)
    ref = (
        sum(
            math.sqrt(
                sum(float((w[n, v, k] - w[n, :, k].mean(0)).square().sum()) for v in range(3)) / 3
            )
            for n in range(4)
            for k in range(5)
        )
        / 20
    )
    assert math.isclose(c["spread"], ref, rel_tol=1e-9) and c["spread"] > 0.1
    assert c["spread_normalised"] < 1e-10  # a pure shift is no disagreement in shape


# -- the protocol ------------------------------------------------------------------------------


def _truth(n: int, seed: int) -> MultiviewTruth:
    joints = _joints(n, seed=seed) * 0.3
    joints[..., 2] += 0.0
    V = 3
    az = torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64)
    R = axis_angle_to_matrix(torch.stack((torch.zeros(3), az, torch.zeros(3)), -1).double())
    t = torch.tensor([[0.0, 0.0, 4.0]] * V, dtype=torch.float64)
    E = make_extrinsics(R, t).expand(n, V, 3, 4)
    K = torch.tensor([[500.0, 0, 32], [0, 500.0, 32], [0, 0, 1]], dtype=torch.float64).expand(
        n, V, 3, 3
    )
    cam = joints[:, None] @ R.transpose(-1, -2) + t[:, None, :]
    kp2d = cam[..., :2] / cam[..., 2:] * 500.0 + 32
    return MultiviewTruth(joints, kp2d, K, E)


def test_triangulated_gt_2d_gives_the_world_joints() -> None:
    truth = _truth(5, 14)
    tri = triangulated_keypoints(truth.kp2d, truth.intrinsics, truth.extrinsics)
    assert torch.allclose(tri, truth.joints, atol=1e-8)


def test_evaluate_multiview_world_and_per_view_keypoints() -> None:
    fit, test = _truth(60, 15), _truth(20, 16)
    res = evaluate_multiview(fit.joints, test.joints, fit, test, config=SMALL)
    assert res["frame"] == "world" and res["counts"]["fit"] == 60
    assert res["probe"]["linear"]["100%"]["mpjpe"] < 1e-6
    assert res["triangulated_2d"]["linear"]["100%"]["mpjpe"] < 1e-6
    assert "consistency" not in res and res["flat_2d"]["linear"]["100%"]["mpjpe"] > 0
    per_view = lambda t: (
        t.joints[:, None] @ t.extrinsics[0, :, :, :3].transpose(-1, -2)
        + t.extrinsics[0, :, :, 3][:, None]
    )
    res = evaluate_multiview(
        per_view(fit), per_view(test), fit, test, view=1, config=SMALL, baselines=False
    )
    assert res["frame"] == "camera 1" and res["probe"]["linear"]["100%"]["mpjpe"] < 1e-6
    assert res["consistency"]["spread"] < 1e-8 and res["relative_pose"]["mean"] < 1e-4
    assert res["relative_pose"]["pairs"] == 20 * 3
    with pytest.raises(ValueError, match="both"):
        evaluate_multiview(fit.joints, per_view(test), fit, test)


def test_ridge_matches_the_normal_equations() -> None:
    joints = _joints(30, seed=17)
    kp = torch.randn(30, 4, 3, generator=_gen(18), dtype=torch.float64)
    probe = fit_probe(kp, joints, kind="linear", config=ProbeConfig(ridge=0.1))
    # Naive twin on the standardised design, as the docstring states.
    x = (kp - kp.mean(1, keepdim=True)).flatten(1)
    x = (x - x.mean(0)) / x.std(0, unbiased=False)
    y = root_relative(joints).flatten(1)
    sd = y.std(0, unbiased=False)
    sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))
    ys = (y - y.mean(0)) / sd
    A = torch.cat((x, torch.ones(30, 1, dtype=x.dtype)), 1)
    lam = 0.1 * A.square().sum(0).mean()
    W = torch.linalg.solve(A.T @ A + lam * torch.eye(A.shape[1], dtype=A.dtype), A.T @ ys)
    assert torch.allclose(probe.weights[0], W, atol=1e-10)


def test_truth_from_a_rig_batch() -> None:
    from kp3d.data.schema import collate
    from kp3d.data.synth.rig import generate_rig

    batch = collate(generate_rig("quadruped", 4, views=2, size=32, seed=3))
    truth = MultiviewTruth.from_batch(batch)
    assert truth.joints.shape == (4, 18, 3) and truth.kp2d.shape == (4, 2, 18, 2)
    assert torch.allclose(truth.in_frame(1).float(), batch.kp3d[:, 1], atol=1e-5)
    tri = triangulated_keypoints(truth.kp2d, truth.intrinsics, truth.extrinsics)
    assert torch.allclose(tri, truth.joints, atol=1e-3)


def test_the_mean_pose_row_is_the_error_of_the_fit_moments_mean_pose() -> None:
    from kp3d.metrics.probe import MultiviewTruth, evaluate_multiview, pose_errors, root_relative

    g = torch.Generator().manual_seed(3)
    n, v, j = 12, 2, 5
    joints = torch.randn(2 * n, j, 3, generator=g, dtype=torch.float64)
    E = torch.eye(3, 4, dtype=torch.float64).expand(2 * n, v, 3, 4).clone()
    E[..., 2, 3] = 5.0
    K = torch.eye(3, dtype=torch.float64).expand(2 * n, v, 3, 3)
    kp2d = joints[:, None, :, :2].expand(2 * n, v, j, 2) / 5.0
    fit = MultiviewTruth(joints[:n], kp2d[:n], K[:n], E[:n])
    test = MultiviewTruth(joints[n:], kp2d[n:], K[n:], E[n:])
    config = ProbeConfig(kinds=("linear",), min_train=2)
    out = evaluate_multiview(joints[:n], joints[n:], fit, test, config=config, baselines=False)
    fit_pose, test_pose = root_relative(joints[:n]), root_relative(joints[n:])
    want = pose_errors(fit_pose.mean(0, keepdim=True).expand_as(test_pose), test_pose)
    assert out["mean_pose"] == want
