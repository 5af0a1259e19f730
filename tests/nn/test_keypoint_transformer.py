"""The DETR-style keypoint detector of lifter-e2e."""

import math

import pytest
import torch

from kp3d.nn.keypoint_transformer import (
    REFINE_RADIUS,
    Backbone,
    Features,
    KeypointTransformer,
    sine_position_encoding,
)
from kp3d.nn.perceptual import load_efficientnet_lite0


@pytest.fixture(scope="module", params=["regression", "heatmap", "refined"])
def detector(request) -> KeypointTransformer:
    torch.manual_seed(0)
    net = KeypointTransformer(
        7, 3, context_dim=5, d_model=16, n_heads=2, ffn=32, location=request.param
    )
    if request.param != "regression":  # the offset head starts at zero: give it something to move
        with torch.no_grad():
            net.location_head[-1].weight.normal_()
    return net.eval()


def test_shapes_and_ranges(detector: KeypointTransformer) -> None:
    det = detector(torch.rand(2, 3, 32, 32))
    assert det.location.shape == (2, 7, 2) and det.logit.shape == (2, 7)
    assert det.category_logits.shape == (2, 3) and det.context.shape == (2, 5)
    assert bool(((det.location > 0) & (det.location < 1)).all())


def test_permuting_the_keypoint_queries_permutes_the_outputs(detector) -> None:
    with torch.no_grad():
        features = detector.features(torch.rand(2, 3, 32, 32))
        perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
        base = detector.decode(features, detector.queries)
        moved = detector.decode(features, detector.queries[torch.cat([perm, torch.tensor([7])])])
    torch.testing.assert_close(moved.location, base.location[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moved.logit, base.logit[:, perm], atol=1e-5, rtol=1e-5)
    # The context query attends to the keypoint queries as a set: the same whatever their order.
    torch.testing.assert_close(moved.context, base.context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moved.category_logits, base.category_logits, atol=1e-5, rtol=1e-5)
    # A different query order is not the identity: the outputs do move with the queries.
    assert not torch.allclose(moved.location, base.location, atol=1e-3)


def test_heatmap_location_is_the_query_attention_centre_plus_half_a_cell_at_most() -> None:
    torch.manual_seed(1)
    net = KeypointTransformer(3, 2, context_dim=0, d_model=8, n_heads=2, ffn=8, location="heatmap")
    with torch.no_grad():
        net.location_head[-1].weight.normal_()
        net.location_head[-1].bias.normal_()
    B, h, w, d = 2, 3, 4, 8
    memory, kp = torch.randn(B, h, w, d), torch.randn(B, 3, d)
    with torch.no_grad():
        got = net.locate(kp, Features(memory, None))
        ref = torch.empty(B, 3, 2)
        for b in range(B):
            for k in range(3):
                q = net.heat_query(kp[b, k])
                scores = torch.tensor(
                    [
                        [float(q @ net.heat_key(memory[b, i, j])) / d**0.5 for j in range(w)]
                        for i in range(h)
                    ]
                )
                p = scores.flatten().softmax(0).view(h, w)
                cx = sum(float(p[i, j]) * (j + 0.5) / w for i in range(h) for j in range(w))
                cy = sum(float(p[i, j]) * (i + 0.5) / h for i in range(h) for j in range(w))
                off = net.location_head(kp[b, k]).tanh()
                # half a cell in unit coordinates is 1 / (2 w) across and 1 / (2 h) down
                ref[b, k] = torch.tensor(
                    [cx + float(off[0]) / (2 * w), cy + float(off[1]) / (2 * h)]
                )
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert bool(((got >= 0) & (got <= 1)).all())


def test_refinement_is_the_query_attention_centre_on_a_fine_window() -> None:
    torch.manual_seed(2)
    net = KeypointTransformer(3, 2, context_dim=0, d_model=8, n_heads=2, ffn=8, location="refined")
    B, h, w, d = 2, 12, 16, 8
    fine, kp = torch.randn(B, d, h, w), torch.randn(B, 3, d)
    # windows inside the map's outer cell centres (no clamping), between centres (bilinear)
    xy = torch.rand(B, 3, 2) - 0.5
    r = REFINE_RADIUS

    def sample(b: int, x: float, y: float) -> torch.Tensor:
        # bilinear interpolation of fine[b] at normalised (x, y), cell centres at (2 j + 1) / w - 1
        u, v = (x + 1) * w / 2 - 0.5, (y + 1) * h / 2 - 0.5
        j, i = math.floor(u), math.floor(v)
        a, c = u - j, v - i
        f = fine[b]
        return (
            (1 - a) * (1 - c) * f[:, i, j]
            + a * (1 - c) * f[:, i, j + 1]
            + (1 - a) * c * f[:, i + 1, j]
            + a * c * f[:, i + 1, j + 1]
        )

    with torch.no_grad():
        got = net.refinement(kp, fine, xy)
        ref = torch.empty(B, 3, 2)
        for b in range(B):
            for k in range(3):
                q = net.refine_query(kp[b, k])
                cells = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
                offsets = torch.tensor([[dx * 2 / w, dy * 2 / h] for dx, dy in cells])
                scores = (
                    torch.stack(
                        [
                            q @ sample(b, float(xy[b, k, 0] + o[0]), float(xy[b, k, 1] + o[1]))
                            for o in offsets
                        ]
                    )
                    / d**0.5
                )
                ref[b, k] = scores.softmax(0) @ offsets
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # The window is at most r fine cells from the centre in each axis.
    assert bool((got.abs() <= torch.tensor([2 * r / w, 2 * r / h])).all())


def test_refined_head_moves_the_heatmap_location_by_the_refinement() -> None:
    torch.manual_seed(3)
    net = KeypointTransformer(3, 2, context_dim=0, d_model=8, n_heads=2, ffn=8, location="refined")
    with torch.no_grad():
        net.location_head[-1].weight.normal_()
        features = net.features(torch.rand(2, 3, 64, 64))
        assert features.memory.shape == (2, 8, 8, 8)  # 1/8 resolution
        assert features.fine is not None and features.fine.shape == (2, 8, 16, 16)  # 1/4
        kp = torch.randn(2, 3, 8)
        coarse = net.locate(kp, Features(features.memory, None)) * 2 - 1  # normalised
        got = net.locate(kp, features)
        ref = (coarse + net.refinement(kp, features.fine, coarse) + 1) / 2
    torch.testing.assert_close(got, ref)
    assert not torch.allclose(got, (coarse + 1) / 2, atol=1e-4)
    assert (
        KeypointTransformer(3, 2, context_dim=0, d_model=8, n_heads=2, ffn=8, location="heatmap")
        .features(torch.rand(1, 3, 64, 64))
        .fine
        is None
    )


def test_unknown_location_head_is_an_error() -> None:
    with pytest.raises(ValueError, match="location must be"):
        KeypointTransformer(3, 2, context_dim=0, location="argmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tap must be > 2"):
        KeypointTransformer(3, 2, context_dim=0, tap=2, location="refined")


def test_sine_position_encoding_values_and_errors() -> None:
    pe = sine_position_encoding(2, 3, 8)
    assert pe.shape == (6, 8)
    # cell (row 1, column 2): x = 2.5 / 3, y = 1.5 / 2; frequencies 1, 2 (times 2 pi)
    x, y = 2.5 / 3, 1.5 / 2
    ref = [math.sin(2 * math.pi * x), math.sin(4 * math.pi * x)]
    ref += [math.cos(2 * math.pi * x), math.cos(4 * math.pi * x)]
    ref += [math.sin(2 * math.pi * y), math.sin(4 * math.pi * y)]
    ref += [math.cos(2 * math.pi * y), math.cos(4 * math.pi * y)]
    torch.testing.assert_close(pe[5], torch.tensor(ref), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of 4"):
        sine_position_encoding(2, 2, 6)


def test_backbone_is_efficientnet_up_to_its_tap_and_keeps_its_statistics() -> None:
    image = torch.rand(2, 3, 32, 32)
    backbone = Backbone((2, 4)).train()
    reference = load_efficientnet_lite0(taps=(2, 4))
    with torch.no_grad():
        for got, ref in zip(backbone(image), reference.features(image), strict=True):
            torch.testing.assert_close(got, ref)
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert backbone.channels == [24, 40] and len(backbone.blocks) == 5
