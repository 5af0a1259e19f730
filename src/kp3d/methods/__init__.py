"""The method registry: one explicit dict from name to the module attribute holding its spec.

Entries are resolved lazily so that ``kp3d --help`` does not import every model.
"""

from __future__ import annotations

import importlib

from kp3d.methods.base import (
    Diagnosis,
    LossOutput,
    MethodModel,
    MethodSpec,
    ParamGroup,
    StepOutput,
    default_param_groups,
)
from kp3d.methods.prediction import Prediction

REGISTRY: dict[str, str] = {
    "autolink3d": "kp3d.methods.autolink3d:SPEC",
    "autolink": "kp3d.methods.autolink3d:SPEC_2D",
    "c3dpo": "kp3d.methods.c3dpo:SPEC",
    "keypointnet": "kp3d.methods.keypointnet:SPEC",
    "lifter": "kp3d.methods.lifter:SPEC",
    "lifter-e2e": "kp3d.methods.lifter_e2e:SPEC",
    "lifter-fit": "kp3d.methods.lifter_fit:SPEC",
    "triangulation": "kp3d.methods.triangulation:SPEC",
    "unsup3d": "kp3d.methods.unsup3d:SPEC",
}


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(REGISTRY)}")
    module, attr = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


__all__ = [
    "REGISTRY",
    "Diagnosis",
    "LossOutput",
    "MethodModel",
    "MethodSpec",
    "ParamGroup",
    "Prediction",
    "StepOutput",
    "default_param_groups",
    "get_method",
]
