"""The Python API: a trained run as a predictor (``kp3d.load``).

Example (a test runs it with a tiny run and two images)::

    import kp3d

    predictor = kp3d.load("runs/c")                      # a run folder of `kp3d train`
    pred = predictor.predict(["a.jpg", "b.jpg"])         # paths, PIL images, arrays or tensors
    pred.kp2d.shape                                      # (2, K, 2), in each image's own pixels
    pred.kp3d_image                                      # (2, K, 3): x, y in pixels, z alike
    predictor.artifacts["skeleton"]                      # (K, K) learned edge weights

A lifting run takes keypoints instead: ``kp3d.load("runs/lift").predict(kp2d)`` with ``kp2d``
(N, K, 2) (or (K, 2)) in any pixel units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from kp3d.data.schema import Sample
from kp3d.methods.prediction import Prediction


class Predictor:
    """A loaded run: :meth:`predict` on new inputs, :attr:`artifacts` of what it learned.

    Attributes:
        method: the run's method name.
        image_size: side of the square images the model sees (None for keypoint methods).
        artifacts: learned skeleton, canonical shape, basis, ... as CPU tensors.
    """

    def __init__(
        self, run: str | Path, *, device: str = "cpu", backend: Literal["torch", "onnx"] = "torch"
    ) -> None:
        from kp3d.engine.run import load_run

        self._run = load_run(run, device=device)
        self.method = self._run.method_name
        self.device = torch.device(device)
        data_size = (self._run.config.get("data") or {}).get("size")
        self.image_size: int | None = (
            int(data_size)
            if data_size is not None
            else self._run.spec.inputs.image_size(self._run.method_config)
        )
        self.artifacts = {k: v.detach().cpu() for k, v in self._run.model.artifacts().items()}
        if backend == "onnx":
            from kp3d.engine.export import run_graph

            self._predict = run_graph(run).predict
        else:
            self._predict = self._run.model.predict

    def predict(self, inputs: Any, *, batch_size: int = 64) -> Prediction:
        """The prediction for ``inputs``, every pixel field in each input image's own pixels.

        Args:
            inputs: for image methods one image or a list of them: a file path, a PIL image, a
                uint8 or float array (H, W, 3), or a tensor (3, H, W) / (B, 3, H, W) in [0, 1];
                for lifting methods keypoints (N, K, 2) or (K, 2) (array or tensor).
            batch_size: images per forward pass.
        """
        samples, sizes = self._run.spec.inputs.samples(inputs, size=self.image_size)
        n = len(getattr(samples, samples.present()[0]))
        parts = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                batch = _rows(samples, slice(start, start + batch_size)).to(self.device)
                parts.append(self._predict(batch).detach_cpu())
        pred = Prediction.cat(parts)
        if sizes is not None and pred.image_size is not None:
            pred = pred.rescale(sizes)
        return pred


def _rows(batch: Sample, rows: slice) -> Sample:
    return batch.replace(**{f: getattr(batch, f)[rows] for f in batch.present()})


def load(
    run: str | Path, *, device: str = "cpu", backend: Literal["torch", "onnx"] = "torch"
) -> Predictor:
    """The run in folder ``run`` as a :class:`Predictor` (see the module doc).

    Raises:
        UserError: not a run folder, or weights that do not match (the message names the file).
    """
    return Predictor(run, device=device, backend=backend)
