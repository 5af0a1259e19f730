"""Unsup3d on synthetic faces (issue 23): depth from single images, scored with Unsup3d's protocol.

Data: ``kp3d synth face`` (Surrey Face Model faces with exact depth and masks, needs
``SHARED/assets/sfm``), a training set and a held-out test set with different seeds, 64x64,
generated once into ``OUT/data/`` (reused by later runs with the same sizes and seeds). For each
variant and each seed, ``unsup3d`` trains on the training images (labels unused) for a budget
of CPU minutes (``--clock cpu``: the process's CPU time, which other jobs on a shared machine do
not eat into) and is scored on the test set by the ``surface_depth`` protocol
(:func:`kp3d.evaluation.evaluate_surface_depth`: SIDE and MAD over the ground-truth mask
eroded by 1 px) beside its two baselines on the same images: constant null depth and the
average ground-truth depth map of the training set. Training uses ``unsup3d``'s own defaults
(``kp3d train``'s: Adam 1e-4, batches of 64) unless ``--train`` overrides them.

Variants (method-config overrides of :class:`kp3d.methods.unsup3d.Unsup3DConfig`, the paper's
Table 3 ablations):

=================  ===========================  ============================================
variant            override                     what it removes
=================  ===========================  ============================================
full               (none)                       nothing
no_flip            ``use_flip=false``           the flipped reconstruction (symmetry prior)
no_confidence      ``use_confidence=false``     the confidence maps (plain L1 / L2)
no_perceptual      ``perceptual=none``          the perceptual term
=================  ===========================  ============================================

The issue's goal: on held-out faces, SIDE <= 0.5 x and MAD <= 0.8 x the average-depth baseline
(the columns ``side_ratio`` and ``mad_ratio``). Whether the viewpoint network learned the
head's turn: ``yaw_spread_deg`` and ``yaw_corr`` (:func:`view_yaw`). Running a finished
variant and seed again re-scores its run without training further. Writes
``OUT/results.json`` (rows merged by variant and seed, so several processes may share OUT,
e.g. one per core) and ``OUT/results.md``::

    python benchmarks/unsup3d_faces.py --shared ../shared --minutes 60 --seeds 0 1 \\
        --threads 1 --out runs/unsup3d_faces
    # the ablations, each in its own process, started once OUT/data/ is complete (the first
    # process writes it; two processes must not generate it at once):
    python benchmarks/unsup3d_faces.py --variants no_flip --minutes 60 --seeds 0 1 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _unsupervised import add_list_argument, parse_set
from faces3d import signed_head_yaw_deg

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_flip": {"use_flip": False},
    "no_confidence": {"use_confidence": False},
    "no_perceptual": {"perceptual": "none"},
}
"""Method-config overrides of each variant (the ablations of Unsup3d's Table 3)."""

COLUMNS = [
    "variant",
    "seed",
    "side",
    "mad_deg",
    "side_ratio",
    "mad_ratio",
    "side_average_baseline",
    "mad_deg_average_baseline",
    "side_null_baseline",
    "mad_deg_null_baseline",
    "yaw_spread_deg",
    "yaw_corr",
    "steps",
    "s_per_step",
    "train_clock_s",
    "clock",
    "threads",
]


def make_sets(
    shared: Path, out: Path, *, n_train: int, n_test: int, size: int
) -> tuple[Path, Path]:
    """``OUT/data/train`` (seed 1000) and ``OUT/data/test`` (seed 2000) by ``kp3d synth face``,
    unless they exist with the same options."""
    from kp3d.cli import main as kp3d

    sfm = shared / "assets" / "sfm"
    sets = []
    for name, n, seed in (("train", n_train, 1000), ("test", n_test, 2000)):
        folder = out / "data" / f"{name}-n{n}-s{size}-seed{seed}"
        if not (folder / "images").is_dir():
            args = ["synth", "face", "--n", str(n), "--size", str(size), "--seed", str(seed)]
            args += ["--sfm-dir", str(sfm), "--out", str(folder), "--overwrite"]
            if kp3d(args) != 0:
                sys.exit(f"error: kp3d synth face failed for {folder}")
        sets.append(folder)
    return sets[0], sets[1]


def ground_truth(dataset: Any) -> Any:
    """The fit side of the protocol without predictions (its average-depth baseline reads only
    the ground-truth depth and masks of the training set): a
    :class:`kp3d.evaluation.Collected`."""
    from torch.utils.data import DataLoader

    from kp3d.data.schema import Sample, collate
    from kp3d.evaluation import Collected
    from kp3d.methods.prediction import Prediction

    depth, mask = [], []
    for batch in DataLoader(dataset, batch_size=256, collate_fn=collate):
        depth.append(batch.depth)
        mask.append(batch.mask)
    gt = Sample(depth=torch.cat(depth), mask=torch.cat(mask))
    return Collected(Prediction(), gt, tuple(gt.depth.shape[-2:]))


def view_yaw(view: torch.Tensor, extrinsics: torch.Tensor) -> dict[str, float]:
    """Whether the viewpoint network learned the head's turn: the spread (standard deviation,
    degrees) of the predicted yaw ``view[:, 1]`` (radians, (N, 6)) over the test images beside
    the generator's own (:func:`faces3d.signed_head_yaw_deg` of its cameras, (N, 3, 4)), and
    their Pearson correlation (its sign is the two conventions')."""
    pred = torch.rad2deg(view[:, 1].double())
    true = signed_head_yaw_deg(extrinsics.double())
    corr = torch.corrcoef(torch.stack((pred, true)))[0, 1]
    return {
        "yaw_spread_deg": float(pred.std()),
        "true_yaw_spread_deg": float(true.std()),
        "yaw_corr": float(corr),
    }


def train_and_score(
    variant: str,
    seed: int,
    train_set: Path,
    test_set: Path,
    run_dir: Path,
    *,
    budget: dict[str, Any],
    size: int,
    extra: dict[str, Any],
    train_extra: dict[str, Any],
) -> dict[str, Any]:
    """Train one variant with one seed (resuming ``run_dir``) and score it on ``test_set``.

    The training settings are ``unsup3d``'s own defaults (as ``kp3d train`` resolves them) with
    ``budget`` and ``train_extra`` over them."""
    from kp3d.data.adapters import open_dataset
    from kp3d.engine import load_run, train
    from kp3d.evaluation import collect, evaluate_surface_depth

    data = open_dataset(train_set, size=size)
    test = open_dataset(test_set, size=size)
    t0, c0 = time.perf_counter(), time.process_time()
    done = train(
        "unsup3d",
        data,
        run_dir,
        method_config={"image_size": size, **VARIANTS[variant], **extra},
        # A mapping, not a TrainConfig: the method's train_defaults then apply (lr, batch).
        train_config={"seed": seed, **budget, **train_extra},
        resume=(run_dir / "config.json").exists(),
        data_info={"path": str(train_set.resolve()), "size": size, "format": None},
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    run = load_run(run_dir)
    with torch.no_grad():
        collected = collect(run.model, test)
        scores = evaluate_surface_depth(ground_truth(data), collected)
    values = {k: r["value"] for k, r in scores.items() if isinstance(r, dict) and "value" in r}
    assert collected.gt.extrinsics is not None
    yaw = view_yaw(collected.pred.extras["view"], collected.gt.extrinsics)
    return {
        "variant": variant,
        "seed": seed,
        **values,
        "side_ratio": values["side"] / values["side_average_baseline"],
        "mad_ratio": values["mad_deg"] / values["mad_deg_average_baseline"],
        **yaw,
        "counts": scores["counts"],
        "steps": done.steps,
        # The run's own clock over all its sessions (a re-run to re-score trains no further).
        "train_clock_s": round(done.elapsed_s, 1),
        "clock": run.train_config.clock,
        "s_per_step": round(done.elapsed_s / max(1, done.steps), 3),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "threads": torch.get_num_threads(),
        "budget": budget,
        "config": {**VARIANTS[variant], **extra},
        "train": {k: getattr(run.train_config, k) for k in ("lr", "batch_size", "bf16")},
    }


def merge_results(out: Path, rows: list[dict[str, Any]]) -> str:
    """Merge ``rows`` into ``out/results.json`` by (variant, seed); rewrite ``results.md``."""
    from kp3d.engine.atomic import atomic_write_text

    path = out / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else []
    done = {(r["variant"], r["seed"]) for r in rows}
    merged = [r for r in previous if (r["variant"], r["seed"]) not in done] + rows
    order = list(VARIANTS)
    merged.sort(key=lambda r: (order.index(r["variant"]), r["seed"]))
    atomic_write_text(path, json.dumps(merged, indent=2))

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |" for r in merged]
    table = "\n".join(lines) + "\n"
    atomic_write_text(out / "results.md", table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("runs/unsup3d_faces"))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--minutes", type=float, default=60.0, help="CPU minutes per run")
    parser.add_argument("--steps", type=int, default=None, help="step budget instead")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=500)
    add_list_argument(
        parser,
        "--set",
        metavar="KEY=VALUE",
        help="extra unsup3d config values for every variant, e.g. width=32",
    )
    add_list_argument(
        parser,
        "--train",
        metavar="KEY=VALUE",
        help="training settings over unsup3d's defaults, e.g. lr=0.001 batch_size=32",
    )
    args = parser.parse_args(argv)

    sfm = args.shared / "assets" / "sfm"
    if not sfm.is_dir():
        print(
            f"error: {sfm} is missing: kp3d synth face needs the Surrey Face Model "
            "(pass --shared PATH)",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = parse_set(args.set)
    train_extra = parse_set(args.train, flag="--train")
    budget = (
        {"steps": args.steps, "minutes": None}
        if args.steps
        else {"steps": None, "minutes": args.minutes, "clock": "cpu"}
    )
    args.out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = make_sets(
        args.shared, args.out, n_train=args.n_train, n_test=args.n_test, size=args.size
    )
    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            row = train_and_score(
                variant,
                seed,
                train_set,
                test_set,
                args.out / f"{variant}-seed{seed}",
                budget=budget,
                size=args.size,
                extra=extra,
                train_extra=train_extra,
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(merge_results(args.out, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
