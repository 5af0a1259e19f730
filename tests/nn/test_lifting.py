import dataclasses
import inspect

import pytest
import torch

from kp3d.geometry.rotations import random_rotation
from kp3d.methods import get_method
from kp3d.nn.lifting import (
    LiftingNet,
    ShapeBasis,
    lifting_predictions,
    normalise_keypoints,
    orthographic_lift,
    orthographic_translation,
    project_onto_motions,
    rotation_from_params,
    weak_perspective_scale,
)


def test_normalise_keypoints_matches_the_protocol() -> None:
    g = torch.Generator().manual_seed(0)
    kp2d = 50 * torch.randn(3, 6, 2, generator=g, dtype=torch.float64) + 200
    vis = torch.rand(3, 6, generator=g) > 0.3
    vis[:, 0] = True
    norm = normalise_keypoints(kp2d, vis)
    for i in range(3):
        pts = kp2d[i][vis[i]]
        centre = pts.mean(0)
        scale = (pts - centre).square().sum(-1).mean().sqrt()
        torch.testing.assert_close(norm.centre[i], centre)
        torch.testing.assert_close(norm.scale[i], scale)
        torch.testing.assert_close(norm.kp2d[i][vis[i]], (pts - centre) / scale)
        assert norm.kp2d[i][~vis[i]].eq(0).all()
    # Similarity-invariant: the same normalised keypoints for a scaled, shifted input.
    again = normalise_keypoints(3.0 * kp2d + torch.tensor([5.0, -7.0], dtype=torch.float64), vis)
    torch.testing.assert_close(again.kp2d, norm.kp2d)
    torch.testing.assert_close(again.scale, 3.0 * norm.scale)


def test_normalise_keypoints_degenerate_samples_stay_finite() -> None:
    kp2d = torch.ones(2, 4, 2)
    vis = torch.tensor([[False] * 4, [True, False, False, False]])
    norm = normalise_keypoints(kp2d, vis)
    assert torch.isfinite(norm.kp2d).all() and torch.isfinite(norm.scale).all()
    assert normalise_keypoints(kp2d).kp2d.eq(0).all()


def test_orthographic_translation_is_the_least_squares_optimum() -> None:
    g = torch.Generator().manual_seed(1)
    proj, kp2d = torch.randn(2, 5, 2, generator=g), torch.randn(2, 5, 2, generator=g)
    vis = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]], dtype=torch.bool)
    t = orthographic_translation(proj, kp2d, vis)
    t.requires_grad_(True)
    cost = ((proj + t[:, None] - kp2d).square().sum(-1) * vis).sum()
    (grad,) = torch.autograd.grad(cost, t)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["axis_angle", "6d"])
def test_rotation_params_give_rotations(kind: str) -> None:
    params = torch.randn(10, 3 if kind == "axis_angle" else 6, dtype=torch.float64)
    R = rotation_from_params(params, kind)  # type: ignore[arg-type]
    eye = torch.eye(3, dtype=torch.float64).expand(10, 3, 3)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="6d"):
        rotation_from_params(params, "quaternion")  # type: ignore[arg-type]


def test_shape_basis_is_centred_and_affine_in_alpha() -> None:
    torch.manual_seed(0)
    sb = ShapeBasis(3, 7).double()
    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    X = sb(a)
    assert X.shape == (2, 7, 3)
    torch.testing.assert_close(X.mean(-2), torch.zeros(2, 3, dtype=torch.float64))
    torch.testing.assert_close(sb(a + b) - sb(b), sb(a) - sb(torch.zeros_like(a)))


@pytest.mark.parametrize("rotation", ["axis_angle", "6d"])
def test_lifting_net_outputs(rotation: str) -> None:
    K = 5
    net = LiftingNet(
        K, n_basis=4, width=32, n_layers=1, coefficients="relu", context_dim=3, rotation=rotation
    )  # type: ignore[arg-type]
    kp2d, vis, ctx = torch.randn(6, K, 2), torch.ones(6, K), torch.randn(6, 3)
    out = net(kp2d, vis, ctx)
    assert out.R.shape == (6, 3, 3) and out.alpha.shape == (6, 4) and out.shape.shape == (6, K, 3)
    assert out.alpha.ge(0).all()
    torch.testing.assert_close(out.shape_cam, out.shape @ out.R.transpose(-1, -2))
    # The rotation head starts at the identity, so early reprojections are not arbitrary flips.
    torch.testing.assert_close(out.R, torch.eye(3).expand(6, 3, 3))
    with pytest.raises(ValueError, match="context"):
        net(kp2d, vis)
    with pytest.raises(ValueError, match="linear"):
        LiftingNet(K, coefficients="softplus")  # type: ignore[arg-type]


def test_lifting_net_ignores_invisible_coordinates() -> None:
    net = LiftingNet(5, n_basis=3, width=16, n_layers=1, norm="none")
    kp2d = torch.randn(2, 5, 2, requires_grad=True)
    vis = torch.tensor([[1, 1, 1, 0, 1], [1, 0, 1, 1, 1]], dtype=torch.bool)
    norm = normalise_keypoints(kp2d, vis)
    out = net(norm.kp2d, vis.float())
    weights = torch.randn(out.shape_cam.shape, generator=torch.Generator().manual_seed(0))
    (out.shape_cam * weights).sum().backward()
    assert kp2d.grad[~vis].eq(0).all() and kp2d.grad[vis].ne(0).any()


