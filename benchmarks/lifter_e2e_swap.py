"""Which half of ``lifter-e2e`` limits it (issue 25): every lifter on every detector's keypoints.

Reads the trained runs of one seed of ``benchmarks/lifter_e2e.py`` (``OUT/seedS/e2e``, the
two-stage ``OUT/seedS/detector`` and ``OUT/seedS/two-stage``) and scores, on the held-out
images, each of the two lifters (the end-to-end model's, which also reads its image context
vector, and the two-stage ``lifter``) on each source of 2D keypoints: the end-to-end model's
detections, the two-stage detector's, and the ground truth (with each category's labelled
visibility). The pairs ``e2e`` / ``e2e`` and ``detector`` / ``two-stage`` are the benchmark's
``e2e`` and ``two-stage`` rows again; ``ground truth`` / ``e2e`` is its ``gt2d`` row. Two oracle
sources split the end-to-end model's 2D error: its detections with every miss (a labelled
keypoint outside PCK@0.1) moved to the truth (``e2e, misses corrected``: what the remaining
small errors cost) or marked not visible (``e2e, misses hidden``: whether the lifter would do
better without them).

    python benchmarks/lifter_e2e_swap.py --data runs/lifter_e2e/data/test \\
        --e2e runs/lifter_e2e/seed0/e2e --detector runs/lifter_e2e/seed0/detector \\
        --lifter runs/lifter_e2e/seed0/two-stage --out runs/lifter_e2e_swap

Writes ``OUT/results.json`` and ``OUT/results.md`` (MPJPE and Stress in units of each sample's
2D RMS radius, with the mean 2D error of the keypoints the lifter read, and their PCK@0.1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _unsupervised import check_out_is_empty, write_results
from lifter_e2e import CATEGORIES, pck_hits, score
from torch import Tensor

CORRECTED, HIDDEN = "e2e, misses corrected", "e2e, misses hidden"
SOURCES = ("e2e", "detector", "ground truth", CORRECTED, HIDDEN)
LIFTERS = ("e2e", "two-stage")


def keypoints(model: Any, batch: Any, source: str) -> tuple[Tensor, Tensor]:
    """The 2D keypoints (B, K, 2) in pixels and their visibility (B, K) bool that ``source``
    gives for ``batch``: a ``lifter-e2e`` model's detections (visible where its probability
    exceeds 0.5 within the predicted category), the ground truth within each category's
    keypoints (``model.support``, as the benchmark's ``gt2d`` row), or the detections with their
    misses corrected or hidden (:data:`CORRECTED`, :data:`HIDDEN`)."""
    labelled = batch.vis & model.support[batch.category]
    if source == "ground truth":
        return batch.kp2d, labelled
    pred = model.predict(batch)
    kp, vis = pred.kp2d, pred.vis > 0.5
    if source in (CORRECTED, HIDDEN):
        miss = labelled & ~pck_hits(kp, batch.kp2d, labelled)
        if source == CORRECTED:
            kp = torch.where(miss[..., None], batch.kp2d, kp)
        else:
            vis = vis & ~miss
    return kp, vis


def swap_rows(
    e2e: Any, detector: Any, lifter: Any, test_set: Any
) -> list[tuple[str, str, dict[int, dict[str, float]]]]:
    """``(source, lifter, scores per category)`` for every source of :data:`SOURCES` and every
    lifter of :data:`LIFTERS`."""
    from kp3d.data.schema import Sample
    from kp3d.evaluation import collect
    from kp3d.methods.prediction import Prediction

    detectors = {"e2e": e2e, "detector": detector, "ground truth": e2e, CORRECTED: e2e, HIDDEN: e2e}

    def predictor(source: str, name: str) -> Callable[[Sample], Prediction]:
        def predict(batch: Sample) -> Prediction:
            kp, vis = keypoints(detectors[source], batch, source)
            if name == "e2e":
                context = e2e.detector(batch.image).context  # the image branch alone
                kp3d = e2e.ensemble_predictions(kp, vis, context)["kp3d"]
            else:
                kp3d = lifter.predict(Sample(kp2d=kp, vis=vis)).kp3d
            return Prediction(kp2d=kp, kp3d=kp3d)

        return predict

    rows = []
    with torch.no_grad():
        for source in SOURCES:
            for name in LIFTERS:
                run = collect(e2e, test_set, predict=predictor(source, name))
                kp2d = None if source == "ground truth" else run.pred.kp2d
                rows.append((source, name, score(run.pred.kp3d, run, kp2d, None)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="the benchmark's test mix")
    parser.add_argument("--e2e", type=Path, required=True, help="a lifter-e2e run")
    parser.add_argument("--detector", type=Path, required=True, help="the two-stage detector")
    parser.add_argument("--lifter", type=Path, required=True, help="the two-stage lifter run")
    parser.add_argument("--out", type=Path, default=Path("runs/lifter_e2e_swap"))
    parser.add_argument("--size", type=int, default=64, help="image side (pixels)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    check_out_is_empty(args.out)

    from kp3d.data.adapters import open_dataset
    from kp3d.engine.run import load_run
    from kp3d.errors import UserError

    models = []
    for path, method in (
        (args.e2e, "lifter-e2e"),
        (args.detector, "lifter-e2e"),
        (args.lifter, "lifter"),
    ):
        try:
            run = load_run(path)
        except UserError as e:
            sys.exit(f"error: {e}")
        if run.method_name != method:
            sys.exit(f"error: {path}: a {run.method_name} run; expected a {method} run")
        models.append(run.model)
    rows = swap_rows(*models, open_dataset(args.data, size=args.size))
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        "| 2D keypoints | lifter | category | MPJPE | Stress | 2D error | PCK@0.1 |",
        "|---|---|---|---|---|---|---|",
    ]
    flat = []
    for source, name, scores in rows:
        for z, r in scores.items():
            flat.append({"source": source, "lifter": name, "category": CATEGORIES[z], **r})
            pck, err = (f"{r[key]:.4f}" if key in r else "-" for key in ("pck", "error_2d"))
            lines.append(
                f"| {source} | {name} | {CATEGORIES[z]} | {r['mpjpe']:.4f} | {r['stress']:.4f} "
                f"| {err} | {pck} |"
            )
    table = "\n".join(lines) + (
        "\n\n(MPJPE, Stress and the 2D keypoints' mean error in units of each sample's 2D RMS "
        "radius)"
    )
    doc = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": flat}
    write_results(args.out, table, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
