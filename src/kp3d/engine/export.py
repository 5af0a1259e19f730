"""A trained run as an ONNX graph (``kp3d export``), and a predictor that runs it.

The graph is the method's ``predict`` traced with PyTorch's ONNX exporter (``torch.export``
based, batch axis dynamic): its inputs are the sample fields the method reads (``image``
(B, 3, S, S) in [0, 1] for image methods), its outputs the fields of the
:class:`~kp3d.methods.prediction.Prediction` it returns, under their own names (``kp2d``,
``kp3d``, ``kp3d_image``, ``R``, ...; a method's extras as ``extras.NAME``), in pixels of the
S x S input. The graph's metadata records the method, the run and the image size, so
:class:`OnnxPredictor` needs nothing else. Needs the ``onnx`` extra
(``pip install 'kp3d[onnx]'``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from kp3d.data.schema import TENSOR_FIELDS, Sample
from kp3d.errors import UserError
from kp3d.methods.prediction import Prediction

GRAPH_FILE = "model.onnx"
"""Where ``kp3d export`` writes a run's graph by default (``RUN/model.onnx``)."""
EXTRAS_PREFIX = "extras."
META_KEY = "kp3d"
"""Metadata entry of the graph: JSON with ``method``, ``run``, ``image_size``, ``inputs``,
``outputs``."""


class ExportResult(NamedTuple):
    """What :func:`export_onnx` wrote: the file and its input and output names."""

    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _predictions(pred: Prediction) -> list[tuple[str, Tensor]]:
    """``(output name, tensor)`` of a prediction, extras prefixed so that
    :class:`OnnxPredictor` can put them back."""
    return [(f, getattr(pred, f)) for f in pred.present()] + [
        (EXTRAS_PREFIX + k, v) for k, v in pred.extras.items()
    ]


class _PredictGraph(nn.Module):
    """``predict`` as a module of positional tensors (what the exporter traces)."""

    def __init__(self, model: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.inputs, self.outputs = model, inputs, outputs

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        pred = dict(_predictions(self.model.predict(Sample(**dict(zip(self.inputs, tensors))))))
        return tuple(pred[name] for name in self.outputs)


def _need(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"ONNX needs the {module} package: pip install 'kp3d[onnx]'") from None


def export_onnx(
    run_dir: str | Path, out: str | Path, *, skip: tuple[str, ...] = ("heatmaps",)
) -> ExportResult:
    """Export the run in ``run_dir`` to the ONNX file ``out`` (written atomically).

    Args:
        skip: prediction fields left out of the graph (heatmaps are large and rarely wanted).

    Raises:
        UserError: the method's inputs have no fixed example (multi-view), its ``predict`` cannot
            be traced (e.g. test-time optimisation), or the onnx packages are missing.
    """
    from kp3d.engine.atomic import atomic_path
    from kp3d.engine.run import load_run

    _need("onnx")
    _need("onnxscript")
    run = load_run(run_dir)
    try:
        example = run.spec.inputs.example(run.method_config)
    except (NotImplementedError, ValueError) as e:
        raise UserError(f"{run_dir}: {run.method_name} runs cannot be exported: {e}") from None
    inputs = tuple(f for f in TENSOR_FIELDS if getattr(example, f) is not None)
    args = tuple(getattr(example, f) for f in inputs)
    with torch.no_grad():
        names = [n for n, _ in _predictions(run.model.predict(example)) if n not in skip]
    graph = _PredictGraph(run.model, inputs, tuple(names)).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                args,
                dynamo=True,
                input_names=list(inputs),
                output_names=names,
                dynamic_shapes=(tuple({0: batch} for _ in inputs),),  # forward(*tensors)
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; the message is what helps
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{run_dir}: {run.method_name} cannot be exported to ONNX: {first}") from e
    finally:
        log.setLevel(level)
    meta = {
        "method": run.method_name,
        "run": str(Path(run_dir)),
        "image_size": run.spec.inputs.image_size(run.method_config),
        "inputs": list(inputs),
        "outputs": names,
    }
    program.model.metadata_props[META_KEY] = json.dumps(meta)
    out = Path(out)
    with atomic_path(out) as tmp:
        program.save(str(tmp), external_data=False)
    return ExportResult(out, inputs, tuple(names))


class OnnxPredictor:
    """Runs an exported graph with onnxruntime on the CPU; ``predict`` returns a Prediction."""

    def __init__(self, path: str | Path) -> None:
        ort = _need("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such ONNX file (write it with kp3d export)")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise UserError(f"{self.path}: not a readable ONNX graph ({e})") from e
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise UserError(f"{self.path}: not written by kp3d export (no {META_KEY!r} metadata)")
        self.meta: dict[str, Any] = json.loads(props[META_KEY])

    @property
    def image_size(self) -> int | None:
        return self.meta.get("image_size")

    def predict(self, batch: Sample) -> Prediction:
        feed = {}
        for name in self.meta["inputs"]:
            value = getattr(batch, name)
            if value is None:
                raise UserError(f"{self.path}: the graph needs {name!r}, which the input lacks")
            feed[name] = value.detach().cpu().numpy()
        outputs = self.session.run(self.meta["outputs"], feed)
        fields: dict[str, Any] = {}
        extras: dict[str, Tensor] = {}
        for name, value in zip(self.meta["outputs"], outputs):
            t = torch.from_numpy(np.asarray(value))
            if name.startswith(EXTRAS_PREFIX):
                extras[name[len(EXTRAS_PREFIX) :]] = t
            else:
                fields[name] = t
        size = None
        if batch.image is not None:
            size = (int(batch.image.shape[-2]), int(batch.image.shape[-1]))
        return Prediction(**fields, extras=extras, image_size=size)


def run_graph(run_dir: str | Path) -> OnnxPredictor:
    """The predictor of ``RUN/model.onnx``, exported first when missing or older than the run's
    weights (``kp3d infer --backend onnx``, ``kp3d.load(run, backend="onnx")``)."""
    from kp3d.engine.run import WEIGHTS_FILE

    run_dir = Path(run_dir)
    graph, weights = run_dir / GRAPH_FILE, run_dir / WEIGHTS_FILE
    if not graph.is_file() or graph.stat().st_mtime < weights.stat().st_mtime:
        logging.getLogger("kp3d.export").info("%s: exporting the ONNX graph first", graph)
        export_onnx(run_dir, graph)
    return OnnxPredictor(graph)
