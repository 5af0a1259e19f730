import pytest
import torch

from kp3d.geometry import pixel_centres
from kp3d.nn.edgemap import render_depth_edge_map, render_edge_map, skeleton_pairs


def naive_edge_map(kp, weights, size, thickness, pairs=None):
    """Every pair's map materialised, max over pairs: the reference the fast renderer must match."""
    H, W = size
    ys, xs = pixel_centres(H, dtype=kp.dtype), pixel_centres(W, dtype=kp.dtype)
    p = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2)
    i, j = skeleton_pairs(kp.shape[-2]) if pairs is None else pairs
    a = kp[..., i, None, None, :]  # (..., P, 1, 1, 2)
    c = kp[..., j, None, None, :]
    e = c - a
    t = (((p - a) * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    d2 = ((p - a - t[..., None] * e) ** 2).sum(-1)
    maps = weights[:, None, None] * torch.exp(-d2 / thickness)
    return maps.max(dim=-3).values


def random_inputs(b, k, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = (torch.rand(b, k, 2, generator=g, dtype=dtype) * 2 - 1).requires_grad_()
    w = (torch.rand(k * (k - 1) // 2, generator=g, dtype=dtype) + 0.1).requires_grad_()
    return kp, w


@pytest.mark.parametrize(
    "b,k,size,thickness",
    [
        (2, 4, (12, 16), 0.02),
        (3, 6, (20, 20), 2.5e-3),
        (1, 2, (8, 8), 0.5),
        (2, 16, (32, 32), 2.5e-3),
    ],
)
def test_matches_naive_in_value_and_gradient(b, k, size, thickness):
    kp, w = random_inputs(b, k, seed=k)
    fast = render_edge_map(kp, w, size, thickness=thickness)
    slow = naive_edge_map(kp, w, size, thickness)
    torch.testing.assert_close(fast, slow)
    g = torch.randn_like(fast)
    gk_fast, gw_fast = torch.autograd.grad((fast * g).sum(), (kp, w))
    gk_slow, gw_slow = torch.autograd.grad((slow * g).sum(), (kp, w))
    torch.testing.assert_close(gk_fast, gk_slow)
    torch.testing.assert_close(gw_fast, gw_slow)


def test_float32_matches_naive():
    kp, w = random_inputs(4, 8, dtype=torch.float32, seed=1)
    fast = render_edge_map(kp, w, (24, 24), thickness=2.5e-3)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, naive_edge_map(kp, w, (24, 24), 2.5e-3), atol=1e-5, rtol=1e-4)


def test_gradcheck_float64():
    kp, w = random_inputs(2, 4, seed=3)
    torch.autograd.gradcheck(lambda kp, w: render_edge_map(kp, w, (9, 7), thickness=0.05), (kp, w))


def test_gradcheck_with_custom_pairs_and_leading_dims():
    g = torch.Generator().manual_seed(4)
    kp = (torch.rand(2, 1, 5, 2, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    pairs = torch.tensor([[0, 1, 3], [2, 4, 4]])
    w = (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    out = render_edge_map(kp, w, (6, 8), thickness=0.1, pairs=pairs)
    assert out.shape == (2, 1, 6, 8)
    torch.testing.assert_close(out, naive_edge_map(kp, w, (6, 8), 0.1, pairs))
    torch.autograd.gradcheck(
        lambda kp, w: render_edge_map(kp, w, (6, 8), thickness=0.1, pairs=pairs), (kp, w)
    )


def test_a_single_segment_is_a_gaussian_ridge():
    # Horizontal segment through the centre row of pixel centres: value w on it, and the
    # profile across it is exp(-dy^2 / thickness).
    H = W = 16
    y0 = pixel_centres(H, dtype=torch.float64)[8].item()
    kp = torch.tensor([[[-0.5, y0], [0.5, y0]]], dtype=torch.float64)
    w = torch.tensor([0.7], dtype=torch.float64)
    out = render_edge_map(kp, w, (H, W), thickness=0.01)[0]
    ys = pixel_centres(H, dtype=torch.float64)
    torch.testing.assert_close(out[:, 8], 0.7 * torch.exp(-((ys - y0) ** 2) / 0.01))
    assert out[8].max() == pytest.approx(0.7)


def test_coincident_keypoints_draw_a_dot_with_finite_gradients():
    kp = torch.tensor(
        [[[0.1, 0.1], [0.1, 0.1], [0.8, -0.8]]], dtype=torch.float64, requires_grad=True
    )
    w = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    out = render_edge_map(kp, w, (10, 10), thickness=0.05)
    torch.testing.assert_close(out, naive_edge_map(kp, w, (10, 10), 0.05))
    out.sum().backward()
    assert torch.isfinite(kp.grad).all() and torch.isfinite(w.grad).all()


def test_zero_weights_give_an_empty_map():
    kp, _ = random_inputs(1, 3)
    out = render_edge_map(kp, torch.zeros(3, dtype=torch.float64), (5, 5), thickness=0.1)
    assert torch.equal(out, torch.zeros_like(out))


def test_runs_under_bf16_autocast_in_float32():
    kp, w = random_inputs(2, 5, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = render_edge_map(kp, w, (16, 16), thickness=2.5e-3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        out, naive_edge_map(kp.detach(), w.detach(), (16, 16), 2.5e-3), atol=1e-5, rtol=1e-4
    )
    out.sum().backward()
    assert kp.grad is not None and torch.isfinite(kp.grad).all()


def test_bfloat16_keypoints_are_rendered_in_float32():
    kp, w = random_inputs(1, 3, dtype=torch.float32)
    out = render_edge_map(kp.detach().bfloat16(), w.detach(), (8, 8), thickness=0.05)
    assert out.dtype == torch.float32


def test_skeleton_pairs():
    pairs = skeleton_pairs(4)
    assert pairs.tolist() == [[0, 0, 0, 1, 1, 2], [1, 2, 3, 2, 3, 3]]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kp": torch.zeros(2, 3)}, "kp must be"),
        ({"size": (0, 4)}, "size"),
        ({"thickness": 0.0}, "thickness"),
        ({"weights": torch.ones(4)}, "weights"),
        ({"pairs": torch.tensor([[0], [3]])}, "outside"),
        ({"pairs": torch.zeros(2, 0, dtype=torch.long)}, "pairs must be"),
    ],
)
def test_errors(kwargs, match):
    args = {"kp": torch.zeros(1, 3, 2), "weights": torch.ones(3), "size": (4, 4), "thickness": 0.1}
    args.update(kwargs)
    pairs = args.pop("pairs", None)
    with pytest.raises(ValueError, match=match):
        render_edge_map(
            args["kp"], args["weights"], args["size"], thickness=args["thickness"], pairs=pairs
        )


def naive_depth_edge_map(kp, depth, weights, size, thickness):
    """Every pair's map and depth materialised; per pixel, the strongest pair's S and S z."""
    H, W = size
    ys, xs = pixel_centres(H, dtype=kp.dtype), pixel_centres(W, dtype=kp.dtype)
    p = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
    i, j = skeleton_pairs(kp.shape[-2])
    a, c = kp[..., i, None, None, :], kp[..., j, None, None, :]
    e = c - a
    t = (((p - a) * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-12)).clamp(0, 1).detach()
    d2 = ((p - a - t[..., None] * e) ** 2).sum(-1)
    maps = weights[:, None, None] * torch.exp(-d2 / thickness)  # (B, P, H, W)
    z = (1 - t) * depth[..., i, None, None] + t * depth[..., j, None, None]
    best = maps.argmax(dim=-3, keepdim=True)
    s = maps.gather(-3, best)[..., 0, :, :]
    return s, s * z.gather(-3, best)[..., 0, :, :]


def test_depth_edge_map_matches_naive_in_value_and_gradient():
    kp, w = random_inputs(2, 5, seed=7)
    depth = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    depth.requires_grad_()
    fast = render_depth_edge_map(kp, depth, w, (14, 18), thickness=0.02)
    edges, along = naive_depth_edge_map(kp, depth, w, (14, 18), 0.02)
    torch.testing.assert_close(fast.edges, render_edge_map(kp, w, (14, 18), thickness=0.02))
    torch.testing.assert_close(fast.edges, edges)
    torch.testing.assert_close(fast.depth, along)
    g = torch.randn_like(along)
    got = torch.autograd.grad((fast.depth * g).sum(), (kp, depth, w))
    want = torch.autograd.grad((along * g).sum(), (kp, depth, w))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    assert got[1].abs().sum() > 0


def test_depth_edge_map_gradcheck_in_depth_and_errors():
    kp, w = random_inputs(2, 4, seed=9)
    depth = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda z: render_depth_edge_map(kp.detach(), z, w.detach(), (9, 7), thickness=0.05).depth,
        (depth,),
    )
    with pytest.raises(ValueError, match="depth must be"):
        render_depth_edge_map(kp, depth[:, :3], w, (9, 7), thickness=0.05)
    with pytest.raises(ValueError, match="render_depth_edge_map: thickness"):
        render_depth_edge_map(kp, depth, w, (9, 7), thickness=0.0)
