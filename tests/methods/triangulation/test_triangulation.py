"""The ``triangulation`` method (Honari & Fua 2022): its geometry path, losses, training steps
and the CLI round trip on a tiny rig set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kp3d.cli import main
from kp3d.data.inputs import VIEWS
from kp3d.data.schema import Sample, collate
from kp3d.errors import ConfigError, DataError
from kp3d.geometry import make_extrinsics, pixel_to_normalised, project_points, projection_matrix
from kp3d.geometry.rotations import random_rotation
from kp3d.methods import get_method
from kp3d.methods.triangulation import SPEC, Triangulation, TriangulationConfig
from kp3d.methods.triangulation.model import (
    STILL_BOX_PX,
    Box,
    Detector,
    box_to_pixels,
    centering_loss,
    composite,
    coverage_loss,
    crop,
    patch_cameras,
    reproject_patch_keypoints,
    triangulate_patch_keypoints,
    uncrop,
)

TINY = {
    "image_size": 32,
    "patch_size": 16,
    "detector_size": 16,
    "n_keypoints": 4,
    "width": 8,
    "perceptual": "none",
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tri")
    argv = ["synth", "creature", "--rig", "3", "--sequences", "1", "--n", "6", "--size", "32"]
    assert main([*argv, "--out", str(root / "rig")]) == 0
    return root / "rig"


def _batch(rig: Path, n: int = 2) -> Sample:
    ds = VIEWS.open(rig, size=32)
    return collate([ds[i] for i in range(n)])


# ----------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_size": 48}, "image_size"),
        ({"patch_size": 8}, "patch_size"),
        ({"detector_size": 128}, "detector_size"),
        ({"views": 1}, "views"),
        ({"width": 6}, "width"),
        ({"min_box": 0.5, "max_box": 0.4}, "min_box"),
        ({"heatmap_sigma": 0.0}, "heatmap_sigma"),
        ({"target_mask": "edges"}, "target_mask"),
        ({"perceptual": "vgg"}, "perceptual"),
        ({"gamma_mask": -1.0}, "gamma_mask"),
        ({"lr_scale_detector": 0.0}, "lr_scale_detector"),
    ],
)
def test_config_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TriangulationConfig(**values)


def test_the_papers_weights_and_learning_rates_are_the_defaults() -> None:
    c = TriangulationConfig()
    assert (c.beta_perceptual, c.gamma_mask, c.delta_coverage, c.eta_centering) == (
        2.0,
        0.5,
        0.01,
        1.0,
    )
    assert c.heatmap_sigma == 0.02
    assert SPEC.train_defaults["lr"] * c.lr_scale_detector == pytest.approx(2e-5)
    assert get_method("triangulation") is SPEC


# ----------------------------------------------------------------------- geometry path


def _cameras(B: int, V: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras about 4 units from the origin looking at it."""
    R = random_rotation(B * V, generator=g, dtype=torch.float64).view(B, V, 3, 3)
    t = torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64).expand(B, V, 3)
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]], dtype=torch.float64)
    return K.expand(B, V, 3, 3), make_extrinsics(R, t)


def test_triangulation_and_reprojection_round_trip_through_the_methods_path() -> None:
    """World points projected into each view, mapped into each view's patch through its box
    (the crop's own affine map), are triangulated back exactly through the patch cameras, and
    reproject onto the same patch coordinates."""
    g = torch.Generator().manual_seed(0)
    B, V, N, S, P = 2, 3, 5, 32, 16
    K, E = _cameras(B, V, g)
    X = (torch.rand(B, N, 3, generator=g, dtype=torch.float64) - 0.5) * 0.8
    box = Box(
        (torch.rand(B, V, 2, generator=g, dtype=torch.float64) - 0.5) * 0.4,
        0.4 + 0.5 * torch.rand(B, V, 2, generator=g, dtype=torch.float64),
    )
    uv = project_points(X[:, None], projection_matrix(K, E))  # (B, V, N, 2) image pixels
    kp = (pixel_to_normalised(uv, (S, S)) - box.centre[..., None, :]) / box.half[..., None, :]
    K_p = patch_cameras(K, box, (S, S), P)
    world = triangulate_patch_keypoints(kp, K_p, E, P, weights=torch.rand(B, V, N) + 0.5)
    torch.testing.assert_close(world, X, atol=1e-9, rtol=0)
    torch.testing.assert_close(reproject_patch_keypoints(world, K_p, E, P), kp, atol=1e-9, rtol=0)
    # Views weighted 0 drop out: two views still determine the points.
    w = torch.ones(B, V, N, dtype=torch.float64)
    w[:, 2] = 0
    noisy = kp.clone()
    noisy[:, 2] += 0.3
    torch.testing.assert_close(
        triangulate_patch_keypoints(noisy, K_p, E, P, weights=w), X, atol=1e-9, rtol=0
    )


