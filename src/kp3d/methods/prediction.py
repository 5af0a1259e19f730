"""The one typed output of every method: :class:`Prediction` (mirrors :class:`~kp3d.data.schema.Sample`).

A method's ``predict`` fills the fields it has and leaves the others ``None``. Pixel-frame fields
are in continuous pixel coordinates (:mod:`kp3d.geometry`) of the image the model was given,
whose size is ``image_size``; :meth:`Prediction.rescale` maps every one of them to other image
sizes (the users' original images) at once, so that no caller rescales one key and forgets
another.

=============  ========================  =====================================================
field          shape (batch)             meaning
=============  ========================  =====================================================
kp2d           (B, K, 2) / (B, V, K, 2)  keypoints (u, v) in pixels (pixel frame)
vis            (B, K) / (B, V, K)        visibility or confidence of each keypoint
kp3d           (B, K, 3)                 3D keypoints in the camera frame (of the first view
                                         for a multi-view method), the method's own units
kp3d_image     (B, K, 3) / (B, V, K, 3)  image frame: x, y in pixels, z depth in pixel units
                                         (scaled like x, y; pixel frame)
depth          (B, 1, H, W)              depth map of the input view (pixel frame: dense)
normals        (B, 3, H, W)              unit normals, camera frame (dense)
albedo         (B, 3, H, W)              albedo in [0, 1] (dense)
mask           (B, 1, H, W)              foreground probability (dense)
R              (B, 3, 3) / (B, V, 3, 3)  object-to-camera rotation
heatmaps       (B, K, h, w)              keypoint distributions (any resolution)
extras         name -> (B, ...)          other per-sample outputs of the method (pose
                                         parameters, shape coefficients, ...), not rescaled
=============  ========================  =====================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

PREDICTION_FIELDS: tuple[str, ...] = (
    "kp2d",
    "vis",
    "kp3d",
    "kp3d_image",
    "depth",
    "normals",
    "albedo",
    "mask",
    "R",
    "heatmaps",
)
"""Tensor fields of :class:`Prediction`, in order."""


@dataclass
class Prediction:
    """Per-sample outputs of a method, batch first; see the module doc for every field."""

    kp2d: Tensor | None = None
    vis: Tensor | None = None
    kp3d: Tensor | None = None
    kp3d_image: Tensor | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None
    albedo: Tensor | None = None
    mask: Tensor | None = None
    R: Tensor | None = None
    heatmaps: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None
    """(H, W) of the image the pixel-frame fields refer to; None for methods without images."""

    def __post_init__(self) -> None:
        clash = sorted(set(self.extras) & set(PREDICTION_FIELDS))
        if clash:
            raise ValueError(f"Prediction: extras {clash} are named like fields; use the fields")

    @classmethod
    def cat(cls, predictions: Sequence[Prediction]) -> Prediction:
        """Batches concatenated along the batch axis (every one must have the same fields and
        extras; ``image_size`` is kept where all agree, else None)."""
        if not predictions:
            raise ValueError("Prediction.cat: no predictions")
        first = predictions[0]
        for p in predictions[1:]:
            if p.present() != first.present() or set(p.extras) != set(first.extras):
                raise ValueError(
                    f"Prediction.cat: predictions differ in their fields: {first.present()} + "
                    f"{sorted(first.extras)} against {p.present()} + {sorted(p.extras)}"
                )
        sizes = {p.image_size for p in predictions}
        return cls(
            **{f: torch.cat([getattr(p, f) for p in predictions]) for f in first.present()},
            extras={k: torch.cat([p.extras[k] for p in predictions]) for k in first.extras},
            image_size=first.image_size if len(sizes) == 1 else None,
        )

    def present(self) -> tuple[str, ...]:
        """Names of the tensor fields this prediction has (``extras`` not included)."""
        return tuple(f for f in PREDICTION_FIELDS if getattr(self, f) is not None)

    def replace(self, **changes: Any) -> Prediction:
        return dataclasses.replace(self, **changes)

    def items(self) -> list[tuple[str, Tensor]]:
        """Every tensor as ``(name, tensor)``: the fields, then ``extras``."""
        return [(f, getattr(self, f)) for f in self.present()] + list(self.extras.items())

    def detach_cpu(self) -> Prediction:
        """Detached float32 CPU copies of every tensor (floating ones cast; others kept)."""

        def conv(v: Tensor) -> Tensor:
            v = v.detach().cpu()
            return v.float() if v.is_floating_point() else v

        return self.replace(
            **{f: conv(getattr(self, f)) for f in self.present()},
            extras={k: conv(v) for k, v in self.extras.items()},
        )

    def rescale(self, sizes: Tensor) -> Prediction:
        """Every pixel-frame field mapped to other image sizes (continuous coordinates: a scale).

        Args:
            sizes: (B, 2) target ``(W, H)`` per sample (an image's own size, as PIL reports it).

        Returns:
            A new prediction whose ``kp2d`` and ``kp3d_image`` (x, y; z by the mean of the two
            scales) are in pixels of the target sizes. Dense maps keep the model's resolution.

        Raises:
            ValueError: no ``image_size`` to rescale from, or ``sizes`` not (B, 2).
        """
        if self.image_size is None:
            raise ValueError("Prediction.rescale: no image_size to rescale from")
        h, w = self.image_size
        ref = self.kp2d if self.kp2d is not None else self.kp3d_image
        if (
            sizes.ndim != 2
            or sizes.shape[-1] != 2
            or (ref is not None and sizes.shape[0] != ref.shape[0])
        ):
            raise ValueError(
                f"Prediction.rescale: sizes must be (B, 2) (W, H), got {tuple(sizes.shape)}"
            )
        changes: dict[str, Any] = {}
        if ref is None:
            return self
        scale = sizes.to(ref) / ref.new_tensor([w, h])  # (B, 2)
        # Views share the image size of their sample: broadcast over any axes before K.
        if self.kp2d is not None:
            s = scale.reshape(scale.shape[0], *([1] * (self.kp2d.ndim - 2)), 2)
            changes["kp2d"] = self.kp2d * s
        if self.kp3d_image is not None:
            s = scale.reshape(scale.shape[0], *([1] * (self.kp3d_image.ndim - 2)), 2)
            z = s.mean(-1, keepdim=True)
            changes["kp3d_image"] = self.kp3d_image * torch.cat([s, z], -1)
        return self.replace(**changes, image_size=None)
