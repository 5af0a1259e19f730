import pytest
import torch

from kp3d.geometry import pixel_centres
from kp3d.nn.detector import Detector


@pytest.mark.parametrize("n_up,heat", [(0, 2), (2, 8), (3, 16)])
def test_shapes_and_ranges(n_up, heat):
    det = Detector(5, width=4, n_up=n_up)
    out = det(torch.randn(3, 3, 32, 32))
    assert out.kp.shape == (3, 5, 2) and out.kp.dtype == torch.float32
    assert out.prob.shape == (3, 5, heat, heat)
    assert out.features.shape == (3, det.feature_channels, 2, 2)
    torch.testing.assert_close(out.prob.sum((-2, -1)), torch.ones(3, 5))
    lim = pixel_centres(heat)[-1]
    assert out.kp.abs().max() <= lim + 1e-6


def test_keypoints_are_the_expectation_of_the_heatmaps():
    det = Detector(2, width=4, n_up=2)
    out = det(torch.randn(1, 3, 32, 32))
    c = pixel_centres(8)
    x = (out.prob.sum(-2) * c).sum(-1)
    y = (out.prob.sum(-1) * c).sum(-1)
    torch.testing.assert_close(out.kp, torch.stack([x, y], -1))


def test_float32_keypoints_under_bf16_autocast():
    det = Detector(3, width=4, n_up=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = det(torch.randn(2, 3, 16, 16))
    assert out.kp.dtype == torch.float32 and torch.isfinite(out.kp).all()


def test_errors():
    with pytest.raises(ValueError, match="divisible by 16"):
        Detector(2, width=4, n_up=1)(torch.randn(1, 3, 24, 32))
    with pytest.raises(ValueError, match="k >= 1"):
        Detector(0, width=4, n_up=1)


def test_group_norm_detector_has_batch_independent_keypoints():
    torch.manual_seed(0)
    det = Detector(3, width=4, n_up=1, norm="group").train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in det.modules())
    keys = Detector(3, width=4, n_up=1).state_dict().keys()
    assert det.state_dict().keys() < keys  # the same names, less the BatchNorm statistics
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(torch.cat([det(x[:1]).kp, det(x[1:]).kp]), det(x).kp)
