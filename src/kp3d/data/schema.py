"""The one sample schema of kp3d. Every dataset format and every method speaks it.

A :class:`Sample` holds what its source has and nothing else: a field a source lacks is ``None``,
never invented. Coordinates follow :mod:`kp3d.geometry` (continuous pixel coordinates of *this*
sample's image, x right, y down, camera frame x right / y down / z forward).

=============  ====================  ==========================================================
field          shape (one sample)    meaning
=============  ====================  ==========================================================
image          (3, H, W) float32     RGB in [0, 1]
mask           (1, H, W) float32     foreground mask in {0, 1} (or soft, in [0, 1])
depth          (1, H, W) float32     camera-frame z per pixel; 0 where there is no surface
kp2d           (K, 2) float32        2D keypoints / landmarks (u, v) in pixels of ``image``
vis            (K,) bool             visibility of each keypoint (absent = all visible)
kp3d           (K, 3) float32        3D keypoints in the camera frame of this view
intrinsics     (3, 3) float32        pinhole intrinsics in pixels of ``image``
extrinsics     (3, 4) float32        world-to-camera ``[R | t]`` (multi-view sets)
ortho          (3,) float32          orthographic camera ``(s, tx, ty)``: u = s X + tx, v = s Y + ty
view           () int64              view index within a multi-view instance
background     (3, H, W) float32     the scene without the object, as this view sees it (static
                                     cameras: rig sets' backgrounds, or a per-pixel median)
instance       () int64              object instance id (shared by the views of one instance)
category       () int64              category label (multi-category sets)
name           str                   where the sample came from (file name), for messages
=============  ====================  ==========================================================

Multi-view items carry a leading view axis V on every tensor field (image (V, 3, H, W),
kp2d (V, K, 2), extrinsics (V, 3, 4), view (V,), ...). A *batch* is a ``Sample`` whose tensor
fields have a leading batch axis B (then V for multi-view), made by :func:`collate`; its
``name`` is a list of strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

TENSOR_FIELDS: tuple[str, ...] = (
    "image",
    "mask",
    "depth",
    "kp2d",
    "vis",
    "kp3d",
    "intrinsics",
    "extrinsics",
    "ortho",
    "view",
    "instance",
    "category",
    "background",
)


@dataclass
class Sample:
    """One sample (or, after :func:`collate`, one batch) in kp3d's schema; see the module doc."""

    image: Tensor | None = None
    mask: Tensor | None = None
    depth: Tensor | None = None
    kp2d: Tensor | None = None
    vis: Tensor | None = None
    kp3d: Tensor | None = None
    intrinsics: Tensor | None = None
    extrinsics: Tensor | None = None
    ortho: Tensor | None = None
    view: Tensor | None = None
    instance: Tensor | None = None
    category: Tensor | None = None
    background: Tensor | None = None
    name: str | list[str] | None = None

    def present(self) -> tuple[str, ...]:
        """Names of the tensor fields this sample has."""
        return tuple(f for f in TENSOR_FIELDS if getattr(self, f) is not None)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Sample:
        """Move tensor fields to ``device``; floating fields are cast to ``dtype`` when given."""
        out: dict[str, Any] = {}
        for f in TENSOR_FIELDS:
            v = getattr(self, f)
            if v is not None:
                v = (
                    v.to(device, dtype)
                    if (dtype is not None and v.is_floating_point())
                    else v.to(device)
                )
            out[f] = v
        return dataclasses.replace(self, **out)

    def replace(self, **changes: Any) -> Sample:
        return dataclasses.replace(self, **changes)


def collate(samples: Sequence[Sample] | Sample) -> Sample:
    """Stack samples into a batch ``Sample`` (leading axis B).

    A ``Sample`` is returned as it is: it is already a batch, from a dataset that fetches whole
    batches (``__getitems__``, which DataLoader calls when a dataset has it).

    Raises:
        ValueError: if the samples do not all have the same fields, or shapes differ; the message
            names the offending samples.
    """
    if isinstance(samples, Sample):
        return samples
    if len(samples) == 0:
        raise ValueError("collate: empty list of samples")
    fields = samples[0].present()
    out: dict[str, Any] = {}
    for s in samples[1:]:
        if s.present() != fields:
            raise ValueError(
                f"collate: samples differ in their fields: {samples[0].name!r} has {fields}, "
                f"{s.name!r} has {s.present()}"
            )
    for f in fields:
        vals = [getattr(s, f) for s in samples]
        try:
            out[f] = torch.stack(vals)
        except RuntimeError as e:
            shapes = sorted({tuple(v.shape) for v in vals})
            raise ValueError(f"collate: field {f!r} has different shapes {shapes}") from e
    out["name"] = [s.name if isinstance(s.name, str) else "" for s in samples]
    return Sample(**out)