def test_predictions_keep_the_input_xy_and_follow_its_units() -> None:
    g = torch.Generator().manual_seed(2)
    K = 6
    X = torch.randn(3, K, 3, generator=g, dtype=torch.float64)
    X = X - X.mean(-2, keepdim=True)
    R = random_rotation(3, generator=g, dtype=torch.float64)
    cam = X @ R.transpose(-1, -2)
    from kp3d.nn.lifting import LiftingOutput

    out = LiftingOutput(R, torch.zeros(3, 1, dtype=torch.float64), X, X, cam)
    vis = torch.ones(3, K, dtype=torch.bool)
    vis[0, 2] = False
    kp2d = 40 * cam[..., :2] + 100  # pixels: an exact orthographic view, scaled and shifted
    norm = normalise_keypoints(kp2d, vis)
    # The network predicts in normalised units: the true shape divided by the input's scale.
    s = norm.scale[:, None, None] / 40
    out = LiftingOutput(R, out.alpha, X, X / s, cam / s)
    pred = lifting_predictions(out, norm, vis)
    assert pred["kp3d"].shape == (3, K, 3)
    # x, y: the input where visible; the reprojection where not (here exact as well).
    torch.testing.assert_close(pred["kp3d"][..., :2], kp2d)
    # z: the true depth in the input's units, zero mean over the visible points.
    z = 40 * cam[..., 2]
    z = z - (z * vis).sum(-1, keepdim=True) / vis.sum(-1, keepdim=True)
    torch.testing.assert_close(pred["kp3d"][..., 2], z)
    torch.testing.assert_close(pred["shape"], 40 * X)
    lifted = orthographic_lift(out, norm.kp2d, vis)
    torch.testing.assert_close(lifted[..., 2] * norm.scale[:, None], z)


def test_weak_perspective_scale_is_the_least_squares_optimum() -> None:
    g = torch.Generator().manual_seed(3)
    proj = torch.randn(4, 7, 2, generator=g, dtype=torch.float64)
    vis = torch.rand(4, 7, generator=g) > 0.3
    vis[:, :3] = True
    kp2d = 2.5 * proj + torch.tensor([1.0, -2.0], dtype=torch.float64)
    kp2d = kp2d + 0.01 * torch.randn(kp2d.shape, generator=g, dtype=torch.float64)
    s = weak_perspective_scale(proj, kp2d, vis)
    for i in range(4):
        p, y = proj[i][vis[i]], kp2d[i][vis[i]]
        A = torch.cat([p.reshape(-1, 1), torch.eye(2, dtype=torch.float64).repeat(len(p), 1)], 1)
        sol = torch.linalg.lstsq(A, y.reshape(-1, 1)).solution
        torch.testing.assert_close(s[i], sol[0, 0])
    # A mirrored view would need s < 0, which would mirror the depth too: clamped instead.
    assert weak_perspective_scale(proj, -kp2d, vis).le(1e-6).all()


def test_shape_basis_is_unit_rms_and_the_weak_perspective_shape_scale_free() -> None:
    sb = ShapeBasis(4, 9)
    rms = sb.basis.square().sum(-1).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(4))
    net = LiftingNet(9, n_basis=4, width=16, n_layers=1, norm="none", camera="weak_perspective")
    alpha = torch.randn(3, 4)
    shape = net.shape_from_alpha(alpha)
    torch.testing.assert_close(shape.square().sum(-1).mean(-1), torch.ones(3))
    torch.testing.assert_close(net.base_shape(), net.shape_from_alpha(torch.zeros(1, 4))[0])
    # The scale is solved per sample: the camera-frame shape reprojects at the input's size.
    kp2d = normalise_keypoints(torch.randn(3, 9, 2)).kp2d
    out = net(kp2d, torch.ones(3, 9))
    torch.testing.assert_close(
        out.shape,
        out.basis_shape
        * weak_perspective_scale((out.basis_shape @ out.R.transpose(-1, -2))[..., :2], kp2d)[
            :, None, None
        ],
    )
    with pytest.raises(ValueError, match="orthographic"):
        LiftingNet(9, camera="perspective")  # type: ignore[arg-type]


def test_motion_free_basis_is_orthogonal_to_the_bias_motions() -> None:
    torch.manual_seed(0)
    sb = ShapeBasis(5, 9, motion_free=True).double()
    bias = sb.bias - sb.bias.mean(0)
    eye = torch.eye(3, dtype=torch.float64)
    motions = [bias, *(torch.linalg.cross(eye[j].expand_as(bias), bias) for j in range(3))]
    zeros, ones = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    for m in motions:
        torch.testing.assert_close((sb.basis * m).sum((-2, -1)), zeros)
    torch.testing.assert_close(sb.basis.square().sum(-1).mean(-1), ones)
    # A shape already orthogonal to the motions is left as it is.
    rest = sb.basis - project_onto_motions(sb.basis, bias)
    torch.testing.assert_close(rest, sb.basis)


@pytest.mark.parametrize("name", ["c3dpo", "lifter", "lifter-fit"])
def test_network_options_are_the_configs_lifting_net_settings(name: str) -> None:
    """Every setting of a method's config that LiftingNet takes, with its value; nothing else."""
    config = get_method(name).config_cls(n_basis=4, width=8, n_layers=2, norm="layer")
    net_options = set(inspect.signature(LiftingNet).parameters) - {"n_keypoints"}
    expected = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in net_options
    }
    assert config.network_options() == expected
    assert {"n_basis", "width", "n_layers", "norm", "rotation", "camera"} <= set(expected)
    LiftingNet(5, **config.network_options())  # accepted as they are
