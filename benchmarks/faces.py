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
    # with training augmentation (any method setting: --set KEY=VALUE, dotted for nested ones):
    python benchmarks/faces.py --k 8 --set augment.flip=0.5 augment.scale=0.1 --out runs/faces-aug

Compare with the AutoLink anchor in ``SHARED/ANCHORS.md`` (same data and protocol; its budget:
30 wall-clock minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _unsupervised import add_run_arguments, merge_results, run_grid

COLUMNS = ["method", "k", "nme5", "nme68", "steps", "images", "wall_s", "cpu_s", "threads"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path("../shared"), help="the shared data folder"
    )
    add_run_arguments(parser, out="runs/faces", k=[8, 16], minutes=30.0, clock="wall")
    args = parser.parse_args(argv)

    root = args.shared / "data" / "ytfaces68"
    if not (root / "training_landmarks.csv").is_file():
        print(
            f"error: {root} is missing: this benchmark needs the shared ytfaces68 data "
            "(pass --shared PATH)",
            file=sys.stderr,
        )
        return 2

    from kp3d.data.adapters import open_dataset

    data = open_dataset(root, size=args.size)
    fit = open_dataset(root, size=args.size, split="training")
    test = open_dataset(root, size=args.size, split="test")
    rows = run_grid(args, data, fit, test, data_path=root)
    print(merge_results(args.out, rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
