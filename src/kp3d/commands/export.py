"""``kp3d export``: a trained run as an ONNX graph (see :mod:`kp3d.engine.export`).

The graph takes a batch of images ``image`` (B, 3, S, S), RGB in [0, 1], S the run's image
size, and returns the method's prediction fields under their own names in pixels of that
input (``kp2d``, ``kp3d``, ``kp3d_image``, ``R``, ...; heatmaps left out). Run it with
onnxruntime, or with ``kp3d infer --backend onnx``, which resizes the images and maps every
pixel field back to each image's own size.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, metavar="RUN", help="a run folder")
    parser.add_argument(
        "--format", choices=("onnx",), default="onnx", help="graph format (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="default: RUN/model.onnx"
    )


def run(args: argparse.Namespace) -> int:
    from kp3d.engine.export import GRAPH_FILE, export_onnx

    out = args.out or args.run / GRAPH_FILE
    result = export_onnx(args.run, out)
    print(
        f"wrote {result.path}: inputs {', '.join(result.inputs)}; "
        f"outputs {', '.join(result.outputs)}"
    )
    return 0
