import pytest
import torch
from torch import nn

from kp3d.losses.perceptual import PerceptualLoss


class TinyFeatures(nn.Module):
    """A two-tap feature network with BatchNorm, to check freezing and eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)

    def features(self, image):
        a = torch.relu(self.bn(self.conv(image)))
        return [a, self.pool(a)]


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.perceptual = PerceptualLoss(TinyFeatures())


def test_value_is_the_sum_of_per_tap_l1():
    loss = PerceptualLoss(TinyFeatures())
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    fa, fb = loss.net.features(a), loss.net.features(b)
    expected = sum((x - y).abs().mean() for x, y in zip(fa, fb))
    torch.testing.assert_close(loss(a, b), expected)
    assert loss(a, a) == 0


def test_frozen_and_always_in_eval_mode():
    h = Holder()
    h.train()
    assert not h.perceptual.net.training
    stats = h.perceptual.net.bn.running_mean.clone()
    pred = torch.rand(2, 3, 8, 8, requires_grad=True)
    h.perceptual(pred, torch.rand(2, 3, 8, 8)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in h.perceptual.net.parameters())
    assert torch.equal(h.perceptual.net.bn.running_mean, stats)


def test_frozen_weights_stay_out_of_the_state_dict_and_loading_keeps_them():
    h = Holder()
    keys = set(h.state_dict())
    assert keys == {"lin.weight", "lin.bias"}
    other = Holder()
    frozen = other.perceptual.net.conv.weight.clone()
    other.load_state_dict(h.state_dict(), strict=True)
    assert torch.equal(other.lin.weight, h.lin.weight)
    assert torch.equal(other.perceptual.net.conv.weight, frozen)


def test_needs_a_features_method():
    with pytest.raises(TypeError, match="features"):
        PerceptualLoss(nn.Linear(2, 2))
