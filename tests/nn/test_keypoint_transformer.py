"""The DETR-style keypoint detector of lifter-e2e."""

import math

import pytest
import torch

from kp3d.nn.keypoint_transformer import Backbone, KeypointTransformer, sine_position_encoding
from kp3d.nn.perceptual import load_efficientnet_lite0


@pytest.fixture(scope="module", params=["regression", "heatmap"])
def detector(request) -> KeypointTransformer:
    torch.manual_seed(0)
    net = KeypointTransformer(
        7, 3, context_dim=5, d_model=16, n_heads=2, ffn=32, location=request.param
    )
    if request.param == "heatmap":  # the offset head starts at zero: give it something to move
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
        memory = detector.memory(torch.rand(2, 3, 32, 32))
        perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
        base = detector.decode(memory, detector.queries)
        moved = detector.decode(memory, detector.queries[torch.cat([perm, torch.tensor([7])])])
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
        got = net.locate(kp, memory)
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


def test_unknown_location_head_is_an_error() -> None:
    with pytest.raises(ValueError, match="location must be"):
        KeypointTransformer(3, 2, context_dim=0, location="argmax")  # type: ignore[arg-type]


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
    backbone = Backbone(4).train()
    reference = load_efficientnet_lite0(taps=(4,))
    with torch.no_grad():
        torch.testing.assert_close(backbone(image), reference.features(image)[0])
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert backbone.channels == 40 and len(backbone.blocks) == 5
