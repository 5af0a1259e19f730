"""End-to-end multi-category lifting from images (issue 25; Can et al., Tables 3-4): ``lifter-e2e``
on a mix of kp3d's ``creature`` and ``quadruped`` images.

Data (made once, cached under ``OUT/data``): ``kp3d synth`` sets of both categories, ``--train``
and ``--test`` instances per category (seeds 0 and 1), read as one multi-category set
(:mod:`kp3d.data.adapters.synth_mix`: the joint layout of K = 16 + 18 keypoints). Training sees
images, labelled 2D keypoints, visibility and category; never 3D.

Rows, each trained for the same budget per model (``--minutes`` of CPU time; with ``--steps``,
also that many steps, whichever comes first):

(-) ``baselines``: the lifting protocol's ``flat`` (ground-truth 2D keypoints at zero depth)
    and ``mean shape`` (each category's mean training 3D shape rotated onto them; 3D labels);

(a) ``e2e``: ``lifter-e2e``; 3D from its own detected keypoints;
(b) ``gt2d``: the same model's lifter on the ground-truth 2D keypoints and visibility (with the
    context vector of the image);
(c) ``two-stage``: the detector alone (``lifter-e2e`` whose lifter never joins), then ``lifter``
    trained on the detector's keypoints of the training images (second budget), 3D from the
    detector's keypoints of the test images;
(d) ``per-category``: one ``lifter-e2e`` per category, on its own keypoints only.

Scores on the held-out images, per category (kp3d's lifting protocol,
:func:`kp3d.evaluation.evaluate_lifting`, in units of each sample's 2D RMS radius): MPJPE
(depth flip allowed) and Stress over the visible keypoints; the detected 2D keypoints' mean
error in the same unit and their PCK@0.1 (visible ground-truth keypoints within 0.1 x the
longer side of their bounding box);
category accuracy. Two seeds by default; ``results.md`` has one row per seed, row and category.

    nice .venv/bin/python benchmarks/lifter_e2e.py --minutes 15 --clock cpu --threads 1 \\
        --out runs/lifter_e2e

Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _unsupervised import add_list_argument, check_out_is_empty, parse_set, write_results
from torch import Tensor

CATEGORIES = ("creature", "quadruped")
ROWS = ("baselines", "e2e", "gt2d", "two-stage", "per-category")


def make_data(root: Path, n_train: int, n_test: int, size: int) -> dict[str, Path]:
    """The cached synth sets: ``train`` and ``test`` mixes (folders of one set per category)."""
    from kp3d.data.adapters import synth

    out = {}
    for split, seed, n in (("train", 0, n_train), ("test", 1, n_test)):
        for name in CATEGORIES:
            folder = root / split / name
            if not (folder / "meta.json").exists():
                synth.write(folder, name, n, size=size, seed=seed)
        out[split] = root / split
    return out


def pck_hits(pred: Tensor, gt: Tensor, vis: Tensor, *, alpha: float = 0.1) -> Tensor:
    """(N, K) bool: the predictions (N, K, 2) within ``alpha`` x the longer side of the bounding
    box of the visible (``vis`` (N, K)) ground-truth keypoints (N, K, 2)."""
    v = vis.bool()
    inf = torch.tensor(float("inf"))
    lo = torch.where(v[..., None], gt, inf).amin(-2)
    hi = torch.where(v[..., None], gt, -inf).amax(-2)
    side = (hi - lo).amax(-1).clamp_min(1e-6)
    return (pred - gt).norm(dim=-1) <= alpha * side[:, None]


def pck(pred: Tensor, gt: Tensor, vis: Tensor, *, alpha: float = 0.1) -> float:
    """PCK@``alpha``: the fraction of visible ground-truth keypoints that :func:`pck_hits`."""
    return float(pck_hits(pred, gt, vis, alpha=alpha)[vis.bool()].float().mean())


def error_2d(pred: Tensor, gt: Tensor, vis: Tensor) -> float:
    """Mean distance of the predictions (N, K, 2) from the visible (``vis`` (N, K))
    ground-truth keypoints (N, K, 2), in units of each sample's 2D RMS radius (the lifting
    protocol's unit, so comparable with MPJPE)."""
    from kp3d.geometry import normalise_keypoints

    v = vis.bool()
    scale = normalise_keypoints(gt, v).scale
    return float(((pred - gt).norm(dim=-1) / scale[:, None])[v].mean())


