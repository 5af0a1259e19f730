import dataclasses
import math

import pytest
import torch

from kp3d.data.schema import Sample, collate
from kp3d.errors import ConfigError
from kp3d.geometry import normalised_to_pixel
from kp3d.methods import get_method
from kp3d.methods.autolink3d import AutoLink3DConfig, ShapeModel
from kp3d.methods.autolink3d.model import AutoLink3D

TINY = {"k": 4, "image_size": 32, "heatmap_size": 8, "mask_grid": 8, "width": 0.125, "n_basis": 2}


def tiny_batch(n: int = 4, size: int = 32) -> Sample:
    try:
        from kp3d.data.synth import generate

        return collate(generate("creature", n, size=size, seed=0))
    except ImportError:  # the synthetic generator is optional for this test
        return Sample(
            image=torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
        )


def build(name: str = "autolink3d", **changes) -> AutoLink3D:
    spec = get_method(name)
    torch.manual_seed(0)
    return spec.build(spec.config_cls(**{**TINY, **spec.overrides, **changes}))


# ----------------------------------------------------------------------------- shape model


def shape_model_and_output(n_basis=3, seed=0):
    torch.manual_seed(seed)
    shape = ShapeModel(k=6, n_basis=n_basis, feature_channels=8).double()
    with torch.no_grad():  # move away from the near-identity start: varied poses and shapes
        shape.regressor[-1].weight.normal_(std=0.02)
        shape.regressor[-1].bias[:6].add_(torch.randn(6))
        shape.mean_shape.add_(torch.randn_like(shape.mean_shape))
        shape.log_proj_scale.add_(torch.randn(2) * 0.2)
    feats = torch.randn(5, 8, 2, 2, dtype=torch.float64)
    kp = torch.rand(5, 6, 2, dtype=torch.float64) * 2 - 1
    return shape, shape(feats, kp)


