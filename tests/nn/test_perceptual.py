import pytest
import torch

from kp3d.errors import ConfigError, DataError
from kp3d.nn.perceptual import (
    EfficientNetLite0,
    VGG16Features,
    efficientnet_lite0_weights_path,
    imagenet_normalise,
    load_efficientnet_lite0,
    load_vgg16,
)


def random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            out[k] = torch.rand(v.shape, generator=g) * 0.2 + (
                0.9 if k.endswith("running_var") else -0.1
            )
        else:
            out[k] = v.clone()
    return out


def test_packaged_efficientnet_weights_load_strictly():
    net = load_efficientnet_lite0()
    raw = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(raw)
    for k, v in raw.items():
        assert torch.equal(net.state_dict()[k], v), k
    assert not net.training


def test_packaged_efficientnet_is_a_working_classifier():
    # A real ImageNet network is confident on a smooth natural-ish image, uniform on nothing:
    # the logits must depend on the image and the softmax must not be flat.
    net = load_efficientnet_lite0()
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(
        torch.rand(2, 3, 8, 8, generator=g), size=96, mode="bilinear"
    )
    with torch.no_grad():
        p = net(x).softmax(-1)
    assert p.shape == (2, 1000)
    assert not torch.allclose(p[0], p[1])
    assert p.max() > 5 / 1000


def test_efficientnet_created_state_dict_roundtrip_and_taps(tmp_path):
    state = random_state(EfficientNetLite0(), seed=1)
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    net = load_efficientnet_lite0(path, taps=(0, 2, 4, 10))
    for k, v in state.items():
        assert torch.equal(net.state_dict()[k], v)
    feats = net.features(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (2, 16, 32, 32),
        (2, 24, 16, 16),
        (2, 40, 8, 8),
        (2, 112, 4, 4),
    ]


def test_efficientnet_wrong_state_dict_is_a_data_error(tmp_path):
    state = random_state(EfficientNetLite0(), seed=2)
    del state["_blocks.3._bn1.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match="broken.pth"):
        load_efficientnet_lite0(path)
    with pytest.raises(ConfigError, match="not found"):
        load_efficientnet_lite0(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(DataError, match="junk.pth"):
        load_efficientnet_lite0(tmp_path / "junk.pth")


def test_fused_batchnorm_computes_the_same_features():
    net = load_efficientnet_lite0(taps=(0, 4, 15))
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        ref = net.features(x)
        fused = net.fuse_batchnorm_().features(x)
    for a, b in zip(ref, fused):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_same_padding_puts_the_extra_row_bottom_right():
    net = EfficientNetLite0(taps=(0,))
    conv = net._conv_stem
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 0, 0] = 1.0  # each output = the top-left input of its window
    x = torch.arange(16.0).reshape(1, 1, 4, 4).expand(1, 3, 4, 4)
    out = conv(x)[0, 0] / 3
    # TF SAME with stride 2 and k=3 on 4 pixels pads 0 before, 1 after: windows start at 0, 2.
    assert out.tolist() == [[0.0, 2.0], [8.0, 10.0]]


def test_vgg16_loads_a_created_torchvision_state_dict(tmp_path):
    net = VGG16Features()
    names = {k.removeprefix("layers.") for k in net.state_dict()}
    assert {"0.weight", "2.weight", "28.bias"} <= names
    g = torch.Generator().manual_seed(3)
    state = {
        f"features.{k}": torch.randn(v.shape, generator=g) * 0.05
        for k, v in {k.removeprefix("layers."): v for k, v in net.state_dict().items()}.items()
    }
    state["classifier.0.weight"] = torch.zeros(2, 8)  # torchvision files carry the classifier too
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    loaded = load_vgg16(path)
    assert torch.equal(loaded.layers[28].bias, state["features.28.bias"])
    feats = loaded.features(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [
        (1, 64, 32, 32),
        (1, 128, 16, 16),
        (1, 256, 8, 8),
        (1, 512, 4, 4),
    ]
    assert all((f >= 0).all() for f in feats)  # taps are after ReLUs


def test_vgg16_missing_layer_is_a_data_error(tmp_path):
    state = {
        f"features.{k}": v
        for k, v in VGG16Features().layers.state_dict().items()
        if not k.startswith("28.")
    }
    path = tmp_path / "short.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match="short.pth"):
        load_vgg16(path)


def test_vgg16_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = {
        f"features.{k}": v.contiguous() for k, v in VGG16Features().layers.state_dict().items()
    }
    save_file(state, str(tmp_path / "vgg.safetensors"))
    loaded = load_vgg16(tmp_path / "vgg.safetensors")
    for k, v in loaded.layers.state_dict().items():
        assert torch.equal(v, state[f"features.{k}"]), k


def test_imagenet_normalise():
    x = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(imagenet_normalise(x), torch.zeros(1, 3, 2, 2))


def test_tap_errors():
    with pytest.raises(ValueError, match="taps"):
        EfficientNetLite0(taps=(16,))
    with pytest.raises(ValueError, match="taps"):
        VGG16Features(taps=())
