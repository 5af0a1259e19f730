"""``lifter-fit``: kp3d's 2D->3D lifter; see :mod:`.model`."""

from __future__ import annotations

from typing import Any

from kp3d.data.inputs import KEYPOINTS
from kp3d.methods.base import MethodSpec
from kp3d.methods.configure import drop_inert_keys, keypoints_and_categories_from_data
from kp3d.methods.lifter_fit.config import LifterFitConfig
from kp3d.methods.lifter_fit.model import LifterFit, build
from kp3d.nn.lifting import LIFTING_TRAIN_DEFAULTS

_FORMAT_1_UNUSED = {"cycle_start": None, "camera_weight": None, "shape_weight": None}
"""Keys of the ``LifterConfig`` that format-1 ``lifter-fit`` runs stored and this method does
not have; they had no effect with ``cycle_start`` none (the cycle off, as ``lifter-fit``
fixed it)."""


def migrate(values: dict[str, Any], version: int) -> dict[str, Any]:
    """A stored run's settings of run format ``version`` in this method's keys.

    Format 1 stored ``lifter-fit`` runs with the ``lifter``'s config: the cycle settings are
    dropped (they had no effect with the cycle off).

    Raises:
        ConfigError: a format-1 run trained with the cycle on (``cycle_start`` set), which this
            method does not have.
    """
    if version >= 2:
        return values
    return drop_inert_keys(
        values,
        _FORMAT_1_UNUSED,
        guard="cycle_start",
        active=lambda cycle_start: cycle_start is not None,
        error="a lifter-fit run of run format 1 with cycle_start = {value} (the cycle on); "
        "lifter-fit has no cycle since run format 2, so only a kp3d that writes run format 1 "
        "loads this run",
    )


SPEC = MethodSpec(
    config_cls=LifterFitConfig,
    build=build,
    inputs=KEYPOINTS,
    protocols=("lifting",),
    description="kp3d's lifter: deformation fitted per view with a ridge prior over a "
    "motion-free basis, rotation refined at prediction, four networks averaged (no 3D labels)",
    configure=keypoints_and_categories_from_data,
    migrate=migrate,
    train_defaults={**LIFTING_TRAIN_DEFAULTS, "batch_size": 512},
)

__all__ = ["SPEC", "LifterFit", "LifterFitConfig"]