def train_run(
    method: str, data: Any, run_dir: Path, config: dict[str, Any], budget: dict[str, Any]
) -> tuple[Any, float]:
    """Train ``method`` in-process with its own training defaults (``kp3d train``'s) under
    ``budget``; returns the model (eval mode) and its CPU seconds."""
    from kp3d.engine import train

    c0 = time.process_time()
    result = train(
        method,
        data,
        run_dir,
        method_config=config,
        # A mapping, not a TrainConfig: the method's train_defaults (lr, fp32) then apply.
        train_config={"device": "cpu", "log_every": 50, **budget},
        progress_bar=False,
    )
    return result.model.eval(), time.process_time() - c0


def budget_of(args: argparse.Namespace) -> dict[str, Any]:
    """Every model's training budget: ``--minutes`` and ``--steps`` as given (None: no step
    limit)."""
    return {
        "minutes": args.minutes,
        "clock": args.clock,
        "steps": args.steps,
        "batch_size": args.batch_size,
    }


def baselines(train_set: Any, test_set: Any) -> dict[str, dict[int, dict[str, float]]]:
    """The lifting protocol's two baselines per category, the same for every model and seed:
    ``flat`` (the ground-truth 2D keypoints at zero depth) and ``mean shape`` (each category's
    mean training 3D shape, rotated onto the 2D keypoints: it uses 3D labels)."""
    from kp3d.data.schema import collate
    from kp3d.evaluation import evaluate_lifting

    def labels(dataset: Any) -> Any:
        batch = collate([dataset[i] for i in range(len(dataset))])
        return batch.replace(image=None)

    fit, test = labels(train_set), labels(test_set)
    result = evaluate_lifting(torch.zeros_like(test.kp3d), test, fit=fit)
    return {
        name: {
            int(z): {"mpjpe": r[key]["mpjpe"]["norm"], "stress": r[key]["stress"]["norm"]}
            for z, r in result["per_category"].items()
        }
        for name, key in (("flat", "flat"), ("mean shape (3D labels)", "mean_shape"))
    }