def test_crop_and_uncrop_are_inverse_on_the_box_and_zero_outside() -> None:
    """A box of 16 x 16 image pixels resampled to a 16-pixel patch puts every patch pixel
    centre on an image pixel centre: the crop is the sub-image, the inverse puts it back."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    box = Box(torch.tensor([[0.25, -0.25]]).double().expand(2, 2), torch.full((2, 2), 0.5).double())
    assert box_to_pixels(box, (32, 32))[0].tolist() == [12.0, 4.0, 28.0, 20.0]
    patch = crop(image, box, 16)
    torch.testing.assert_close(patch, image[..., 4:20, 12:28])
    back = uncrop(patch, box, (32, 32))
    torch.testing.assert_close(back[..., 4:20, 12:28], image[..., 4:20, 12:28])
    # More than half a pixel outside the box there is nothing (the mask is 0 there).
    assert float(back[..., :, :11].abs().max()) == 0.0 and float(back[..., 21:, :].abs().max()) == 0


def test_the_composite_is_the_image_when_the_mask_is_1_and_the_decoded_patch_the_image() -> None:
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 3, 16, 16, generator=g, dtype=torch.float64)
    background = torch.rand(2, 3, 3, 16, 16, generator=g, dtype=torch.float64)
    ones = torch.ones(2, 3, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(composite(ones, image, background), image)
    torch.testing.assert_close(composite(ones * 0, image, background), background)
    # Through the method's path: a box over the whole view and a patch of the view's size make
    # crop and inverse transform the identity, so D = the patch and M = 1 give back I.
    flat = image.flatten(0, 1)
    box = Box(torch.zeros(6, 2, dtype=torch.float64), torch.ones(6, 2, dtype=torch.float64))
    rgb = uncrop(crop(flat, box, 16), box, (16, 16))
    mask = uncrop(torch.ones(6, 1, 16, 16, dtype=torch.float64), box, (16, 16))
    torch.testing.assert_close(composite(mask, rgb, background.flatten(0, 1)), flat)


# --------------------------------------------------------------------------------- losses


def test_coverage_against_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(3)
    prob = torch.rand(2, 3, 4, 5, 5, generator=g, dtype=torch.float64)
    prob = prob / prob.sum((-2, -1), keepdim=True)
    mask = torch.rand(2, 3, 1, 5, 5, generator=g, dtype=torch.float64)
    total, count = 0.0, 0
    for b in range(2):
        for v in range(3):
            for k in range(4):
                mass = 0.0
                for i in range(5):
                    for j in range(5):
                        mass += float(prob[b, v, k, i, j] * mask[b, v, 0, i, j])
                total += abs(1 - mass)
                count += 1
    assert float(coverage_loss(prob, mask)) == pytest.approx(total / count)
    assert float(coverage_loss(prob, torch.ones_like(mask))) == pytest.approx(0.0, abs=1e-12)
    torch.autograd.gradcheck(lambda m: coverage_loss(prob, m), (mask.requires_grad_(),))


def test_centering_against_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(4)
    centre = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    kp = torch.randn(2, 3, 4, 2, generator=g, dtype=torch.float64)
    total = 0.0
    for b in range(2):
        for v in range(3):
            mx = sum(float(kp[b, v, k, 0]) for k in range(4)) / 4
            my = sum(float(kp[b, v, k, 1]) for k in range(4)) / 4
            total += (
                (float(centre[b, v, 0]) - mx) ** 2 + (float(centre[b, v, 1]) - my) ** 2
            ) ** 0.5
    assert float(centering_loss(centre, kp)) == pytest.approx(total / 6)
    torch.autograd.gradcheck(
        lambda c, k: centering_loss(c, k), (centre.requires_grad_(), kp.requires_grad_())
    )


def test_centering_moves_the_box_to_the_keypoints_and_the_keypoints_to_the_box() -> None:
    """The term's value is ``||u - mean kp||`` of the keypoints in the image; its gradient
    takes u towards the keypoints' mean (S learns from it) and the patch keypoints towards
    the patch centre, each half the plain loss's."""
    g = torch.Generator().manual_seed(6)
    centre = (0.3 * torch.randn(2, 3, 2, generator=g, dtype=torch.float64)).requires_grad_()
    half = (0.3 + 0.2 * torch.rand(2, 3, 2, generator=g, dtype=torch.float64)).requires_grad_()
    kp = (0.2 * torch.randn(2, 3, 4, 2, generator=g, dtype=torch.float64) + 0.3).requires_grad_()
    size = (32, 48)
    loss = Triangulation.centering(kp, Box(centre, half), size)
    mean = (centre + half * kp.mean(-2)).detach()  # the keypoints' mean in the image
    expected = centering_loss(centre.detach(), mean[..., None, :])
    assert float(loss.detach()) == pytest.approx(float(expected))
    g_centre, g_half, g_kp = torch.autograd.grad(loss, (centre, half, kp), allow_unused=True)
    direction = (centre - mean).detach()
    unit = direction / direction.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(g_centre, 0.5 * unit / 6)  # a descent step moves u to the mean
    assert g_half is None  # the box's size is the reconstruction's business
    # The keypoints, with the box held: d/dkp of ||h mean(kp)|| / 2.
    u, h = centre.detach(), half.detach()
    (plain,) = torch.autograd.grad(centering_loss(u, u[..., None, :] + h[..., None, :] * kp), kp)
    torch.testing.assert_close(g_kp, 0.5 * plain)


