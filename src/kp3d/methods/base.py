"""What every method provides. Methods never import each other; the engine only sees this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from kp3d.data.schema import Sample

DataKind = Literal["images", "multiview", "keypoints"]


class StepOutput(NamedTuple):
    """Result of one training step: the scalar loss to minimise and named scalars to log."""

    loss: Tensor
    logs: dict[str, Tensor]


class MethodModel(nn.Module):
    """Base class of every method's model.

    Subclasses implement :meth:`training_step` and :meth:`predict`; both take a batch
    :class:`Sample` (see :mod:`kp3d.data.schema`).
    """

    def training_step(self, batch: Sample, step: int) -> StepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, batch: Sample) -> dict[str, Tensor]:
        """Per-sample outputs, batch first (e.g. ``kp2d`` (B, K, 2) in pixels, ``kp3d`` (B, K, 3))."""
        raise NotImplementedError

    def skeleton(self) -> Tensor | None:
        """(K, K) symmetric non-negative learned edge weights, for methods that learn a skeleton."""
        return None

    def canonical_shape(self) -> Tensor | None:
        """(K, 3) the learned canonical (mean) 3D shape, for methods that learn one."""
        return None

    def shape_basis(self) -> Tensor | None:
        """(n, K, 3) the learned deformation basis, for methods with a linear shape model."""
        return None


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry.

    Attributes:
        config_cls: frozen dataclass holding every default of the method.
        build: makes the model from a config.
        data: which kind of dataset the method trains on.
        description: one line for ``kp3d train --help``.
        overrides: config values this entry fixes (e.g. ``autolink`` = ``autolink3d`` with the
            3D head off).
        train_defaults: this method's defaults for :class:`kp3d.engine.TrainConfig` fields
            (e.g. a lifter's learning rate); the user's values still win.
    """

    config_cls: type
    build: Callable[[Any], MethodModel]
    data: DataKind
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    train_defaults: dict[str, Any] = field(default_factory=dict)
