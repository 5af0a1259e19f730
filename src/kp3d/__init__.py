"""kp3d: unsupervised 3D keypoints, skeletons, canonical shapes and poses from image collections.

``kp3d.load(run)`` gives a :class:`~kp3d.api.Predictor` of a trained run (see :mod:`kp3d.api`);
``kp3d.Prediction`` is the typed output of every method. The command line is ``kp3d --help``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kp3d.api import Predictor, load
    from kp3d.methods.prediction import Prediction

__all__ = ["Prediction", "Predictor", "__version__", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: `kp3d --help` and `import kp3d` stay fast (no torch import until it is needed).
    if name in ("load", "Predictor"):
        from kp3d import api

        return getattr(api, name)
    if name == "Prediction":
        from kp3d.methods.prediction import Prediction

        return Prediction
    raise AttributeError(f"module 'kp3d' has no attribute {name!r}")