class _Brightness(torch.nn.Module):
    """A stand-in trunk: the first channel averaged over 4 x 4 cells, as 8 channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x[:, :1], 4).expand(-1, 8, -1, -1)


def test_the_detectors_box_centre_is_the_peak_of_its_score_map() -> None:
    """With a score map peaked on one 4 x 4 cell (50 x its brightness) the centre is that
    cell's centre, wherever the cell is; the untrained half side is mid-range."""
    det = Detector(width=4, min_box=0.2, max_box=0.6)
    det.trunk = _Brightness()
    torch.nn.init.constant_(det.score.weight, 50 / 8)
    image = torch.full((3, 3, 32, 32), 0.2)
    cells = [(0, 0), (5, 2), (7, 6)]  # (column, row) of the bright cell
    for i, (cx, cy) in enumerate(cells):
        image[i, :, 4 * cy : 4 * cy + 4, 4 * cx : 4 * cx + 4] = 1.0
    box = det(image)
    pixels = torch.tensor([[4.0 * cx + 2, 4.0 * cy + 2] for cx, cy in cells])
    torch.testing.assert_close(box.centre, pixel_to_normalised(pixels, (32, 32)), atol=1e-6, rtol=0)
    torch.testing.assert_close(box.half, torch.full((3, 2), 0.4))


