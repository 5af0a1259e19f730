"""Flagship quality benchmark (issue 4): autolink3d against the 2D-only autolink on ``creature``.

Synthesises (once, cached under ``OUT/data``) a training and a held-out test set of the
procedural ``creature`` category (16 joints, camera all around, random colours and
backgrounds), trains each method unsupervised on the training images for a fixed budget, and
scores it with kp3d's harness, the regression fitted on the training set's labels:

* ``nme``: 2D NME of the bias-free linear regression to the 16 ground-truth joints (visible
  joints only), normalised by the ground-truth box ``sqrt(w h)``;
* ``nme3d``: the same with a 3K -> 3L regression from the discovered 3D keypoints to the exact
  3D joints (brought into the image frame, depth centred per image);
* ``nme3d_depth``: that regression from the discovered 2D keypoints with the 3D head's depth;
* ``nme3d_flat_baseline``: from the discovered 2D keypoints at the mean depth. The 3D head is
  worth something only if ``nme3d_depth`` (and ``nme3d``) are clearly below it;
* ``nme_lr``, ``nme3d_lr``, ``nme3d_depth_lr``, ``nme3d_flat_baseline_lr``: the same under
  AutoLink's Human3.6M protocol, which forgives left/right swaps (each image is scored against
  its ground truth with left and right joints exchanged where that fits better): keypoints on
  the symmetric creature tend to follow the side of the image, not of the body;
* ``rotation_spread_deg``: mean angle of the 3D head's rotations from their mean (the camera
  goes all around the creature, so a head that has learned poses spreads them widely; near 0 it
  is a 2D template).

    python benchmarks/creature.py --minutes 20 --clock cpu --threads 1 --out runs/creature
    # one run per core:
    python benchmarks/creature.py --methods autolink --threads 1 --clock cpu --minutes 20 &
    python benchmarks/creature.py --methods autolink3d --threads 1 --clock cpu --minutes 20

Writes ``OUT/results.json``, ``OUT/results.md``, a montage per run and, with ``--report``,
``kp3d evaluate``'s JSON and the HTML report of each run (``OUT/METHOD-kK/eval.json``,
``report.html``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _unsupervised import add_run_arguments, merge_results, run_grid

ALL_AROUND = [0.0, 360.0]
"""The generator's default camera azimuth range, degrees."""

COLUMNS = [
    "method",
    "k",
    "nme",
    "nme3d",
    "nme3d_depth",
    "nme3d_flat_baseline",
    "nme_lr",
    "nme3d_lr",
    "nme3d_depth_lr",
    "nme3d_flat_baseline_lr",
    "rotation_spread_deg",
    "tracks_sv3",
    "tracks_sv3_gt",
    "steps",
    "images",
    "cpu_s",
    "threads",
]


def synthesise(
    folder: Path, n: int, seed: int, size: int, azimuth: list[float] | None = None
) -> Path:
    """The set in ``folder``, generated unless it is there; a cached set drawn with another
    azimuth range is an error, not silently reused."""
    from kp3d.cli import main as kp3d

    meta = folder / "meta.json"
    if not meta.exists():
        view = [] if azimuth is None else ["--azimuth", *map(str, azimuth)]
        code = kp3d(
            [
                "synth",
                "creature",
                "--n",
                str(n),
                "--seed",
                str(seed),
                "--size",
                str(size),
                *view,
                "--out",
                str(folder),
                "--overwrite",
            ]
        )
        if code:
            raise SystemExit(f"kp3d synth failed for {folder} (exit {code})")
    # Sets from before the option went all around.
    have = [float(a) for a in json.loads(meta.read_text())["options"].get("azimuth") or ALL_AROUND]
    want = [float(a) for a in azimuth or ALL_AROUND]
    if have != want:
        raise SystemExit(
            f"{folder} was generated with --azimuth {have[0]:g} {have[1]:g}, not "
            f"{want[0]:g} {want[1]:g}; use another --out"
        )
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(parser, out="runs/creature", k=[16], minutes=20.0, clock="cpu")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--report", action="store_true", help="also write each run's report")
    parser.add_argument(
        "--azimuth",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="camera azimuth range of both sets, degrees (default: all around; "
        "-90 90: no views from behind)",
    )
    args = parser.parse_args(argv)

    from kp3d.cli import main as kp3d
    from kp3d.data.adapters import open_dataset

    train_dir = synthesise(
        args.out / "data" / "creature-train", args.n_train, 0, args.size, args.azimuth
    )
    test_dir = synthesise(
        args.out / "data" / "creature-test", args.n_test, 1, args.size, args.azimuth
    )
    data = open_dataset(train_dir, size=args.size)
    test = open_dataset(test_dir, size=args.size)

    def report(run_dir: Path, row: dict[str, Any]) -> None:
        kp3d(
            [
                "evaluate",
                "--run",
                str(run_dir),
                "--data",
                str(test_dir),
                "--fit",
                str(train_dir),
                "--json",
                str(run_dir / "eval.json"),
            ]
        )
        kp3d(
            [
                "report",
                "--run",
                str(run_dir),
                "--data",
                str(test_dir),
                "--out",
                str(run_dir / "report.html"),
            ]
        )
        row["report"] = str(run_dir / "report.html")

    rows = run_grid(
        args, data, data, test, after=report if args.report else None, data_path=train_dir
    )
    print(merge_results(args.out, rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
