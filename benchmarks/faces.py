"""Real-face benchmark (issue 5): unsupervised keypoints on ytfaces68, scored like AutoLink.

For each method (``autolink``, ``autolink3d``) and each K, train on ALL images of
``SHARED/data/ytfaces68`` (training/ and test/, labels unused), 64x64, whole image resized, for a
fixed budget (wall-clock, or CPU time with ``--clock cpu``); then fit the bias-free regression on
``training_landmarks.csv`` and test on ``test_landmarks.csv``: NME-5 (MAFL reduction, eye-centre
distance) and NME-68 (outer eye corners). Writes ``OUT/results.json``, ``OUT/results.md`` and a
keypoint-overlay montage per run (``OUT/METHOD-kK/montage.png``).

    python benchmarks/faces.py --shared ../shared --minutes 30 --k 8 16 --out runs/faces
    # one run per core, each with a budget of 20 minutes of CPU time:
    python benchmarks/faces.py --methods autolink --k 8 --threads 1 --clock cpu --minutes 20 &
    python benchmarks/faces.py --methods autolink3d --k 8 --threads 1 --clock cpu --minutes 20

Compare with the AutoLink anchor in ``SHARED/ANCHORS.md`` (same data and protocol; its budget:
30 wall-clock minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from _unsupervised import merge_results, train_and_score

COLUMNS = ["method", "k", "nme5", "nme68", "steps", "images", "wall_s", "cpu_s", "threads"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"),
                        help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/faces"))
    parser.add_argument("--methods", nargs="+", default=["autolink", "autolink3d"])
    parser.add_argument("--k", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per run")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="what --minutes measures: wall-clock or the process's CPU time")
    parser.add_argument("--steps", type=int, default=None, help="step budget instead of --minutes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra method-config values, e.g. n_basis=8 (JSON values)")
    args = parser.parse_args(argv)

    root = args.shared / "data" / "ytfaces68"
    if not (root / "training_landmarks.csv").is_file():
        print(f"error: {root} is missing: this benchmark needs the shared ytfaces68 data "
              "(pass --shared PATH)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    from kp3d.data.adapters import open_dataset

    extra = {kv.split("=", 1)[0]: json.loads(kv.split("=", 1)[1]) for kv in args.set}
    budget = ({"steps": args.steps, "minutes": None} if args.steps
              else {"steps": None, "minutes": args.minutes, "clock": args.clock})
    data = open_dataset(root, size=args.size)
    fit = open_dataset(root, size=args.size, split="training")
    test = open_dataset(root, size=args.size, split="test")
    rows = []
    for method in args.methods:
        for k in args.k:
            row = train_and_score(
                method, data, fit, test, args.out / f"{method}-k{k}",
                method_config={"k": k, "image_size": args.size, **extra},
                budget=budget, seed=args.seed,
            )
            row["budget"] = budget
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(merge_results(args.out, rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
