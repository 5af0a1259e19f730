import torch

from kp3d.nn.blocks import ConvBNAct, ResDown, Up, double, init_kaiming


def test_shapes():
    x = torch.randn(2, 5, 16, 12)
    assert ResDown(5, 7)(x).shape == (2, 7, 8, 6)
    assert ConvBNAct(5, 3)(x).shape == (2, 3, 16, 12)
    assert ConvBNAct(5, 3, stride=2)(x).shape == (2, 3, 8, 6)
    assert Up(5, 4)(x).shape == (2, 4, 32, 24)
    assert double(x).shape == (2, 5, 32, 24)


def test_double_keeps_a_constant_and_the_mean():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(double(torch.ones(1, 2, 3, 3)), torch.ones(1, 2, 6, 6))
    torch.testing.assert_close(double(x).mean(), x.mean())


def test_res_down_gradients_reach_every_parameter():
    block = ResDown(3, 4)
    block(torch.randn(2, 3, 8, 8)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_init_kaiming_zeroes_biases():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
    init_kaiming(m)
    assert torch.equal(m[0].bias, torch.zeros(4)) and torch.equal(m[1].bias, torch.zeros(2))
    assert m[0].weight.std() > 0
