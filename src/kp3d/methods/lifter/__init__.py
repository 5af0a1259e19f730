"""``lifter``: the multi-category, cyclically self-supervised 2D→3D lifter of Can et al.; see
:mod:`.model`."""

from typing import Any

from kp3d.data.inputs import KEYPOINTS
from kp3d.errors import ConfigError
from kp3d.methods.base import MethodSpec
from kp3d.methods.lifter.model import Lifter, LifterConfig, build, configure

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
    values = dict(values)
    ridge = values.get("coefficient_ridge", 0.0)
    if ridge:
        raise ConfigError(
            f"a lifter run of run format 1 with coefficient_ridge = {ridge} (the fitted shape): "
            "that model is the method lifter-fit since run format 2, so only a kp3d that writes "
            "run format 1 loads this run"
        )
    for key in _FORMAT_1_FIT_KEYS:
        values.pop(key, None)
    return values


SPEC = MethodSpec(
    config_cls=LifterConfig,
    build=build,
    configure=configure,
    migrate=migrate,
    inputs=KEYPOINTS,
    protocols=("lifting",),
    description="Can et al.'s lifter: non-negative shape coefficients, cyclic "
    "self-supervision, several categories in one network (no 3D labels)",
    # bf16 (~3 significant digits) is too coarse for reprojection residuals of ~1% of a shape.
    train_defaults={"lr": 1e-3, "batch_size": 256, "bf16": False},
)

__all__ = ["SPEC", "Lifter", "LifterConfig"]
