from typing import get_args

import pytest
import torch

from kp3d.nn.blocks import (
    ConvBNAct,
    NormKind,
    ResDown,
    Up,
    double,
    init_kaiming,
    norm_groups,
    norm_layer,
)


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


@pytest.mark.parametrize("channels,groups", [(1, 1), (4, 4), (6, 6), (12, 6), (16, 8), (512, 8)])
def test_norm_groups_divide_the_channels(channels, groups):
    assert norm_groups(channels) == groups


def test_norm_layer_kinds():
    assert get_args(NormKind) == ("batch", "group")
    bn = norm_layer("batch", 12)
    assert type(bn) is torch.nn.BatchNorm2d and bn.num_features == 12
    gn = norm_layer("group", 12)
    assert isinstance(gn, torch.nn.GroupNorm) and (gn.num_groups, gn.num_channels) == (6, 12)
    assert gn.weight.shape == gn.bias.shape == (12,)
    with pytest.raises(ValueError, match="valid: batch, group"):
        norm_layer("instance", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels >= 1"):
        norm_groups(0)


def test_batch_norm_blocks_keep_their_checkpoint_keys():
    # Existing checkpoints must still load: the default is AutoLink's BatchNorm, named as before.
    assert list(ConvBNAct(3, 4).state_dict()) == [
        "0.weight",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    keys = ResDown(3, 4).state_dict().keys()
    assert {k.rsplit(".", 1)[0] for k in keys} == {
        "conv1",
        "bn1",
        "conv2",
        "bn2",
        "skip",
        "bn_skip",
    }
    assert "bn_skip.running_var" in keys
    # GroupNorm has the same affine parameters under the same names, and no running statistics.
    group = ResDown(3, 4, norm="group").state_dict().keys()
    assert group == {k for k in keys if k.rsplit(".", 1)[1] in ("weight", "bias")}


def test_group_norm_blocks_normalise_each_sample_on_its_own():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 16, 12)
    for block in (
        ResDown(5, 8, norm="group"),
        ConvBNAct(5, 8, norm="group"),
        Up(5, 8, norm="group"),
    ):
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.modules())
        whole = block.train()(x)
        # A sample's output does not depend on the rest of its batch (in training mode too).
        torch.testing.assert_close(torch.cat([block(x[:1]), block(x[1:])]), whole)
