"""What a method reads: images, calibrated views, or keypoints (:attr:`MethodSpec.inputs`).

The engine and the commands open data through the spec's :class:`Inputs` object and never ask
which kind it is: each kind knows how to open a path for training, evaluation and inference
and which image size the method's config asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from kp3d.data.schema import Sample

SIZE_FIELDS: tuple[str, ...] = ("image_size", "size")
"""Method config fields holding the image side length (the first one a config has)."""


@dataclass(frozen=True)
class Inputs:
    """Images (one view per sample), the base kind.

    Attributes:
        name: ``images``, ``views`` or ``keypoints``: for messages only.
    """

    name: str = "images"

    def image_size(self, config: Any) -> int | None:
        """The image side length ``config`` asks for (None: the data's own size)."""
        return next((int(getattr(config, f)) for f in SIZE_FIELDS if hasattr(config, f)), None)

    def example(self, config: Any, *, batch: int = 2) -> Sample:
        """A batch of the inputs a model with ``config`` takes (random values), for tracing and
        export: ``image`` (batch, 3, S, S)."""
        size = self.image_size(config)
        if size is None:
            raise ValueError(f"{type(config).__name__} has no image size")
        return Sample(image=torch.rand(batch, 3, size, size))

    def open(
        self,
        path: str | Path,
        *,
        format: str | None = None,
        split: str | None = None,
        size: int | None = None,
        strict: bool = False,
    ) -> Dataset[Sample]:
        """``path`` as a dataset of :class:`Sample` (format detected unless given), images
        resized to ``size``."""
        from kp3d.data.adapters import open_dataset

        options: dict[str, Any] = {}
        if size is not None:
            options["size"] = size
        if split is not None:
            options["split"] = split
        if strict:
            options["strict"] = True
        return open_dataset(path, format=format, **options)


@dataclass(frozen=True)
class ViewInputs(Inputs):
    """Calibrated views of one moment per sample: a leading view axis V on every field."""

    name: str = "views"

    def example(self, config: Any, *, batch: int = 2) -> Sample:
        raise NotImplementedError("multi-view inputs have no fixed example (the rig decides V)")


@dataclass(frozen=True)
class KeypointInputs(Inputs):
    """2D keypoints per sample (lifting methods). A run folder of an image method stands for the
    keypoints it discovered on its own training data (:mod:`kp3d.engine.discovered`)."""

    name: str = "keypoints"

    def image_size(self, config: Any) -> int | None:
        return None

    def example(self, config: Any, *, batch: int = 2) -> Sample:
        """``kp2d`` (batch, K, 2) and ``vis`` for K = the config's ``n_keypoints``."""
        k = int(getattr(config, "n_keypoints", 0))
        if k < 1:
            raise ValueError(f"{type(config).__name__} records no number of keypoints")
        return Sample(kp2d=torch.randn(batch, k, 2), vis=torch.ones(batch, k, dtype=torch.bool))

    def open(
        self,
        path: str | Path,
        *,
        format: str | None = None,
        split: str | None = None,
        size: int | None = None,
        strict: bool = False,
    ) -> Dataset[Sample]:
        from kp3d.engine.discovered import discovered_keypoints, is_run_folder

        if is_run_folder(path):
            path = discovered_keypoints(path)
        return super().open(path, format=format, split=split, size=None, strict=strict)


IMAGES = Inputs()
VIEWS = ViewInputs()
KEYPOINTS = KeypointInputs()
