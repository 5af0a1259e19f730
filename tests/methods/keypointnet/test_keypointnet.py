"""``keypointnet``: config, the network, the orientation flag, configure, training steps,
prediction from one image, and the CLI round trip train -> infer -> evaluate -> report."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import kp3d
from kp3d.cli import main
from kp3d.data.inputs import VIEW_PAIRS
from kp3d.data.schema import Sample, collate
from kp3d.errors import ConfigError, DataError
from kp3d.geometry import axis_angle_to_matrix, unproject_pinhole
from kp3d.methods import get_method
from kp3d.methods.keypointnet import (
    DILATIONS,
    DilatedFCN,
    KeypointNet,
    KeypointNetConfig,
    configure,
    left_right_pairs,
    left_side_flag,
)
from kp3d.methods.keypointnet.model import view_pairs

TINY = {"image_size": 32, "n_keypoints": 4, "width": 4, "depth_offset": 2.0, "fov_deg": 50.0}


def _synth(out: Path, n: int, seed: int, *flags: str) -> Path:
    synth = ["synth", "creature", "--n", str(n), "--size", "32", "--seed", str(seed)]
    assert main([*synth, "--out", str(out), *flags]) == 0
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synth(tmp_path_factory.mktemp("kpn") / "pairs", 4, 0, "--pairs")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_size": 8}, "image_size: must be >= 16"),
        ({"n_keypoints": 1}, "n_keypoints: must be >= 2"),
        ({"width": 5}, "width: must be an even number"),
        ({"fov_deg": 180}, "fov_deg"),
        ({"left_keypoints": (1, 2), "right_keypoints": (3,)}, "need as many of each"),
        ({"orientation": "yes"}, "valid choices: auto, on, off"),
        ({"separation": 0}, "separation: must be > 0"),
        ({"lambda_sep": -1}, "loss weights must be >= 0"),
        ({"lambda_obj": -1}, "loss weights must be >= 0"),
    ],
)
def test_config_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KeypointNetConfig(**values)


def test_orientation_without_sides_is_refused() -> None:
    with pytest.raises(ConfigError, match="no left_keypoints"):
        KeypointNet(KeypointNetConfig(**TINY, orientation="on"))


def test_the_network_is_13_dilated_convolutions_with_2n_outputs() -> None:
    net = DilatedFCN(5, 8, width=6)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert (
        tuple(c.dilation[0] for c in convs)
        == DILATIONS
        == (1, 1, 2, 4, 8, 16, 1, 2, 4, 8, 16, 1, 1)
    )
    assert all(c.kernel_size == (3, 3) and c.padding == c.dilation for c in convs)
    assert [c.out_channels for c in convs] == [6] * 12 + [8] and convs[0].in_channels == 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 12
    assert sum(isinstance(m, nn.LeakyReLU) for m in net.modules()) == 12
    assert net(torch.rand(2, 5, 20, 24)).shape == (2, 8, 20, 24)
    model = KeypointNet(
        KeypointNetConfig(**TINY, orientation="on", left_keypoints=(0,), right_keypoints=(1,))
    )
    assert model.net.net[0].in_channels == 3 + 2 and model.net.net[-1].out_channels == 2 * 4
    assert model.orientation_net is not None and model.orientation_net.net[0].out_channels == 2


def test_left_side_flag_is_the_side_facing_the_camera() -> None:
    # An object 3 m ahead whose left keypoint is at +x: turned by yaw about the vertical (y).
    body = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0], [0.0, -0.5, 0.0]])  # left, right, top
    flags = []
    for yaw in (-80.0, -10.0, 10.0, 80.0, 100.0, 170.0, 190.0):
        R = axis_angle_to_matrix(torch.tensor([0.0, math.radians(yaw), 0.0]))
        X = body @ R.T + torch.tensor([0.0, 0.0, 3.0])
        flags.append(bool(left_side_flag(X, [0], [1])))
        # The left keypoint is nearer the camera exactly when the flag is set (naive rule).
        assert flags[-1] == bool(X[0, 2] < X[1, 2])
    assert flags == [False, False, True, True, True, True, False]
    with pytest.raises(ValueError, match="as many left as right"):
        left_side_flag(X, [0], [])


def test_left_right_pairs_from_names() -> None:
    names = ["pelvis", "left_knee", "right_knee", "Right hand", "left hand"]
    assert left_right_pairs(names) == ((1, 4), (2, 3))
    assert left_right_pairs(["a", "b"]) == ((), ())
    assert left_right_pairs(["left_x"]) == ((), ())  # no counterpart
    assert left_right_pairs(None) == ((), ())


def test_view_pairs_cover_every_ordered_pair() -> None:
    a, b = view_pairs(4, 2, 0)
    assert a.tolist() == [0, 1, 0, 1] and b.tolist() == [1, 0, 1, 0]
    seen = set()
    for step in range(12):
        a, b = view_pairs(3, 3, step)
        assert (a != b).all()
        seen |= set(zip(a.tolist(), b.tolist(), strict=True))
    assert seen == {(i, j) for i in range(3) for j in range(3) if i != j}


def test_configure_reads_the_camera_depth_sides_and_masks(pairs: Path) -> None:
    data = VIEW_PAIRS.open_training(pairs)
    c = configure(KeypointNetConfig(), data)
    first = data[0]
    fx = float(first.intrinsics[0, 0, 0])
    assert c.fov_deg == pytest.approx(math.degrees(2 * math.atan(16 / fx)))
    z = torch.cat([data[i].kp3d[..., 2].flatten() for i in range(len(data))])
    assert c.depth_offset == pytest.approx(float(z.median()))
    assert c.orientation == "on" and c.lambda_obj == 1.0
    names = data.keypoint_names
    assert [names[i] for i in c.left_keypoints] == [n for n in names if n.startswith("left_")]
    assert [names[i] for i in c.right_keypoints] == [
        n.replace("left", "right") for n in names if n.startswith("left_")
    ]
    # The user's values win; what the data cannot supervise is refused.
    kept = configure(KeypointNetConfig(fov_deg=30.0, orientation="off", lambda_obj=0.5), data)
    assert (kept.fov_deg, kept.orientation, kept.lambda_obj) == (30.0, "off", 0.5)


class _NoLabels(torch.utils.data.Dataset):
    """A pair set without 3D keypoints, masks or names."""

    def __init__(self, data: torch.utils.data.Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Sample:
        return self.data[i].replace(kp3d=None, mask=None)


def test_configure_without_labels_turns_orientation_and_silhouette_off(pairs: Path) -> None:
    data = _NoLabels(VIEW_PAIRS.open_training(pairs))
    c = configure(KeypointNetConfig(), data)
    assert c.orientation == "off" and c.lambda_obj == 0.0 and c.left_keypoints == ()
    t = torch.stack([data[i].extrinsics[..., 3] for i in range(len(data))]).norm(dim=-1)
    assert c.depth_offset == pytest.approx(float(t.median()))
    with pytest.raises(ConfigError, match="orientation"):
        configure(KeypointNetConfig(orientation="on"), data)
    with pytest.raises(ConfigError, match="no object masks"):
        configure(KeypointNetConfig(lambda_obj=1.0), data)


def test_training_needs_calibrated_views(tmp_path: Path) -> None:
    single = _synth(tmp_path / "single", 2, 0)
    with pytest.raises(DataError, match="calibrated views"):
        VIEW_PAIRS.open_training(single)


def test_two_training_steps_are_finite_and_move_every_network(pairs: Path) -> None:
    data = VIEW_PAIRS.open_training(pairs, size=32)
    torch.manual_seed(0)
    config = configure(KeypointNetConfig(image_size=32, n_keypoints=4, width=4), data)
    model = KeypointNet(config)
    batch = collate([data[i] for i in range(len(data))])
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(2):
        out = model.training_step(batch, step)
        assert set(out.logs) >= {
            "consistency",
            "pose",
            "separation",
            "silhouette",
            "variance",
            "orientation",
            "orientation_accuracy",
        }
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert all(moved)
    weights = model.loss_weights()
    assert weights["separation"] == config.lambda_sep and weights["silhouette"] == 1.0


def test_trains_on_the_views_of_a_rig_set(tmp_path: Path) -> None:
    # A --rig set's moments hold V calibrated views: training draws pairs among them.
    rig = _synth(tmp_path / "rig", 4, 0, "--rig", "3")
    run = tmp_path / "run"
    train = ["train", "--method", "keypointnet", "--data", str(rig), "--out", str(run)]
    options = ["--steps", "2", "--batch-size", "2", "--no-bf16", "--k", "4", "--width", "4"]
    assert main([*train, *options, "--size", "32"]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2 and np.isfinite(metrics[-1]["pose"])


def test_losses_refuse_single_images() -> None:
    model = KeypointNet(KeypointNetConfig(**TINY))
    with pytest.raises(ValueError, match="calibrated views"):
        model.losses(Sample(image=torch.rand(2, 3, 32, 32)), 0)


def test_predict_from_one_image_gives_2d_depth_and_camera_frame_3d() -> None:
    torch.manual_seed(0)
    model = KeypointNet(KeypointNetConfig(**TINY)).eval()
    image = torch.rand(3, 3, 32, 32)
    pred = model.predict(Sample(image=image))
    assert pred.kp2d.shape == (3, 4, 2) and pred.kp3d.shape == (3, 4, 3)
    assert pred.heatmaps.shape == (3, 4, 32, 32) and pred.image_size == (32, 32)
    z = pred.extras["keypoint_depth"]
    f = 16 / math.tan(math.radians(25.0))  # a 50-degree field of view over 32 pixels
    K = torch.tensor([[f, 0.0, 16.0], [0.0, f, 16.0], [0.0, 0.0, 1.0]]).expand(3, 3, 3)
    torch.testing.assert_close(pred.kp3d, unproject_pinhole(pred.kp2d, z, K))
    assert ((pred.kp2d >= 0) & (pred.kp2d <= 32)).all()
    torch.testing.assert_close(pred.kp3d_image[..., :2], pred.kp2d)
    torch.testing.assert_close(pred.kp3d_image[..., 2].mean(-1), torch.zeros(3), atol=1e-4, rtol=0)
    # The batch's own intrinsics win over the configured field of view.
    K2 = K.clone()
    K2[:, 0, 0] = K2[:, 1, 1] = 80.0
    with_k = model.predict(Sample(image=image, intrinsics=K2))
    torch.testing.assert_close(with_k.kp3d, unproject_pinhole(pred.kp2d, z, K2))
    # Views of a moment are predicted one by one.
    views = model.predict(Sample(image=image[None].expand(2, 3, 3, 32, 32)))
    assert views.kp2d.shape == (2, 3, 4, 2) and views.kp3d.shape == (2, 3, 4, 3)
    torch.testing.assert_close(views.kp2d[1], pred.kp2d)


def test_predict_needs_a_camera() -> None:
    model = KeypointNet(KeypointNetConfig(**{**TINY, "fov_deg": 0.0})).eval()
    with pytest.raises(ValueError, match="no fov_deg"):
        model.predict(Sample(image=torch.rand(1, 3, 32, 32)))


def test_spec() -> None:
    spec = get_method("keypointnet")
    assert spec.config_cls is KeypointNetConfig and spec.inputs is VIEW_PAIRS
    assert spec.protocols == ("keypoint_discovery", "pose_probe")


def test_cli_round_trip_train_infer_evaluate_report(pairs: Path, tmp_path: Path) -> None:
    rig = _synth(tmp_path / "rig", 8, 1, "--rig", "2")
    run = tmp_path / "run"
    train = ["train", "--method", "keypointnet", "--data", str(pairs), "--out", str(run)]
    options = ["--steps", "2", "--log-every", "1", "--batch-size", "2", "--no-bf16"]
    assert main([*train, *options, "--k", "4", "--width", "4", "--size", "32"]) == 0
    stored = json.loads((run / "config.json").read_text())["model"]
    assert stored["orientation"] == "on" and stored["lambda_obj"] == 1.0

    out = tmp_path / "kp.npz"
    images = pairs / "images"
    assert main(["infer", "--run", str(run), "--input", str(images), "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["kp2d"].shape == (8, 4, 2) and z["kp3d"].shape == (8, 4, 3)
        assert z["keypoint_depth"].shape == (8, 4) and z["left_side"].shape == (8,)
        assert np.isfinite(z["kp3d"]).all()

    # The Python API: one image file, no intrinsics (the training data's field of view).
    one = kp3d.load(run).predict(str(images / "000000_v0.png"))
    assert one.kp2d.shape == (1, 4, 2) and one.kp3d.shape == (1, 4, 3)
    torch.testing.assert_close(one.kp3d[..., 2], one.extras["keypoint_depth"])
    # The exported ONNX graph gives the same 3D keypoints.
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        graph = kp3d.load(run, backend="onnx").predict(str(images / "000000_v0.png"))
        assert graph.kp3d is not None
        torch.testing.assert_close(graph.kp3d, one.kp3d, atol=1e-3, rtol=1e-3)

    assert main(["evaluate", "--run", str(run), "--data", str(rig), "--probe", "linear"]) == 0
    doc = json.loads((run / "eval.json").read_text())
    assert list(doc["results"]) == ["pose_probe"]
    assert "keypoint_discovery" in doc["skipped"]
    probe = doc["results"]["pose_probe"]
    assert np.isfinite(probe["probe"]["linear"]["100%"]["p_mpjpe"])

    # Single views: the keypoint-discovery protocol (2D and 3D NME).
    fit, single = _synth(tmp_path / "fit", 6, 2), _synth(tmp_path / "single", 4, 3)
    assert main(["evaluate", "--run", str(run), "--data", str(single), "--fit", str(fit)]) == 0
    doc = json.loads((run / "eval.json").read_text())
    assert list(doc["results"]) == ["keypoint_discovery"] and "pose_probe" in doc["skipped"]
    found = doc["results"]["keypoint_discovery"]
    assert np.isfinite(found["nme"]["value"]) and np.isfinite(found["nme3d"]["value"])

    page = tmp_path / "report.html"
    report = ["report", "--run", str(run), "--data", str(pairs), "--out", str(page)]
    assert main([*report, "--samples", "2"]) == 0
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 4  # both views of each pair
    assert 'kp3dViewer(document.getElementById("s1")' in html