def test_shape_model_shapes_and_normalisation():
    shape, out = shape_model_and_output()
    assert out.points.shape == out.canonical.shape == (5, 6, 3)
    assert out.R.shape == (5, 3, 3) and out.T.shape == (5, 3) and out.S.shape == (5,)
    assert out.alpha.shape == (5, 3) and out.projected.shape == (5, 6, 2)
    m, b = shape.shapes()
    torch.testing.assert_close(m.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(m.square().sum(-1).mean(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(b.flatten(1).norm(dim=1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(b.mean(1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (out.S > 0).all() and (out.T[:, 2] == 0).all()


def test_rotation_is_proper_and_p3d_is_the_rotated_canonical_shape():
    _, out = shape_model_and_output()
    eye = torch.eye(3, dtype=torch.float64).expand(5, 3, 3)
    torch.testing.assert_close(out.R @ out.R.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(out.R), torch.ones(5, dtype=torch.float64))
    # Undo translation and scale, rotate back: the canonical shape.
    back = (out.points - out.T[:, None]) / out.S[:, None, None] @ out.R
    torch.testing.assert_close(back, out.canonical)
    # Pairwise distances are those of the canonical shape times S (a similarity).
    d_points = torch.cdist(out.points, out.points)
    torch.testing.assert_close(
        d_points, out.S[:, None, None] * torch.cdist(out.canonical, out.canonical)
    )


def test_projection_drops_depth_and_scales_by_pi():
    shape, out = shape_model_and_output()
    s = shape.projection_scales().detach()
    torch.testing.assert_close(out.projected, out.points[..., :2] * s)
    Pi = torch.tensor([[s[0], 0.0], [0.0, s[1]], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.projected, out.points @ Pi)


def test_rigid_shape_model_has_no_deformation():
    shape, out = shape_model_and_output(n_basis=0)
    assert out.alpha.shape == (5, 0)
    torch.testing.assert_close(out.canonical, shape.shapes()[0].expand(5, 6, 3))


def test_shape_model_starts_near_the_identity_rotation():
    shape = ShapeModel(k=4, n_basis=2, feature_channels=8)
    kp = shape.shapes()[0][:, :2].detach().expand(3, 4, 2)  # the mean shape seen head-on
    out = shape(torch.randn(3, 8, 2, 2), kp)
    torch.testing.assert_close(out.R, torch.eye(3).expand(3, 3, 3), atol=0.05, rtol=0)
    torch.testing.assert_close(out.projected, kp, atol=0.05, rtol=0)


def test_scale_and_translation_are_the_least_squares_fit():
    shape, _ = shape_model_and_output()
    kp = (
        torch.rand(64, 6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
        - 1
    )
    out = shape(torch.randn(64, 8, 2, 2, dtype=torch.float64), kp)
    torch.testing.assert_close(out.projected.mean(1), kp.mean(1))  # centroids coincide
    # The residual is stationary in S (anti-aligned fits turned into rotations by pi).
    unit = out.projected - out.projected.mean(1, keepdim=True)
    slope = (unit * (out.projected - kp)).sum((-2, -1))
    torch.testing.assert_close(slope, torch.zeros_like(slope))
    assert (out.S > 0).all()
    torch.testing.assert_close(torch.linalg.det(out.R), torch.ones(64, dtype=torch.float64))


def test_similarity_of_the_keypoints_moves_p3d_alike():
    # Rotation and shape depend on the keypoints only up to scale and translation.
    shape, _out = shape_model_and_output()
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(32, 8, 2, 2, dtype=torch.float64, generator=g)
    kp = torch.rand(32, 6, 2, dtype=torch.float64, generator=g) * 2 - 1
    shift = torch.tensor([0.2, -0.1], dtype=torch.float64)
    a = shape(feats, kp)
    b = shape(feats, 3.0 * kp + shift)
    torch.testing.assert_close(b.R, a.R)
    torch.testing.assert_close(b.canonical, a.canonical)
    torch.testing.assert_close(b.S, 3.0 * a.S)
    torch.testing.assert_close(b.projected, 3.0 * a.projected + shift)


def test_canonicalisation_loss():
    shape, out = shape_model_and_output()
    g = torch.Generator().manual_seed(5)
    loss = shape.canonicalisation_loss(out.canonical, generator=g)
    assert loss.ndim == 0 and loss > 0
    # A plain-loop twin with the same rotations: rotate each point as the column vector R x,
    # read the coefficients back, and average the Euclidean point distances.
    from kp3d.geometry import random_rotation

    R = random_rotation(5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    total = 0.0
    with torch.no_grad():
        for b in range(5):
            X = out.canonical[b].tolist()
            rotated = [
                [sum(R[b, i, j].item() * x[j] for j in range(3)) for i in range(3)] for x in X
            ]
            alpha = shape.canonicaliser(torch.tensor(rotated, dtype=torch.float64).reshape(1, -1))
            rebuilt = shape.compose(alpha)[0].tolist()
            total += sum(math.dist(p, q) for p, q in zip(rebuilt, X)) / len(X)
    assert loss.item() == pytest.approx(total / 5, rel=1e-12)
    loss.backward()
    assert shape.canonicaliser[0].weight.grad.abs().sum() > 0
    # A canonicaliser that always answers "no deformation" is exact for undeformed shapes.
    with torch.no_grad():
        shape.canonicaliser[-1].weight.zero_()
        shape.canonicaliser[-1].bias.zero_()
    mean = shape.compose(torch.zeros(5, 3, dtype=torch.float64))
    assert shape.canonicalisation_loss(mean).item() == pytest.approx(0.0, abs=1e-12)
    rigid = ShapeModel(k=6, n_basis=0, feature_channels=8)
    assert rigid.canonicalisation_loss(torch.randn(2, 6, 3)) == 0


# ----------------------------------------------------------------------------- model


def test_the_skeleton_learns_at_its_own_rate_without_decay():
    model = build(skeleton_lr_scale=40.0)
    groups = {g.name: g for g in model.param_groups()}
    assert set(groups) == {"decay", "no_decay", "skeleton"}
    assert groups["skeleton"].params == (model.skeleton_logits,)
    assert groups["skeleton"].lr_scale == 40.0 and not groups["skeleton"].weight_decay
    assert groups["decay"].lr_scale == groups["no_decay"].lr_scale == 1.0
    # Every trainable parameter once, the others in the order of parameters().
    grouped = [p for g in model.param_groups() for p in g.params]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}


def test_weights_of_run_format_1_load_with_the_skeleton_rescaled():
    model = build(skeleton_lr_scale=40.0)
    state = model.state_dict()
    logits = state.pop("skeleton_logits")
    state["edge_logits"] = logits / 40.0  # format 1 stored the logits divided by the scale
    fresh = build(skeleton_lr_scale=40.0)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.skeleton_logits.detach(), logits)


@pytest.mark.parametrize("init", [0.018, 1.0])
def test_skeleton_is_symmetric_non_negative_and_starts_at_its_init(init):
    model = build(k=5, edge_weight_init=init, min_keypoint_edge=0.0)
    sk = model.artifacts()["skeleton"]
    assert sk.shape == (5, 5)
    torch.testing.assert_close(sk, sk.T)
    assert (sk.diagonal() == 0).all() and (sk >= 0).all()
    off = sk[~torch.eye(5, dtype=torch.bool)]
    assert off.min() > 0.6 * init and off.max() < 1.5 * init  # +-10% noise in logit space


def test_min_keypoint_edge_floors_each_keypoints_strongest_edge_only():
    model = build(k=5, min_keypoint_edge=0.0)
    with torch.no_grad():
        model.skeleton_logits.copy_(torch.linspace(-3.0, 1.0, 10))
    free = model.artifacts()["skeleton"]
    floored = dataclasses.replace(model.config, min_keypoint_edge=0.5)
    model.config = floored
    sk = model.artifacts()["skeleton"]
    assert (sk.max(1).values >= 0.5).all() and (free.max(1).values < 0.5).any()
    # Naive reference: raise each keypoint's strongest edge to the floor, leave the rest.
    expected = free.clone()
    for a in range(5):
        b = int(free[a].argmax())
        expected[a, b] = expected[b, a] = max(float(free[a, b]), 0.5)
    torch.testing.assert_close(sk, expected)
    # Floored edges pass no gradient to their logits while held at the floor; others do.
    w = model.edge_weights()
    (grad,) = torch.autograd.grad(w.sum(), model.skeleton_logits)
    held = w.detach() == 0.5
    assert held.any() and (grad[held] == 0).all() and (grad[~held] > 0).all()


@pytest.mark.parametrize("name", ["autolink3d", "autolink"])
def test_two_training_steps_change_the_parameters(name):
    model = build(name)
    assert (model.shape is not None) == (name == "autolink3d")
    model.train()
    batch = tiny_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = []
    for step in range(2):
        out = model.training_step(batch, step)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert all(torch.isfinite(v) for v in out.logs.values())
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert {"perceptual", "repulsion", "kp_spread", "edge_weight_max"} <= set(out.logs)
    assert ("projection" in out.logs) == ("canonical" in out.logs) == (name == "autolink3d")
    changed = {
        n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    }
    groups = {"detector", "decoder", "skeleton_logits", "image_gain"} | (
        {"shape"} if name == "autolink3d" else set()
    )
    assert groups == {n.split(".")[0] for n in changed}
    assert not any(n.startswith("perceptual") for n in before)  # frozen: not trainable


def test_every_loss_term_reaches_the_detector():
    model = build(perceptual="none", w_pixel=1.0)
    out = model.training_step(tiny_batch(), 0)
    out.loss.backward()
    assert model.detector.head.weight.grad.abs().sum() > 0
    assert model.skeleton_logits.grad.abs().sum() > 0
    assert model.shape.mean_shape.grad.abs().sum() > 0


def test_depth_along_the_skeleton_gives_the_3d_head_a_reconstruction_gradient():
    model = build(perceptual="none", w_pixel=1.0, decoder_input="edges+depth")
    assert model.decoder.stem.in_channels == 5
    model.config = dataclasses.replace(model.config, w_projection=0.0, w_canonical=0.0)
    model.training_step(tiny_batch(), 0).loss.backward()
    # Only the decoder's depth channel can reach the depth (z) of the mean shape.
    assert model.decoder.stem.weight.grad[:, 4].abs().sum() > 0
    assert model.shape.mean_shape.grad[:, 2].abs().sum() > 0
    plain = build(perceptual="none", w_pixel=1.0)
    plain.config = dataclasses.replace(plain.config, w_projection=0.0, w_canonical=0.0)
    plain.training_step(tiny_batch(), 0).loss.backward()
    assert plain.shape.mean_shape.grad is None or not plain.shape.mean_shape.grad.any()
    with pytest.raises(ConfigError, match="edges\\+depth"):
        AutoLink3DConfig(use_3d=False, decoder_input="edges+depth")


def test_training_step_is_deterministic_given_the_global_seed():
    model = build()
    batch = tiny_batch()
    torch.manual_seed(3)
    a = model.training_step(batch, 0).loss
    torch.manual_seed(3)
    b = model.training_step(batch, 0).loss
    assert torch.equal(a, b)


def test_bf16_autocast_and_channels_last():
    model = build().to(memory_format=torch.channels_last)
    batch = tiny_batch()
    batch = batch.replace(image=batch.image.contiguous(memory_format=torch.channels_last))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.training_step(batch, 0)
    assert torch.isfinite(out.loss)
    out.loss.float().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model.predict(batch)
    assert pred.kp2d.dtype == torch.float32 and pred.kp3d.dtype == torch.float32


def test_predict_outputs_in_pixels_of_the_input_image():
    model = build().eval()
    batch = tiny_batch(size=48)  # not the model's 32: resized inside, reported in 48 px
    out = model.predict(batch)
    B, K = 4, 4
    shapes = {
        "kp2d": (B, K, 2),
        "kp2d_normalised": (B, K, 2),
        "heatmaps": (B, K, 8, 8),
        "kp3d": (B, K, 3),
        "kp3d_image": (B, K, 3),
        "canonical": (B, K, 3),
        "R": (B, 3, 3),
        "T": (B, 3),
        "S": (B,),
        "alpha": (B, 2),
        "kp3d_shape": (B, K, 3),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    assert out.image_size == (48, 48)
    kp2d_normalised = out.extras["kp2d_normalised"]
    torch.testing.assert_close(out.kp2d, normalised_to_pixel(kp2d_normalised, (48, 48)))
    assert (out.kp2d >= 0).all() and (out.kp2d <= 48).all()
    # The 3D keypoints are the detections with the head's depth: Pi projects them onto kp2d,
    # in pixels and in normalised units, and their depth is the head's.
    s = model.shape.projection_scales()
    torch.testing.assert_close(out.kp3d_image[..., :2], out.kp2d)
    torch.testing.assert_close(out.kp3d[..., :2] * s, kp2d_normalised)
    torch.testing.assert_close(out.kp3d[..., 2], out.extras["kp3d_shape"][..., 2])
    scale = (s[0] * 48 + s[1] * 48) / 4
    torch.testing.assert_close(out.kp3d_image[..., 2], out.kp3d[..., 2] * scale)
    # The head's own points drift from the detections (their projection is the fit, not kp2d).
    drift = out.extras["kp3d_shape"][..., :2] * s - kp2d_normalised
    assert drift.abs().max() > 0
    torch.testing.assert_close(out.heatmaps.sum((-2, -1)), torch.ones(B, K))


def test_2d_model_predicts_no_3d():
    out = build("autolink").eval().predict(tiny_batch())
    assert {k for k, _ in out.items()} == {"kp2d", "kp2d_normalised", "heatmaps"}


def test_state_dict_roundtrip_excludes_the_frozen_perceptual_network():
    model = build()
    state = model.state_dict()
    assert not any(k.startswith("perceptual") for k in state)
    other = build()
    with torch.no_grad():
        for p in other.parameters():
            if p.requires_grad:
                p.add_(1.0)
    other.load_state_dict(state, strict=True)
    batch = tiny_batch()
    model.eval(), other.eval()
    torch.testing.assert_close(model.predict(batch).kp3d, other.predict(batch).kp3d)


def test_vgg16_perceptual_from_a_created_weights_file(tmp_path):
    from kp3d.nn.perceptual import VGG16Features

    state = {f"features.{k}": v for k, v in VGG16Features().layers.state_dict().items()}
    torch.save(state, tmp_path / "vgg16.pth")
    model = build(perceptual="vgg16", vgg16_weights=tmp_path / "vgg16.pth")
    assert torch.isfinite(model.training_step(tiny_batch(), 0).loss)


def test_config_is_kept():
    model = build()
    assert dataclasses.asdict(model.config)["k"] == 4 and isinstance(model.config, AutoLink3DConfig)


def test_canonical_shape_is_the_normalised_mean_shape():
    model = build()
    m = model.artifacts()["canonical_shape"]
    assert m.shape == (4, 3)
    torch.testing.assert_close(m.mean(0), torch.zeros(3), atol=1e-6, rtol=0)
    assert set(build("autolink").artifacts()) == {"skeleton"}


def test_shape_basis_is_the_normalised_basis_or_none() -> None:
    cfg = AutoLink3DConfig(
        k=5, image_size=32, width=0.125, perceptual="none", w_pixel=1.0, n_basis=3
    )
    model = AutoLink3D(cfg)
    basis = model.artifacts().get("shape_basis")
    assert basis is not None and basis.shape == (3, 5, 3)
    torch.testing.assert_close(basis.flatten(1).norm(dim=1), torch.ones(3))
    torch.testing.assert_close(basis.mean(1), torch.zeros(3, 3), atol=1e-6, rtol=0)
    assert "shape_basis" not in AutoLink3D(dataclasses.replace(cfg, n_basis=0)).artifacts()
    assert "shape_basis" not in AutoLink3D(dataclasses.replace(cfg, use_3d=False)).artifacts()
