"""kp3d.geometry.keypoints against plain-loop twins, with shapes, errors and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from kp3d.geometry import project_pinhole
from kp3d.geometry.keypoints import (
    LS_SCALE_EPS,
    check_shape,
    least_squares_scale,
    masked_mean,
    normalise_keypoints,
    orthographic_translation,
    rms_radius,
    weak_perspective_scale,
)

# ------------------------------------------------------------------------------ naive twins


def naive_mean(points: list[list[float]], weights: list[float]) -> list[float]:
    total = sum(weights)
    if total == 0:
        return [0.0] * len(points[0])
    return [sum(w * p[d] for p, w in zip(points, weights)) / total for d in range(len(points[0]))]


def naive_normalise(points, weights):
    c = naive_mean(points, weights)
    sq = [sum((p[d] - c[d]) ** 2 for d in range(len(c))) for p in points]
    total = sum(weights)
    s = math.sqrt(sum(w * q for w, q in zip(weights, sq)) / total) if total else 0.0
    out = [[w * (p[d] - c[d]) / s for d in range(len(c))] for p, w in zip(points, weights)]
    return out, c, s


def naive_ls_scale(x, y, weights):
    num = sum(w * sum(a * b for a, b in zip(p, q)) for p, q, w in zip(x, y, weights))
    den = sum(w * sum(a * a for a in p) for p, w in zip(x, weights))
    return num / max(den, LS_SCALE_EPS)


def naive_pinhole(X, K):
    out = []
    for x, y, z in X:
        out.append([K[0][0] * x / z + K[0][1] * y / z + K[0][2], K[1][1] * y / z + K[1][2]])
    return out


def _data(seed: int = 0, B: int = 4, K: int = 7, D: int = 2):
    g = torch.Generator().manual_seed(seed)
    kp = torch.randn(B, K, D, generator=g, dtype=torch.float64) * 20 + 5
    vis = torch.rand(B, K, generator=g) > 0.3
    vis[:, :2] = True
    return kp, vis


# ------------------------------------------------------------------------------ check_shape


def test_check_shape_binds_and_reports() -> None:
    dims = check_shape(torch.zeros(3, 5, 2), "B K 2", name="kp2d")
    assert dims == {"B": 3, "K": 5}
    check_shape(torch.zeros(3, 5), "B K", name="vis", dims=dims)
    check_shape(torch.zeros(7, 3, 5, 2), "... K 2", name="kp2d")
    check_shape(torch.zeros(5, 2), "... K 2", name="kp2d")
    with pytest.raises(
        ValueError, match=r"vis: expected shape \(B, K\) with B=3, K=5, got \(3, 4\)"
    ):
        check_shape(torch.zeros(3, 4), "B K", name="vis", dims=dims)
    with pytest.raises(ValueError, match="kp2d: expected shape"):
        check_shape(torch.zeros(3, 5, 3), "B K 2", name="kp2d")
    with pytest.raises(ValueError, match="expected shape"):
        check_shape(torch.zeros(3, 5, 2), "K 2", name="kp2d")
    with pytest.raises(ValueError, match="expected shape"):
        check_shape(torch.zeros(2), "... K 2", name="kp2d")
    with pytest.raises(ValueError, match="expected shape"):  # one name, two sizes
        check_shape(torch.zeros(3, 3, 4), "B K K", name="m")


# ------------------------------------------------------------------------------ masked mean


def test_masked_mean_matches_loop_and_empty_mask_is_zero() -> None:
    kp, vis = _data()
    vis[1] = False
    got = masked_mean(kp, vis.double()[..., None], dim=-2)
    assert got.shape == (4, 2)
    for b in range(4):
        want = naive_mean(kp[b].tolist(), vis[b].double().tolist())
        torch.testing.assert_close(got[b], torch.tensor(want, dtype=torch.float64))
    assert torch.equal(got[1], torch.zeros(2, dtype=torch.float64))
    kd = masked_mean(kp, vis.double()[..., None], dim=-2, keepdim=True)
    assert kd.shape == (4, 1, 2)


# ------------------------------------------------------------------------------ normalisation


@pytest.mark.parametrize("D", [2, 3])
def test_normalise_matches_loop(D: int) -> None:
    kp, vis = _data(D=D)
    n = normalise_keypoints(kp, vis)
    assert n.kp2d.shape == kp.shape and n.centre.shape == (4, D) and n.scale.shape == (4,)
    for b in range(4):
        out, c, s = naive_normalise(kp[b].tolist(), vis[b].double().tolist())
        torch.testing.assert_close(n.kp2d[b], torch.tensor(out, dtype=torch.float64))
        torch.testing.assert_close(n.centre[b], torch.tensor(c, dtype=torch.float64))
        torch.testing.assert_close(n.scale[b], torch.tensor(s, dtype=torch.float64))


def test_normalise_invariances_and_edge_cases() -> None:
    kp, vis = _data()
    a = normalise_keypoints(kp, vis)
    b = normalise_keypoints(3.5 * kp + torch.tensor([10.0, -4.0], dtype=kp.dtype), vis)
    torch.testing.assert_close(a.kp2d, b.kp2d)
    # Unit RMS radius over the visible points, zeros at the others.
    w = vis.double()
    rms = ((a.kp2d.square().sum(-1) * w).sum(-1) / w.sum(-1)).sqrt()
    torch.testing.assert_close(rms, torch.ones(4, dtype=torch.float64))
    assert torch.equal(a.kp2d[~vis], torch.zeros_like(a.kp2d[~vis]))
    # None = all visible.
    torch.testing.assert_close(
        normalise_keypoints(kp).kp2d, normalise_keypoints(kp, vis | True).kp2d
    )
    # Coincident points: the scale is clamped, nothing is NaN; eps=0 gives the exact 0.
    same = torch.ones(1, 5, 2)
    n = normalise_keypoints(same)
    assert n.scale.item() == pytest.approx(1e-8) and torch.isfinite(n.kp2d).all()
    assert normalise_keypoints(same, eps=0.0).scale.item() == 0.0
    # Nothing visible: zero centre, finite output.
    n = normalise_keypoints(kp[:1], torch.zeros(1, 7, dtype=torch.bool))
    assert torch.equal(n.centre, torch.zeros(1, 2, dtype=torch.float64))
    assert torch.isfinite(n.kp2d).all()
    with pytest.raises(ValueError, match="normalise_keypoints: vis"):
        normalise_keypoints(kp, vis[:, :3])
    with pytest.raises(ValueError, match="normalise_keypoints: kp2d"):
        normalise_keypoints(kp[0, 0])


def test_normalise_gradcheck() -> None:
    kp, vis = _data(B=2, K=5)
    kp.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: tuple(normalise_keypoints(x, vis)), (kp,))


# ------------------------------------------------------------------------------ LS scale


def test_least_squares_scale_matches_loop_and_recovers_scale() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    y = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    w = (torch.rand(3, 6, generator=g) > 0.3).double()
    got = least_squares_scale(x, y, w)
    assert got.shape == (3,)
    for b in range(3):
        want = naive_ls_scale(x[b].tolist(), y[b].tolist(), w[b].tolist())
        assert got[b].item() == pytest.approx(want, rel=1e-12)
    torch.testing.assert_close(least_squares_scale(x, -2.5 * x), torch.full((3,), -2.5).double())
    # It is the minimiser: the objective's derivative in s vanishes there.
    s = got.clone().requires_grad_(True)
    obj = (w[..., None] * (s[:, None, None] * x - y).square()).sum()
    (grad,) = torch.autograd.grad(obj, s)
    torch.testing.assert_close(grad, torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    # Collapsed x: s = 0, never NaN.
    assert least_squares_scale(torch.zeros(1, 6, 2), y[:1].float()).item() == 0.0
    with pytest.raises(ValueError, match="least_squares_scale: y"):
        least_squares_scale(x, y[..., :1])
    with pytest.raises(ValueError, match="least_squares_scale: weights"):
        least_squares_scale(x, y, w[:, :2])


def test_least_squares_scale_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, 5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: least_squares_scale(a, b, w), (x, y))


# ------------------------------------------------------------------------------ camera fits


def test_orthographic_translation_is_the_visible_mean_offset() -> None:
    kp, vis = _data(seed=4)
    proj, _ = _data(seed=5)
    t = orthographic_translation(proj, kp, vis)
    for b in range(4):
        diff = (kp[b] - proj[b]).tolist()
        want = naive_mean(diff, vis[b].double().tolist())
        torch.testing.assert_close(t[b], torch.tensor(want, dtype=torch.float64))
    with pytest.raises(ValueError, match="orthographic_translation: kp2d"):
        orthographic_translation(proj, kp[:, :3])


def test_weak_perspective_scale_recovers_a_similarity_and_stays_positive() -> None:
    kp, vis = _data(seed=6)
    obs = 1.7 * kp + torch.tensor([3.0, -1.0], dtype=kp.dtype)
    obs = torch.where(vis[..., None], obs, torch.full_like(obs, 1e3))  # invisible: ignored
    torch.testing.assert_close(weak_perspective_scale(kp, obs, vis), torch.full((4,), 1.7).double())
    mirrored = weak_perspective_scale(kp, -kp, vis)
    assert torch.equal(mirrored, torch.full_like(mirrored, 1e-8))


def test_weak_perspective_scale_gradcheck() -> None:
    kp, vis = _data(B=2, K=5)
    obs = (1.3 * kp + 0.1 * torch.randn_like(kp)).requires_grad_(True)
    kp.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: weak_perspective_scale(a, b, vis), (kp, obs))


# ------------------------------------------------------------------------------ pinhole


def test_project_pinhole_matches_loop_with_skew() -> None:
    g = torch.Generator().manual_seed(7)
    X = torch.randn(6, 3, generator=g, dtype=torch.float64)
    X[:, 2] = X[:, 2].abs() + 2
    K = torch.tensor([[50.0, 0.3, 31.0], [0.0, 48.0, 29.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    want = torch.tensor(naive_pinhole(X.tolist(), K.tolist()), dtype=torch.float64)
    torch.testing.assert_close(project_pinhole(X, K), want)
    # fx X / Z + cx to the last bit for zero skew (the synthetic renderer relies on it).
    K0 = K.clone()
    K0[0, 1] = 0
    uv = project_pinhole(X.float(), K0.float())
    direct = X.float()[:, :2] / X.float()[:, 2:] * K0.float().diagonal()[:2] + K0.float()[:2, 2]
    assert torch.equal(uv, direct)


# ------------------------------------------------------------------------------ RMS radius


def test_rms_radius_matches_loop() -> None:
    kp, vis = _data(D=3)
    got = rms_radius(kp, vis)
    assert got.shape == (4,)
    for b in range(4):
        pts = [p for p, v in zip(kp[b].tolist(), vis[b].tolist()) if v]
        want = math.sqrt(sum(sum(c * c for c in p) for p in pts) / len(pts))
        assert got[b].item() == pytest.approx(want, rel=1e-12)
    all_rms = rms_radius(kp)
    torch.testing.assert_close(all_rms, rms_radius(kp, torch.ones_like(vis)))
    with pytest.raises(ValueError, match="rms_radius: vis"):
        rms_radius(kp, vis[:, 1:])
