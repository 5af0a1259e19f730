"""``lifter``: the multi-category, cyclically self-supervised 2D→3D lifter of Can et al.; see
:mod:`.model`."""

from typing import Any

from kp3d.data.inputs import KEYPOINTS
from kp3d.methods.base import MethodSpec
from kp3d.methods.configure import drop_inert_keys, keypoints_and_categories_from_data
from kp3d.methods.lifter.model import Lifter, LifterConfig, build
from kp3d.nn.lifting import LIFTING_TRAIN_DEFAULTS

_FORMAT_1_FIT_KEYS = ("coefficient_ridge", "refine_steps")
"""``LifterConfig`` keys of run format 1 that belong to ``lifter-fit`` since format 2."""


def migrate(values: dict[str, Any], version: int) -> dict[str, Any]:
    """A stored run's settings of run format ``version`` in this method's keys: format 1's
    shape-fit settings are dropped where they had no effect (``coefficient_ridge`` 0).

    Raises:
        ConfigError: a format-1 ``lifter`` run with the fitted shape (``coefficient_ridge`` >
            0), a model that is now the method ``lifter-fit``.
    """
    if version >= 2:
        return values
    return drop_inert_keys(
        values,
        _FORMAT_1_FIT_KEYS,
        guard="coefficient_ridge",
        active=bool,
        error="a lifter run of run format 1 with coefficient_ridge = {value} (the fitted shape): "
        "that model is the method lifter-fit since run format 2, so only a kp3d that writes "
        "run format 1 loads this run",
    )


SPEC = MethodSpec(
    config_cls=LifterConfig,
    build=build,
    configure=keypoints_and_categories_from_data,
    migrate=migrate,
    inputs=KEYPOINTS,
    protocols=("lifting",),
    description="Can et al.'s lifter: non-negative shape coefficients, cyclic "
    "self-supervision, several categories in one network (no 3D labels)",
    train_defaults=dict(LIFTING_TRAIN_DEFAULTS),
)

__all__ = ["SPEC", "Lifter", "LifterConfig"]
