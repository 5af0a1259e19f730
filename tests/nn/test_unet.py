import pytest
import torch

from kp3d.nn.unet import UNet


def test_shape_and_channels_last():
    net = UNet(4, 3, [4, 8, 8])
    x = torch.randn(2, 4, 16, 12)
    y = net(x)
    assert y.shape == (2, 3, 16, 12)
    net_cl = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(
        net_cl(x.contiguous(memory_format=torch.channels_last)), y, atol=1e-5, rtol=1e-4
    )


def test_skip_connections_carry_fine_detail():
    # Every input pixel influences its own output pixel through the full-resolution skip.
    net = UNet(1, 1, [4, 8, 8, 8]).eval()
    x = torch.zeros(1, 1, 16, 16, requires_grad=True)
    net(x)[0, 0, 5, 9].backward()
    assert x.grad[0, 0, 5, 9] != 0


def test_errors():
    with pytest.raises(ValueError, match="two levels"):
        UNet(3, 3, [8])
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(3, 3, [4, 4, 4])(torch.randn(1, 3, 10, 12))


def test_group_norm_unet_has_batch_independent_outputs():
    torch.manual_seed(0)
    net = UNet(4, 3, [4, 8, 8], norm="group").train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.state_dict().keys() < UNet(4, 3, [4, 8, 8]).state_dict().keys()
    x = torch.randn(3, 4, 16, 12)
    torch.testing.assert_close(torch.cat([net(x[:2]), net(x[2:])]), net(x))