def test_the_detector_learns_where_a_small_subject_is() -> None:
    """Trained on the centre of a 3 x 3 square at random places in 16 x 16 images, the box
    centre finds it on new images: the gradient reaches the trunk through the soft-argmax (the
    places spread 0.5 normalised units; a box that does not move would miss by about that)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    def squares(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xy = torch.randint(1, 15, (n, 2), generator=g)
        image = torch.full((n, 3, 16, 16), 0.2)
        for i, (x, y) in enumerate(xy.tolist()):
            image[i, :, y - 1 : y + 2, x - 1 : x + 2] = 0.9
        return image, pixel_to_normalised(xy.float() + 0.5, (16, 16))

    det = Detector(width=8, min_box=0.15, max_box=1.0)
    opt = torch.optim.Adam(det.parameters(), 1e-2)
    for _ in range(200):
        image, centre = squares(32)
        loss = (det(image).centre - centre).square().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    image, centre = squares(256)
    with torch.no_grad():
        error = (det(image).centre - centre).norm(dim=-1).mean()
    assert float(error) < 0.1


# ---------------------------------------------------------------------------------- model


def test_diagnose_flags_a_still_box_and_a_collapsed_one(rig: Path) -> None:
    """Untrained, every moment gets the centred box: the still-box warning only. A score map
    that depends on the view moves the centres (on views of noise, which differ far more than
    this tiny rig's); a half-side head at its bound collapses."""
    torch.manual_seed(0)
    model = Triangulation(TriangulationConfig(**TINY)).eval()
    batch = _batch(rig, n=4)
    with torch.no_grad():
        first = model.diagnose(batch)
        assert first.values["box_centre_spread_px"] == 0.0
        assert len(first.warnings) == 1 and "hardly move" in first.warnings[0]
        torch.nn.init.normal_(model.detector.score.weight, std=20.0)
        g = torch.Generator().manual_seed(0)
        noise = batch.replace(image=torch.rand(batch.image.shape, generator=g))
        moving = model.diagnose(noise)
        assert moving.values["box_centre_spread_px"] > 2 * STILL_BOX_PX
        assert moving.warnings == []
        torch.nn.init.constant_(model.detector.head.bias, 50.0)
        collapsed = model.diagnose(noise)
    assert len(collapsed.warnings) == 1 and "collapsed" in collapsed.warnings[0]


@pytest.mark.parametrize("target", ["predicted", "ground_truth", "background"])
def test_two_training_steps(rig: Path, target: str) -> None:
    torch.manual_seed(0)
    model = Triangulation(TriangulationConfig(**TINY, target_mask=target, views=2))
    groups = model.param_groups()
    scales = {g.name.split(".")[0]: g.lr_scale for g in groups}
    assert scales == {
        "detector": 0.2,
        "decoder": 0.2,
        "encoder": 1.0,
        "keypoint_encoder": 1.0,
        "mask_decoder": 1.0,
    }
    n_params = sum(len(g.params) for g in groups)
    assert n_params == sum(1 for p in model.parameters() if p.requires_grad)
    opt = torch.optim.Adam([{"params": g.params, "lr": 1e-3 * g.lr_scale} for g in groups])
    batch = _batch(rig)
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(2):
        out = model.training_step(batch, step)
        assert set(out.logs) >= {"reconstruction", "mask", "coverage", "centering", "box_half"}
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_the_perceptual_term_is_weighted_beta(rig: Path) -> None:
    model = Triangulation(TriangulationConfig(**{**TINY, "perceptual": "efficientnet_lite0"}))
    out = model.losses(_batch(rig), 0)
    assert set(out.losses) == {"reconstruction", "perceptual", "mask", "coverage", "centering"}
    assert model.loss_weights()["perceptual"] == 2.0
    assert 0 < float(out.losses["perceptual"].detach()) < 4 * 4  # four taps, each in [0, 4]
    assert not any(k.startswith("perceptual.net") for k in model.state_dict())


def test_predict_gives_per_view_outputs_and_the_first_views_3d_keypoints(rig: Path) -> None:
    model = Triangulation(TriangulationConfig(**TINY)).eval()
    batch = _batch(rig, 3)
    pred = model.predict(batch)
    assert pred.kp2d.shape == (3, 3, 4, 2) and pred.vis.shape == (3, 3, 4)
    assert pred.kp3d.shape == (3, 4, 3) and pred.mask.shape == (3, 3, 1, 32, 32)
    assert pred.extras["box"].shape == (3, 3, 4)
    assert pred.extras["reconstruction"].shape == (3, 3, 3, 32, 32)
    # kp3d is the world triangulation in the first camera's frame, and the reprojected
    # keypoints are the world points projected into every view.
    E = batch.extrinsics
    world = pred.extras["kp3d_world"]
    cam0 = world @ E[:, 0, :, :3].transpose(-1, -2) + E[:, 0, None, :, 3]
    torch.testing.assert_close(pred.kp3d, cam0, atol=1e-4, rtol=1e-4)
    proj = project_points(world[:, None], projection_matrix(batch.intrinsics, E))
    torch.testing.assert_close(pred.extras["kp2d_reprojected"], proj, atol=1e-2, rtol=1e-4)
    # The boxes hold the keypoints: soft-argmax keypoints lie inside their patch.
    box = pred.extras["box"][:, :, None]
    assert bool(((pred.kp2d >= box[..., :2] - 1e-4) & (pred.kp2d <= box[..., 2:] + 1e-4)).all())
    # Views beyond ``views`` are not triangulated.
    two = Triangulation(TriangulationConfig(**TINY, views=2)).eval()
    two.load_state_dict(model.state_dict())
    p2 = two.predict(batch)
    assert bool((p2.vis[:, 2] == 0).all()) and bool((p2.vis[:, :2] > 0).all())


def test_data_without_views_calibration_or_backgrounds_is_refused(rig: Path) -> None:
    model = Triangulation(TriangulationConfig(**TINY))
    batch = _batch(rig)
    with pytest.raises(DataError, match="no background"):
        model.losses(batch.replace(background=None), 0)
    with pytest.raises(DataError, match="no calibration"):
        model.predict(batch.replace(extrinsics=None))
    with pytest.raises(DataError, match="V >= 2"):
        model.predict(batch.replace(image=batch.image[:, 0]))
    ds = VIEWS.open(rig, size=32)
    with pytest.raises(ConfigError, match="views = 4"):
        SPEC.configure(TriangulationConfig(**TINY, views=4), ds)


# -------------------------------------------------------------------------------- the CLI


def test_train_infer_evaluate_report_through_the_cli(rig: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--method", "triangulation", "--data", str(rig), "--out", str(run)]
    args += ["--size", "32", "--patch-size", "16", "--detector-size", "16"]
    args += ["--k", "4", "--width", "8", "--perceptual", "none"]
    assert main([*args, "--steps", "2", "--batch-size", "2", "--log-every", "1"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert "reprojection_px" in json.dumps(result)

    out = tmp_path / "pred.npz"
    assert main(["infer", "--run", str(run), "--input", str(rig), "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["kp3d"].shape == (6, 4, 3) and z["kp2d"].shape == (6, 3, 4, 2)
        assert z["mask"].shape == (6, 3, 1, 32, 32) and z["box"].shape == (6, 3, 4)

    assert main(["evaluate", "--run", str(run), "--data", str(rig), "--probe", "linear"]) == 0
    doc = json.loads((run / "eval.json").read_text())
    assert list(doc["results"]) == ["multiview_3d", "pose_probe", "foreground_mask"]
    r = doc["results"]["foreground_mask"]
    assert 0 <= r["mask_iou"]["value"] <= 1 and r["counts"]["masks"] == 3 * 3
    assert np.isfinite(doc["results"]["pose_probe"]["probe"]["linear"]["100%"]["p_mpjpe"])

    page = tmp_path / "report.html"
    argv = ["report", "--run", str(run), "--data", str(rig), "--out", str(page)]
    assert main([*argv, "--samples", "2"]) == 0
    text = page.read_text()
    assert text.count("title='reconstruction'") == 2 and text.count("title='predicted mask'") == 2


def test_training_reads_only_the_first_views_and_the_chosen_target_mask(rig: Path) -> None:
    torch.manual_seed(0)
    model = Triangulation(TriangulationConfig(**TINY, views=2, target_mask="ground_truth"))
    batch = _batch(rig)
    changed = batch.image.clone()
    changed[:, 2] = 1 - changed[:, 2]
    a, b = model.losses(batch, 0).losses, model.losses(batch.replace(image=changed), 0).losses
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = model.run_views(batch.image[:, :2], batch.intrinsics[:, :2], batch.extrinsics[:, :2])
    target = model.target_mask(batch.replace(mask=batch.mask[:, :2]), out)
    box = Box(out.box.centre.flatten(0, 1), out.box.half.flatten(0, 1))
    expected = crop(batch.mask[:, :2].flatten(0, 1), box, 16).unflatten(0, (2, 2))
    torch.testing.assert_close(target, expected)
    with pytest.raises(DataError, match="no masks"):
        model.losses(batch.replace(mask=None), 0)
