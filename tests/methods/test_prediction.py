"""Prediction: one rescale for every pixel-frame field, concatenation, field checks."""

from __future__ import annotations

import pytest
import torch

from kp3d.methods.prediction import PREDICTION_FIELDS, Prediction


def _naive_rescale_2d(kp: torch.Tensor, image_size: tuple[int, int], sizes: torch.Tensor):
    """Per sample and point: u * W' / W, v * H' / H (continuous coordinates)."""
    h, w = image_size
    out = kp.clone()
    for b in range(kp.shape[0]):
        W2, H2 = sizes[b].tolist()
        out[b, ..., 0] = kp[b, ..., 0] * W2 / w
        out[b, ..., 1] = kp[b, ..., 1] * H2 / h
    return out


def test_rescale_maps_kp2d_and_kp3d_image_like_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    kp2d = torch.rand(3, 5, 2, generator=g, dtype=torch.float64) * 64
    z = torch.randn(3, 5, 1, generator=g, dtype=torch.float64)
    kp3d = torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    pred = Prediction(
        kp2d=kp2d, kp3d=kp3d, kp3d_image=torch.cat([kp2d, z], -1), image_size=(48, 64)
    )
    sizes = torch.tensor([[640, 480], [64, 48], [100, 300]])
    out = pred.rescale(sizes)
    torch.testing.assert_close(out.kp2d, _naive_rescale_2d(kp2d, (48, 64), sizes))
    torch.testing.assert_close(out.kp3d_image[..., :2], out.kp2d)
    # z scales by the mean of the two axis scales.
    zscale = torch.tensor([(10 + 10) / 2, 1.0, (100 / 64 + 300 / 48) / 2], dtype=torch.float64)
    torch.testing.assert_close(out.kp3d_image[..., 2:], z * zscale[:, None, None])
    assert out.kp3d is kp3d  # camera frame: not a pixel field
    assert out.image_size is None
    assert pred.kp2d is kp2d  # the original is left as it was


def test_rescale_broadcasts_over_the_views_axis() -> None:
    kp2d = torch.rand(2, 3, 4, 2) * 32  # (B, V, K, 2)
    sizes = torch.tensor([[64, 32], [16, 16]])
    out = Prediction(kp2d=kp2d, image_size=(32, 32)).rescale(sizes)
    for v in range(3):
        torch.testing.assert_close(out.kp2d[:, v], _naive_rescale_2d(kp2d[:, v], (32, 32), sizes))


def test_rescale_leaves_dense_maps_and_extras_alone() -> None:
    depth, extra = torch.rand(2, 1, 8, 8), torch.rand(2, 3)
    pred = Prediction(kp2d=torch.rand(2, 4, 2), depth=depth, extras={"T": extra}, image_size=(8, 8))
    out = pred.rescale(torch.tensor([[16, 16], [32, 8]]))
    assert out.depth is depth and out.extras["T"] is extra


def test_rescale_errors() -> None:
    pred = Prediction(kp2d=torch.rand(2, 4, 2), image_size=(8, 8))
    with pytest.raises(ValueError, match=r"sizes must be \(B, 2\)"):
        pred.rescale(torch.tensor([16, 16]))
    with pytest.raises(ValueError, match=r"sizes must be \(B, 2\)"):
        pred.rescale(torch.tensor([[16, 16]] * 3))
    with pytest.raises(ValueError, match="no image_size"):
        Prediction(kp2d=torch.rand(2, 4, 2)).rescale(torch.tensor([[16, 16]] * 2))


def test_cat_concatenates_fields_and_extras_and_refuses_mixed_fields() -> None:
    a = Prediction(kp2d=torch.rand(2, 4, 2), extras={"T": torch.rand(2, 3)}, image_size=(8, 8))
    b = Prediction(kp2d=torch.rand(3, 4, 2), extras={"T": torch.rand(3, 3)}, image_size=(8, 8))
    c = Prediction.cat([a, b])
    torch.testing.assert_close(c.kp2d, torch.cat([a.kp2d, b.kp2d]))
    torch.testing.assert_close(c.extras["T"], torch.cat([a.extras["T"], b.extras["T"]]))
    assert c.image_size == (8, 8)
    assert Prediction.cat([a, b.replace(image_size=(9, 9))]).image_size is None
    with pytest.raises(ValueError, match="differ in their fields"):
        Prediction.cat([a, Prediction(kp3d=torch.rand(1, 4, 3), extras={"T": torch.rand(1, 3)})])
    with pytest.raises(ValueError, match="no predictions"):
        Prediction.cat([])


def test_items_lists_fields_in_order_then_extras_and_extras_cannot_shadow_fields() -> None:
    p = Prediction(R=torch.eye(3)[None], kp2d=torch.zeros(1, 2, 2), extras={"alpha": torch.ones(1)})
    assert [k for k, _ in p.items()] == ["kp2d", "R", "alpha"]
    assert p.present() == ("kp2d", "R")
    for name in PREDICTION_FIELDS:
        with pytest.raises(ValueError, match="named like fields"):
            Prediction(extras={name: torch.zeros(1)})


def test_detach_cpu_casts_floating_tensors_to_float32() -> None:
    x = torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True)
    p = Prediction(kp3d=x * 2, vis=torch.ones(2, 3, dtype=torch.bool), extras={"s": x.sum((1, 2))})
    out = p.detach_cpu()
    assert out.kp3d.dtype == torch.float32 and not out.kp3d.requires_grad
    assert out.vis.dtype == torch.bool and out.extras["s"].dtype == torch.float32