def score(kp3d: Tensor, test: Any, kp2d: Tensor | None, category: Tensor | None) -> dict:
    """Per category: ``mpjpe``, ``stress``, ``error_2d`` (normalised units), ``pck`` and
    ``accuracy``."""
    from kp3d.evaluation import evaluate_lifting

    gt = test.gt
    result = evaluate_lifting(kp3d, gt)
    if "per_category" in result:
        assert gt.category is not None
        parts = {int(z): (r, gt.category == int(z)) for z, r in result["per_category"].items()}
    else:  # one category: every row
        label = 0 if gt.category is None else int(gt.category[0])
        parts = {label: (result, torch.ones(len(kp3d), dtype=torch.bool))}
    out = {}
    for z, (r, rows) in parts.items():
        row = {"mpjpe": r["method"]["mpjpe"]["norm"], "stress": r["method"]["stress"]["norm"]}
        if kp2d is not None:
            row["pck"] = pck(kp2d[rows], gt.kp2d[rows], gt.vis[rows])
            row["error_2d"] = error_2d(kp2d[rows], gt.kp2d[rows], gt.vis[rows])
        if category is not None and gt.category is not None:
            row["accuracy"] = float((category[rows] == gt.category[rows]).float().mean())
        out[z] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/lifter_e2e"))
    # 1000 a category overfitted: the detector's PCK@0.1 was 0.67 on training images and 0.47 on
    # held-out ones after 15 CPU-minutes (docs/results.md); 5000 takes about a minute to render.
    parser.add_argument("--train", type=int, default=5000, help="training images per category")
    parser.add_argument("--test", type=int, default=200, help="test images per category")
    parser.add_argument("--size", type=int, default=64, help="image side (pixels)")
    parser.add_argument("--minutes", type=float, default=15.0, help="budget of every model")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument(
        "--steps", type=int, default=None, help="a step limit too (the first reached ends a run)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    add_list_argument(
        parser, "--set", metavar="KEY=VALUE", help="lifter-e2e config values (JSON values)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    check_out_is_empty(args.out)
    extra = parse_set(args.set)

    from kp3d.data.adapters import open_dataset
    from kp3d.data.schema import Sample
    from kp3d.evaluation import collect
    from kp3d.methods.prediction import Prediction

    paths = make_data(args.out / "data", args.train, args.test, args.size)
    train_set = open_dataset(paths["train"], size=args.size)
    test_set = open_dataset(paths["test"], size=args.size)
    budget = budget_of(args)
    config = {"image_size": args.size, **extra}
    rows: list[dict[str, Any]] = []

    def add(seed: int, row: str, scores: dict, cpu_s: float) -> None:
        for z, r in scores.items():
            name = CATEGORIES[z]
            rows.append({"seed": seed, "row": row, "category": name, **r, "cpu_s": cpu_s})
            print(rows[-1], flush=True)

    if "baselines" in args.rows:
        for name, scores in baselines(train_set, test_set).items():
            for z, r in scores.items():
                rows.append({"seed": "-", "row": name, "category": CATEGORIES[z], **r, "cpu_s": 0})
    for seed in args.seeds:
        run = args.out / f"seed{seed}"
        b = {**budget, "seed": seed}
        if {"e2e", "gt2d"} & set(args.rows):
            model, cpu = train_run("lifter-e2e", train_set, run / "e2e", config, b)
            test = collect(model, test_set)
            if "e2e" in args.rows:
                p = test.pred
                add(seed, "e2e", score(p.kp3d, test, p.kp2d, p.extras["category"]), cpu)
            if "gt2d" in args.rows:

                def on_gt(batch: Sample, model=model) -> Prediction:
                    det = model.detector(batch.image)
                    vis = batch.vis & model.support[batch.category]
                    pred = model.ensemble_predictions(batch.kp2d, vis, det.context)
                    return Prediction(kp3d=pred["kp3d"])

                gt_run = collect(model, test_set, predict=on_gt)
                add(seed, "gt2d", score(gt_run.pred.kp3d, gt_run, None, None), cpu)
        if "two-stage" in args.rows:
            detector_only = {**config, "detector_steps": 10**9, "cycle_start": None}
            det, cpu_det = train_run("lifter-e2e", train_set, run / "detector", detector_only, b)
            fit = collect(det, train_set)
            npz = run / "detector-keypoints.npz"
            np.savez(
                npz,
                kp2d=fit.pred.kp2d.numpy(),
                vis=(fit.pred.vis > 0.5).numpy(),
                category=fit.pred.extras["category"].numpy(),
            )
            lifter, cpu_lift = train_run(
                "lifter",
                open_dataset(npz, format="keypoints_npz"),
                run / "two-stage",
                {"n_categories": len(CATEGORIES)},
                {**b, "batch_size": 256},
            )
            test = collect(det, test_set)
            p = test.pred
            with torch.no_grad():
                kp3d = lifter.predict(Sample(kp2d=p.kp2d, vis=p.vis > 0.5)).kp3d
            add(
                seed,
                "two-stage",
                score(kp3d, test, p.kp2d, p.extras["category"]),
                cpu_det + cpu_lift,
            )
        if "per-category" in args.rows:
            for z, name in enumerate(CATEGORIES):
                own_train = open_dataset(paths["train"] / name, size=args.size)
                own_test = open_dataset(paths["test"] / name, size=args.size)
                model, cpu = train_run("lifter-e2e", own_train, run / f"only-{name}", config, b)
                test = collect(model, own_test)
                (s,) = score(test.pred.kp3d, test, test.pred.kp2d, None).values()
                add(seed, "per-category", {z: s}, cpu)

    def fmt(r: dict, key: str) -> str:
        return f"{r[key]:.4f}" if key in r else "-"

    lines = [
        "| seed | row | category | MPJPE | Stress | 2D error | PCK@0.1 | category acc. | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['row']} | {r['category']} | {fmt(r, 'mpjpe')} "
            f"| {fmt(r, 'stress')} | {fmt(r, 'error_2d')} | {fmt(r, 'pck')} | {fmt(r, 'accuracy')} "
            f"| {r['cpu_s']:.0f} |"
        )
    table = "\n".join(lines) + (
        "\n\n(MPJPE, Stress and the detected keypoints' mean 2D error in units of each sample's "
        "2D RMS radius)"
    )
    doc = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    write_results(args.out, table, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
