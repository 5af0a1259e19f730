import pytest
import torch
import torch.nn.functional as F

from kp3d.geometry import (
    SoftArgmax,
    expected_variance,
    pixel_centres,
    pixel_to_normalised,
    render_gaussian_heatmaps,
    soft_argmax,
    spatial_softmax,
)


def _naive_soft_argmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Loop over every pixel, with centres from the documented pixel convention."""
    H, W = logits.shape[-2:]
    prob = torch.softmax(logits.reshape(*logits.shape[:-2], -1) / temperature, -1).reshape(
        logits.shape
    )
    kp = torch.zeros(*logits.shape[:-2], 2, dtype=logits.dtype)
    for j in range(H):
        for i in range(W):
            centre = pixel_to_normalised(
                torch.tensor([i + 0.5, j + 0.5], dtype=logits.dtype), (H, W)
            )
            kp += prob[..., j, i, None] * centre
    return kp


def test_spatial_softmax_shape_normalisation_and_temperature(gen):
    logits = torch.randn(2, 3, 4, 5, 6, generator=gen(), dtype=torch.float64)
    prob = spatial_softmax(logits)
    assert prob.shape == logits.shape
    torch.testing.assert_close(prob.sum((-2, -1)), torch.ones(2, 3, 4, dtype=torch.float64))
    torch.testing.assert_close(
        spatial_softmax(logits, temperature=0.5), spatial_softmax(2 * logits)
    )


def test_soft_argmax_matches_naive_reference_with_leading_dims(gen):
    logits = torch.randn(2, 3, 4, 5, 7, generator=gen(1), dtype=torch.float64)
    out = soft_argmax(logits, temperature=0.7)
    assert isinstance(out, SoftArgmax)
    assert out.kp.shape == (2, 3, 4, 2) and out.prob.shape == logits.shape
    torch.testing.assert_close(out.kp, _naive_soft_argmax(logits, 0.7))


@pytest.mark.parametrize(("H", "W"), [(16, 16), (5, 8)])
def test_soft_argmax_of_peaked_map_is_the_pixel_centre(H, W, gen):
    K = 6
    g = gen(2)
    rows = torch.randint(0, H, (K,), generator=g)
    cols = torch.randint(0, W, (K,), generator=g)
    logits = torch.zeros(K, H, W, dtype=torch.float64)
    logits[torch.arange(K), rows, cols] = 1e3
    kp = soft_argmax(logits).kp
    expected = torch.stack(((2 * cols + 1) / W - 1, (2 * rows + 1) / H - 1), -1).double()
    torch.testing.assert_close(kp, expected)
    # Bilinear sampling with align_corners=False at that coordinate reads exactly that pixel.
    sampled = F.grid_sample(
        logits[:, None], kp[:, None, None], mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(sampled.flatten(), torch.full((K,), 1e3, dtype=torch.float64))


def test_low_temperature_tends_to_hard_argmax(gen):
    logits = torch.randn(3, 9, 11, generator=gen(3))
    flat = logits.flatten(-2).argmax(-1)
    hard = torch.stack(((2 * (flat % 11) + 1) / 11 - 1, (2 * (flat // 11) + 1) / 9 - 1), -1)
    torch.testing.assert_close(soft_argmax(logits, temperature=1e-4).kp, hard)


def test_soft_argmax_recovers_rendered_gaussian_centre(gen):
    # A sampled Gaussian of sigma >= 1 pixel has its discrete mean at the continuous centre up to
    # ~exp(-2 pi^2 sigma_px^2) when it lies well inside the map.
    g = gen(4)
    kp = (torch.rand(2, 5, 2, generator=g, dtype=torch.float64) - 0.5) * 0.6
    heat = render_gaussian_heatmaps(kp, (64, 48), sigma=0.08)
    torch.testing.assert_close(soft_argmax(heat.log()).kp, kp, atol=1e-7, rtol=0)


def test_half_precision_logits_are_upcast(gen):
    logits = torch.randn(2, 16, 32, 32, generator=gen(8))
    out = soft_argmax(logits.bfloat16())
    assert out.kp.dtype == torch.float32 and out.prob.dtype == torch.float32
    torch.testing.assert_close(out.kp, soft_argmax(logits.bfloat16().float()).kp)


def test_soft_argmax_errors():
    with pytest.raises(ValueError, match="K, H, W"):
        soft_argmax(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="temperature"):
        soft_argmax(torch.zeros(1, 4, 4), temperature=0.0)
    with pytest.raises(ValueError, match="K, H, W"):
        spatial_softmax(torch.zeros(4))


def test_soft_argmax_gradcheck(gen):
    logits = torch.randn(2, 3, 4, 5, generator=gen(5), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: tuple(soft_argmax(x, temperature=0.8)), (logits,))


def test_pixel_centres_follow_the_convention():
    for n in (1, 4, 7):
        uv = torch.arange(n, dtype=torch.float64) + 0.5
        expected = pixel_to_normalised(torch.stack((uv, uv), -1), (n, n))[:, 0]
        torch.testing.assert_close(pixel_centres(n, dtype=torch.float64), expected)


def test_expected_variance(gen):
    g = gen(6)
    H, W = 6, 9
    # One-hot: zero spread.
    onehot = torch.zeros(2, H, W, dtype=torch.float64)
    onehot[0, 2, 3] = onehot[1, 5, 0] = 1
    torch.testing.assert_close(expected_variance(onehot), torch.zeros(2, 2, dtype=torch.float64))
    # Uniform: variance of the discrete uniform over the pixel centres, (1 - 1/n^2) / 3.
    uniform = torch.full((1, H, W), 1 / (H * W), dtype=torch.float64)
    closed = torch.tensor([[(1 - 1 / W**2) / 3, (1 - 1 / H**2) / 3]], dtype=torch.float64)
    torch.testing.assert_close(expected_variance(uniform), closed)
    # Random maps against E[x^2] - E[x]^2 on a full grid, with the mean passed in or not.
    out = soft_argmax(torch.randn(3, 4, H, W, generator=g, dtype=torch.float64))
    ys, xs = torch.meshgrid(
        pixel_centres(H, dtype=torch.float64), pixel_centres(W, dtype=torch.float64), indexing="ij"
    )
    naive = torch.stack(
        [(out.prob * c**2).sum((-2, -1)) - (out.prob * c).sum((-2, -1)) ** 2 for c in (xs, ys)], -1
    )
    torch.testing.assert_close(expected_variance(out.prob), naive)
    torch.testing.assert_close(expected_variance(out.prob, mean=out.kp), naive)
    with pytest.raises(ValueError, match="mean"):
        expected_variance(out.prob, mean=out.kp[..., :1])


def test_render_gaussian_heatmaps_matches_naive_loop(gen):
    g = gen(7)
    H, W, sigma = 5, 7, 0.3
    kp = torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2
    heat = render_gaussian_heatmaps(kp, (H, W), sigma=sigma)
    assert heat.shape == (2, 3, H, W)
    naive = torch.zeros_like(heat)
    for j in range(H):
        for i in range(W):
            p = pixel_to_normalised(torch.tensor([i + 0.5, j + 0.5], dtype=torch.float64), (H, W))
            naive[..., j, i] = torch.exp(-((p - kp) ** 2).sum(-1) / (2 * sigma**2))
    torch.testing.assert_close(heat, naive)


def test_render_gaussian_heatmaps_peak_and_normalisation():
    H, W = 8, 10
    kp = torch.tensor(
        [[(2 * 3 + 1) / W - 1, (2 * 5 + 1) / H - 1], [40.0, -40.0]], dtype=torch.float64
    )
    heat = render_gaussian_heatmaps(kp, (H, W), sigma=0.1)
    assert heat[0, 5, 3].item() == pytest.approx(1.0) and heat[0].max().item() == pytest.approx(1.0)
    prob = render_gaussian_heatmaps(kp, (H, W), sigma=0.1, normalise=True)
    # Also for the keypoint far off the map, where every unnormalised value underflows to 0.
    assert heat[1].max().item() == 0
    torch.testing.assert_close(prob.sum((-2, -1)), torch.ones(2, dtype=torch.float64))


def test_render_gaussian_heatmaps_errors():
    with pytest.raises(ValueError, match="kp"):
        render_gaussian_heatmaps(torch.zeros(3, 3), (4, 4), sigma=0.1)
    with pytest.raises(ValueError, match="size"):
        render_gaussian_heatmaps(torch.zeros(3, 2), (4,), sigma=0.1)
    with pytest.raises(ValueError, match="sigma"):
        render_gaussian_heatmaps(torch.zeros(3, 2), (4, 4), sigma=0.0)
