"""A tiny method and dataset for the engine and command tests (registered per test only).

The model has what makes resumption hard: a convolution (channels-last), BatchNorm buffers,
dropout and an explicit ``torch.randn`` (global random streams), and a learnable skeleton.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kp3d.data.inputs import IMAGES
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.methods.base import (
    LossOutput,
    MethodModel,
    MethodSpec,
    ParamGroup,
    default_param_groups,
)
from kp3d.methods.prediction import Prediction


@dataclass(frozen=True)
class DummyConfig:
    """Settings of :class:`DummyModel`."""

    k: int = 4
    """Number of keypoints."""
    size: int = 8
    """Image side length; must be divisible by 4."""
    hidden: int = 6
    """Channels of the convolution."""
    noise: float = 0.01
    """Std of noise added to the predictions while training (draws from the global stream)."""
    dropout: float = 0.1
    """Dropout before the head."""
    batchnorm: bool = True
    """BatchNorm after the convolution (its statistics are per process under DDP on CPU)."""
    head_lr_scale: float = 1.0
    """Learning-rate scale of the head's bias (its own param group when not 1)."""
    freeze_bn_at: int | None = None
    """Step from which on_step puts the BatchNorm on its running statistics."""
    nan_calls: tuple[int, ...] = ()
    """Calls of training_step (counted from 0 by this model object, across roll-backs) whose
    loss is made NaN, to test the non-finite handling."""

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ConfigError(f"k must be >= 2, got {self.k}")
        if self.size % 4:
            raise ConfigError(f"size must be divisible by 4, got {self.size}")


class DummyModel(MethodModel):
    def __init__(self, config: DummyConfig) -> None:
        super().__init__()
        self.config = config
        self.conv = nn.Conv2d(3, config.hidden, 3, padding=1)
        self.norm = nn.BatchNorm2d(config.hidden) if config.batchnorm else nn.Identity()
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden * 16, config.k * 2)
        self.edges = nn.Parameter(torch.zeros(config.k, config.k))
        self.calls = 0

    def keypoints(self, image: Tensor) -> Tensor:
        h = torch.relu(self.norm(self.conv(image)))
        h = nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)
        return self.head(self.drop(h)).view(-1, self.config.k, 2) * self.config.size

    def loss_weights(self) -> dict[str, float]:
        return {"edges": 1e-3}

    def param_groups(self) -> list[ParamGroup]:
        if self.config.head_lr_scale == 1:
            return default_param_groups(self)
        bias = ParamGroup("head_bias", (self.head.bias,), self.config.head_lr_scale, False)
        return [*default_param_groups(self, exclude=bias.params), bias]

    def on_step(self, step: int) -> None:
        if self.config.freeze_bn_at is not None and step >= self.config.freeze_bn_at:
            self.norm.eval()

    def losses(self, batch: Sample, step: int) -> LossOutput:
        pred = self.keypoints(batch.image)
        pred = pred + self.config.noise * torch.randn_like(pred)
        mse = (pred - batch.kp2d).square().mean() / self.config.size**2
        if self.calls in self.config.nan_calls:
            mse = mse * float("nan")
        self.calls += 1
        logs = {
            "bn_training": torch.tensor(float(self.norm.training)),
            "autocast": torch.tensor(float(torch.is_autocast_enabled(batch.image.device.type))),
            "channels_last": torch.tensor(
                float(batch.image.is_contiguous(memory_format=torch.channels_last))
            ),
        }
        return LossOutput({"mse": mse, "edges": self.edges.square().sum()}, logs)

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        kp2d = self.keypoints(batch.image)
        kp3d = torch.cat([kp2d, torch.zeros_like(kp2d[..., :1])], -1)
        size = (int(batch.image.shape[-2]), int(batch.image.shape[-1]))
        return Prediction(kp2d=kp2d, kp3d=kp3d, kp3d_image=kp3d, image_size=size)

    def artifacts(self) -> dict[str, Tensor]:
        return {"skeleton": torch.sigmoid(self.edges + self.edges.T).detach()}


SPEC = MethodSpec(
    config_cls=DummyConfig,
    build=DummyModel,
    inputs=IMAGES,
    protocols=("keypoint_discovery",),
    description="engine test model",
    train_defaults={
        "lr": 1e-2,
        "warmup_steps": 2,
        "batch_size": 4,
        "steps": 12,
        "ckpt_every": 4,
        "log_every": 2,
        "bf16": False,
    },
)
SPEC_OTHER = MethodSpec(
    config_cls=DummyConfig,
    build=DummyModel,
    inputs=IMAGES,
    description="another test method",
)


class TinyImages(Dataset[Sample]):
    """``n`` fixed random images of ``size`` x ``size`` with keypoints at bright dots."""

    def __init__(self, n: int = 10, size: int = 8, k: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.kp2d = torch.rand(n, k, 2, generator=g) * size
        self.images = torch.rand(n, 3, size, size, generator=g) * 0.2
        for i in range(n):
            for u, v in self.kp2d[i].long().clamp(0, size - 1).tolist():
                self.images[i, :, v, u] = 1.0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Sample:
        return Sample(image=self.images[i], kp2d=self.kp2d[i], name=f"img{i:03d}")


@dataclass(frozen=True)
class ClashConfig:
    """Settings whose names are also TrainConfig fields."""

    lr: float = 0.5
    """A method setting that happens to be called lr."""
    k: int = 4
    """Number of keypoints."""


SPEC_CLASH = MethodSpec(
    config_cls=ClashConfig,
    build=lambda config: DummyModel(DummyConfig(k=config.k)),
    inputs=IMAGES,
    description="a method with a setting named like a training setting",
)

SPEC_WITH_2D = dataclasses.replace(SPEC, without_3d="autolink")
"""The dummy as a method whose ``--no-3d`` variant is registered as ``autolink``."""
