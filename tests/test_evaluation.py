import pytest
import torch

from kp3d.data.schema import Sample
from kp3d.evaluation import (
    Collected,
    evaluate_keypoint_discovery,
    evaluate_lifting,
    fit_orthographic_depth,
    image_frame_3d,
    normalise_per_sample,
    procrustes_mean_shape,
)
from kp3d.geometry import axis_angle_to_matrix, random_rotation
from kp3d.methods.prediction import Prediction


def _rotated_copies(shape: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    R = random_rotation((n,), generator=g, dtype=torch.float64)
    return shape @ R.transpose(-1, -2)


def test_normalise_per_sample_matches_naive_loop() -> None:
    g = torch.Generator().manual_seed(1)
    kp = torch.randn(5, 7, 2, generator=g, dtype=torch.float64)
    vis = torch.rand(5, 7, generator=g) > 0.3
    vis[:, 0] = True
    centre, scale = normalise_per_sample(kp, vis)
    for b in range(5):
        pts = kp[b][vis[b]]
        c = pts.mean(0)
        assert torch.allclose(centre[b], c)
        assert torch.allclose(scale[b], ((pts - c) ** 2).sum(-1).mean().sqrt())


def test_orthographic_fit_recovers_depth_of_a_rotated_shape() -> None:
    g = torch.Generator().manual_seed(2)
    shape = torch.randn(12, 3, generator=g, dtype=torch.float64)
    shape -= shape.mean(0)
    posed = _rotated_copies(shape, 6) * 1.7
    obs = posed[..., :2] - posed[..., :2].mean(1, keepdim=True)
    depth = fit_orthographic_depth(shape, obs)
    z = posed[..., 2] - posed[..., 2].mean(1, keepdim=True)
    err = torch.minimum(
        (depth - depth.mean(1, keepdim=True) - z).abs().amax(1),
        (-(depth - depth.mean(1, keepdim=True)) - z).abs().amax(1),
    )
    assert err.max() < 1e-5


def test_procrustes_mean_of_rotated_copies_is_the_shape() -> None:
    shape = torch.randn(10, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    shape -= shape.mean(0)
    mean = procrustes_mean_shape(_rotated_copies(shape, 8))
    from kp3d.metrics import p_mpjpe

    assert p_mpjpe(mean[None], shape[None]) < 1e-6


def test_lifting_protocol_perfect_prediction_and_baselines() -> None:
    shape = torch.randn(10, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    posed = _rotated_copies(shape, 20) * 3.0 + torch.tensor([5.0, -2.0, 10.0], dtype=torch.float64)
    test = Sample(kp2d=posed[..., :2], kp3d=posed)
    out = evaluate_lifting(posed, test, fit=Sample(kp2d=posed[..., :2], kp3d=posed))
    assert out["method"]["mpjpe"]["norm"] < 1e-9
    assert out["flat"]["mpjpe"]["norm"] > 0.1
    # Every test shape is a rotated copy of the one mean shape: the baseline is exact too.
    assert out["mean_shape"]["mpjpe"]["norm"] < 1e-5
    # Input units are normalised units times the per-sample scale.
    _, s = normalise_per_sample(posed[..., :2])
    assert out["flat"]["mpjpe"]["input_units"] > out["flat"]["mpjpe"]["norm"] * s.min() * 0.99


def test_lifting_protocol_brings_camera_frame_ground_truth_into_the_image_frame() -> None:
    # Synthetic sets give 3D in the camera frame (metres) and 2D in pixels: the protocol must
    # score them like the same shapes given in the image frame (x, y = 2D, z scaled alike).
    shape = torch.randn(10, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    camera = _rotated_copies(shape, 20) * 0.3 + torch.tensor([0.1, -0.2, 2.5], dtype=torch.float64)
    pixels = camera[..., :2] * 40.0 + 32.0  # weak perspective: one scale per set here
    image = torch.cat([pixels, camera[..., 2:] * 40.0], -1)
    guess = torch.cat([pixels, torch.randn(20, 10, 1, dtype=torch.float64)], -1)
    got = evaluate_lifting(
        guess, Sample(kp2d=pixels, kp3d=camera), fit=Sample(kp2d=pixels, kp3d=camera)
    )
    want = evaluate_lifting(
        guess, Sample(kp2d=pixels, kp3d=image), fit=Sample(kp2d=pixels, kp3d=image)
    )
    for row in ("method", "flat", "mean_shape"):
        for metric in ("mpjpe", "stress", "p_mpjpe"):
            assert got[row][metric]["norm"] == pytest.approx(want[row][metric]["norm"], rel=1e-9)
    perfect = evaluate_lifting(image, Sample(kp2d=pixels, kp3d=camera))
    assert perfect["method"]["mpjpe"]["norm"] < 1e-9


def test_lifting_protocol_needs_3d_ground_truth() -> None:
    with pytest.raises(ValueError, match="kp3d"):
        evaluate_lifting(torch.zeros(2, 3, 3), Sample(kp2d=torch.zeros(2, 3, 2)))


def _collected(kp: torch.Tensor, lm: torch.Tensor, kp3d=None, gt3d=None) -> Collected:
    pred = Prediction(kp2d=kp, kp3d=kp3d)
    return Collected(pred, Sample(kp2d=lm, kp3d=gt3d, name=[""] * len(kp)), (64, 64))


def test_keypoint_discovery_68_points_zero_when_linear_in_landmarks() -> None:
    g = torch.Generator().manual_seed(5)
    lm = 16 + 32 * torch.rand(300, 68, 2, generator=g)
    W = torch.randn(68 * 2, 10 * 2, generator=g)
    kp = (lm.reshape(300, -1) @ W).reshape(300, 10, 2)
    out = evaluate_keypoint_discovery(
        _collected(kp[:250], lm[:250]), _collected(kp[250:], lm[250:])
    )
    assert out["nme68"]["value"] > 0  # 20 numbers cannot encode 136 at random
    kp = lm.clone()
    out = evaluate_keypoint_discovery(
        _collected(kp[:250], lm[:250]), _collected(kp[250:], lm[250:])
    )
    assert out["nme68"]["value"] < 1e-5 and out["nme5"]["value"] < 1e-5
    assert out["counts"] == {"fit": 250, "test": 50, "keypoints": 68, "landmarks": 68}


def test_keypoint_discovery_3d_head_beats_flat_baseline_when_depth_is_right() -> None:
    g = torch.Generator().manual_seed(6)
    shape = torch.randn(8, 3, generator=g, dtype=torch.float64)
    gt3d = (
        _rotated_copies(shape, 60, seed=7) * 10
        + torch.tensor([32.0, 32.0, 50.0], dtype=torch.float64)
    ).float()
    kp2d = gt3d[..., :2]
    out = evaluate_keypoint_discovery(
        _collected(kp2d[:40], kp2d[:40], gt3d[:40], gt3d[:40]),
        _collected(kp2d[40:], kp2d[40:], gt3d[40:], gt3d[40:]),
    )
    assert out["nme"]["value"] < 1e-4
    assert out["nme3d"]["value"] < 1e-3
    assert out["nme3d_flat_baseline"]["value"] > 10 * out["nme3d"]["value"]


def test_image_frame_3d_undoes_a_per_image_scale_and_keeps_image_frame_data() -> None:
    g = torch.Generator().manual_seed(3)
    cam = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    scale = torch.tensor([2.0, 0.5, 10.0, 1.0], dtype=torch.float64)[:, None, None]
    shift = torch.randn(4, 1, 2, generator=g, dtype=torch.float64)
    kp2d = scale * cam[..., :2] + shift  # weak perspective with a per-image scale
    out = image_frame_3d(cam, kp2d)
    torch.testing.assert_close(out[..., :2], kp2d)
    z = cam[..., 2:] - cam[..., 2:].mean(-2, keepdim=True)
    torch.testing.assert_close(out[..., 2:], scale * z)
    # Data already in the image frame (AFLW2000-3D) keeps x, y and its centred depth.
    again = image_frame_3d(out, kp2d)
    torch.testing.assert_close(again, out)


def test_image_frame_3d_ignores_missing_landmarks_and_checks_shapes() -> None:
    cam = torch.randn(2, 6, 3, dtype=torch.float64)
    kp2d = 3 * cam[..., :2]
    holed = cam.clone()
    holed[0, 5] = float("nan")
    out = image_frame_3d(holed, kp2d)
    assert out[0, 5].isnan().all() and out[..., :5, :].isfinite().all()
    ref = image_frame_3d(cam[:, :5], kp2d[:, :5])
    torch.testing.assert_close(out[0, :5], ref[0])
    with pytest.raises(ValueError, match="image_frame_3d"):
        image_frame_3d(cam, kp2d[:, :4])


def test_keypoint_discovery_3d_uses_the_image_frame_for_camera_frame_ground_truth() -> None:
    # Ground truth in a camera frame whose scale relative to the image differs per image (the
    # synthetic sets); the method's image-frame 3D keypoints (kp3d_image) are exact.
    g = torch.Generator().manual_seed(8)
    shape = torch.randn(8, 3, generator=g, dtype=torch.float64)
    cam = _rotated_copies(shape, 80, seed=9) + torch.tensor([0.0, 0.0, 20.0], dtype=torch.float64)
    zoom = 5 + 10 * torch.rand(80, 1, 1, generator=g, dtype=torch.float64)
    kp2d = 32 + zoom * cam[..., :2]
    image = torch.cat([kp2d, zoom * (cam[..., 2:] - 20)], -1)
    cam, kp2d, image = cam.float(), kp2d.float(), image.float()

    def part(sl: slice) -> Collected:
        pred = Prediction(kp2d=kp2d[sl], kp3d=cam[sl], kp3d_image=image[sl])
        return Collected(pred, Sample(kp2d=kp2d[sl], kp3d=cam[sl], name=[""] * 40), (64, 64))

    out = evaluate_keypoint_discovery(part(slice(0, 40)), part(slice(40, 80)))
    assert out["nme3d"]["value"] < 1e-3 and out["nme3d_depth"]["value"] < 1e-3
    assert out["nme3d_flat_baseline"]["value"] > 0.05


def test_keypoint_discovery_reports_the_3d_heads_rotation_spread() -> None:
    g = torch.Generator().manual_seed(1)
    kp = torch.rand(20, 6, 2, generator=g) * 64
    fit, test = _collected(kp[:10], kp[:10]), _collected(kp[10:], kp[10:])
    assert "rotation_spread_deg" not in evaluate_keypoint_discovery(fit, test)
    test.pred.R = axis_angle_to_matrix(
        torch.tensor([[0.0, 0.1, 0.0], [0.0, -0.1, 0.0]]).repeat(5, 1)
    )
    out = evaluate_keypoint_discovery(fit, test)
    assert out["rotation_spread_deg"]["value"] == pytest.approx(0.1 * 180 / torch.pi, rel=1e-4)


_BODY = ["pelvis", "left_knee", "right_knee", "left_ankle", "right_ankle", "head"]
_BODY_MIRROR = [0, 2, 1, 4, 3, 5]


def test_keypoint_discovery_forgives_left_right_swaps_where_landmarks_name_sides() -> None:
    # Keypoints that follow the image side: exact, except that a third of the images label the
    # left joints as right ones.
    g = torch.Generator().manual_seed(11)
    lm = 16 + 32 * torch.rand(300, 6, 2, generator=g)
    kp = lm.clone()
    kp[::3] = kp[::3][:, _BODY_MIRROR]
    fit, test = _collected(kp[:240], lm[:240]), _collected(kp[240:], lm[240:])
    assert "nme_lr" not in evaluate_keypoint_discovery(fit, test)  # no names, no sides
    fit.landmark_names = test.landmark_names = _BODY
    out = evaluate_keypoint_discovery(fit, test)
    assert out["nme"]["value"] > 0.05
    assert out["nme_lr"]["value"] < 1e-4
    assert "Human3.6M" in out["nme_lr"]["protocol"]
    # Names that do not pair up keep the labels as given.
    test.landmark_names = ["left_knee", *_BODY[1:]]
    assert "nme_lr" not in evaluate_keypoint_discovery(fit, test)


def test_keypoint_discovery_keeps_face_landmark_labels_as_given() -> None:
    # iBUG names say left and right, but right_brow_1 is not the mirror of left_brow_1, and the
    # face protocols do not swap.
    from kp3d.data.synth.face import IBUG_NAMES

    g = torch.Generator().manual_seed(13)
    lm = 16 + 32 * torch.rand(200, 68, 3, generator=g)
    fit = _collected(lm[:150, :, :2], lm[:150, :, :2], lm[:150], lm[:150])
    test = _collected(lm[150:, :, :2], lm[150:, :, :2], lm[150:], lm[150:])
    fit.landmark_names = test.landmark_names = list(IBUG_NAMES)
    out = evaluate_keypoint_discovery(fit, test)
    assert "nme68" in out and "nme3d" in out and not any(k.endswith("_lr") for k in out)


def test_keypoint_discovery_3d_errors_with_left_right_swaps_forgiven() -> None:
    g = torch.Generator().manual_seed(12)
    gt3d = 16 + 32 * torch.rand(300, 6, 3, generator=g)
    kp3d = gt3d.clone()
    kp3d[::3] = kp3d[::3][:, _BODY_MIRROR]
    fit = _collected(kp3d[:240, :, :2], gt3d[:240, :, :2], kp3d[:240], gt3d[:240])
    test = _collected(kp3d[240:, :, :2], gt3d[240:, :, :2], kp3d[240:], gt3d[240:])
    fit.landmark_names = test.landmark_names = _BODY
    out = evaluate_keypoint_discovery(fit, test)
    assert out["nme3d"]["value"] > 0.05 and out["nme3d_lr"]["value"] < 1e-3
    assert out["nme3d_flat_baseline_lr"]["value"] > 10 * out["nme3d_depth_lr"]["value"]


def test_collect_takes_the_landmark_names_through_subsets() -> None:
    from torch.utils.data import Subset

    from kp3d.evaluation import collect

    class Named(torch.utils.data.Dataset):
        keypoint_names = _BODY

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> Sample:
            return Sample(kp2d=torch.zeros(6, 2), name=str(i))

    class Model(torch.nn.Module):
        def predict(self, batch: Sample) -> Prediction:
            return Prediction(kp2d=batch.kp2d)

    assert collect(Model(), Subset(Subset(Named(), [0, 1, 2]), [0, 2])).landmark_names == _BODY
    Named.keypoint_names = None
    assert collect(Model(), Named()).landmark_names is None


def test_keypoint_discovery_reports_how_much_3d_motion_the_tracks_carry() -> None:
    g = torch.Generator().manual_seed(8)
    shape = torch.randn(8, 3, generator=g, dtype=torch.float64)
    gt3d = (_rotated_copies(shape, 60, seed=9) * 10 + 32).float()
    lm = gt3d[..., :2]
    A = torch.eye(2) + 0.3 * torch.randn(60, 2, 2, generator=g)
    template = lm[0] @ A.transpose(-1, -2)  # every image an affine map of the first one
    out = evaluate_keypoint_discovery(
        _collected(template[:40], lm[:40]), _collected(template[40:], lm[40:])
    )
    assert out["tracks_sv3"]["value"] < 1e-4
    assert out["tracks_sv3_gt"]["value"] > 0.1
    lm_hidden = lm[40:].clone()
    lm_hidden[0, 0] = float("nan")  # an image without every landmark is left out of the gt value
    out = evaluate_keypoint_discovery(_collected(lm[:40], lm[:40]), _collected(lm[40:], lm_hidden))
    assert out["tracks_sv3"]["value"] == pytest.approx(out["tracks_sv3_gt"]["value"], abs=0.02)


def test_keypoint_discovery_leaves_the_track_rank_out_where_it_is_undefined() -> None:
    g = torch.Generator().manual_seed(10)
    lm = torch.rand(30, 6, 2, generator=g) * 64
    two = lm[:, :2] + torch.randn(30, 2, 2, generator=g)  # two keypoints have no third direction
    out = evaluate_keypoint_discovery(_collected(two[:20], lm[:20]), _collected(two[20:], lm[20:]))
    assert "tracks_sv3" not in out and out["tracks_sv3_gt"]["value"] > 0
    hidden = lm[20:].clone()
    hidden[1:, 2] = float("nan")  # one test image keeps every landmark: too few for the gt row
    out = evaluate_keypoint_discovery(_collected(lm[:20], lm[:20]), _collected(lm[20:], hidden))
    assert "tracks_sv3_gt" not in out and out["tracks_sv3"]["value"] > 0


@pytest.mark.parametrize("n_landmarks,name", [(68, "nme68"), (5, "nme5"), (8, "nme")])
def test_keypoint_discovery_scores_the_mean_landmark_layout(n_landmarks: int, name: str) -> None:
    # Naive twin: every test image gets the fit set's mean landmarks, scored by hand.
    g = torch.Generator().manual_seed(8)
    lm = 16 + 32 * torch.rand(60, n_landmarks, 2, generator=g, dtype=torch.float64)
    kp = torch.rand(60, 4, 2, generator=g, dtype=torch.float64) * 64
    out = evaluate_keypoint_discovery(_collected(kp[:40], lm[:40]), _collected(kp[40:], lm[40:]))
    mean, test = lm[:40].mean(0), lm[40:]
    if n_landmarks == 68:
        norm = (test[:, 36] - test[:, 45]).norm(dim=-1)
    elif n_landmarks == 5:
        norm = (test[:, 0] - test[:, 1]).norm(dim=-1)
    else:
        side = test.amax(1) - test.amin(1)
        norm = (side[:, 0] * side[:, 1]).sqrt()
    naive = ((mean - test).norm(dim=-1).mean(-1) / norm).mean()
    baseline = out[f"{name}_mean_layout_baseline"]
    assert baseline["value"] == pytest.approx(float(naive), rel=1e-5)
    assert "mean landmark layout" in baseline["protocol"]
