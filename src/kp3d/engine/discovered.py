"""The 2D keypoints an image method discovered on its own training data, as a keypoint file.

``kp3d train --method lifter --data RUN`` lifts what ``autolink3d`` (or ``autolink``) found:
the run's model is applied to the images it was trained on (``config.json``'s data path and
size) and the keypoints are written once to ``RUN/discovered_keypoints.npz`` in the
:mod:`kp3d.data.adapters.keypoints_npz` format (``kp2d`` (N, K, 2) in pixels of the images the
model saw, ``vis`` all true). The file is rebuilt when the run's weights are newer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kp3d.errors import UserError

DISCOVERED_FILE = "discovered_keypoints.npz"


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a kp3d run folder (``config.json`` and ``model.safetensors``)."""
    from kp3d.engine.run import CONFIG_FILE, WEIGHTS_FILE

    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


@torch.no_grad()
def discovered_keypoints(run_dir: str | Path, *, batch_size: int = 64) -> Path:
    """``RUN/discovered_keypoints.npz`` for an image run, written (atomically) if missing or
    older than the run's weights.

    Raises:
        UserError: the run is not of an image method, or records no training data that can
            still be opened (the message names the run and the path).
    """
    from kp3d.engine.atomic import atomic_path
    from kp3d.engine.run import WEIGHTS_FILE, load_run
    from kp3d.evaluation import collect

    run_dir = Path(run_dir)
    out = run_dir / DISCOVERED_FILE
    if out.is_file() and out.stat().st_mtime >= (run_dir / WEIGHTS_FILE).stat().st_mtime:
        return out
    run = load_run(run_dir)
    refusal = UserError(
        f"{run_dir}: a {run.method_name!r} run has no discovered image keypoints to lift; "
        "pass a run of a method that finds 2D keypoints in images (autolink3d, autolink) or "
        "a keypoint file"
    )
    if run.spec.inputs.image_size(run.method_config) is None:  # it reads no images
        raise refusal
    data = run.config.get("data") or {}
    if not data.get("path"):
        raise UserError(f"{run_dir}: config.json records no training data path")
    try:
        dataset = run.spec.inputs.open(
            data["path"], size=data.get("size"), format=data.get("format")
        )
    except (OSError, UserError) as e:
        raise UserError(f"{run_dir}: cannot open its training data {data['path']}: {e}") from e
    kp2d = collect(run.model, dataset, batch_size=batch_size).pred.kp2d
    if kp2d is None or kp2d.ndim != 3:  # no keypoints, or one set per view
        raise refusal
    kp2d = kp2d.numpy()
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, kp2d=kp2d, vis=np.ones(kp2d.shape[:2], dtype=bool))
    return out
