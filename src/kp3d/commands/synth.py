"""``kp3d synth``: generate a synthetic category with exact ground truth and write it to disk.

Examples::

    kp3d synth creature --n 4000 --size 64 --seed 0 --out data/creature-train
    kp3d synth quadruped --n 500 --views 4 --out data/quadruped-mv
    kp3d synth creature --n 4000 --articulation 1.0 --out data/creature-wild
    kp3d synth creature --n 4000 --azimuth -90 90 --out data/creature-front
    kp3d synth face --n 2000 --pairs --sfm-dir ../shared/assets/sfm --out data/face-pairs
    kp3d synth face --n 500 --appearance shifted --sfm-dir ../shared/assets/sfm --out data/face-odd
    kp3d synth head --n 4000 --out data/head-train

The layout written is documented in :mod:`kp3d.data.adapters.synth`; the categories in
:mod:`kp3d.data.synth`. Image ``i`` depends only on ``--seed``, ``i`` and the options, whatever
``--workers``.

``--articulation A`` (``creature`` and ``quadruped`` only) sets how far poses stray from a
typical one: each joint angle is drawn from the middle fraction A of the joint's range. The
default, 0.3, keeps the poses near a typical one, like the instances of a real category; 1.0 uses
the whole ranges (a random-pose stress test); 0 puts every joint at its range's middle. It
changes only the joint angles: the same ``--seed`` gives the same viewpoints, proportions and
colours (the framing follows the pose). The value used is recorded in meta.json's ``options``.

``--azimuth LO HI`` (``creature`` and ``quadruped`` only) limits the camera's azimuth to
[LO, HI] degrees (0 sees the front, 90 the left side, 180 the back; default all around), e.g.
``-90 90`` for a collection without views from behind, as photographs of faces are. Recorded in
meta.json's ``options`` too.

``--appearance {default,shifted}`` (``face`` only) sets how faces are rendered. ``shifted`` keeps
the faces and head rotations the same ``--seed`` gives by default (identity, expression and pose
are drawn identically) but renders them with settings a default set never has: a smaller face
(45-65% of the image instead of 70-90%) further off centre, a harsh light from the side and
above, a colour cast and grey brows, and a saturated, busier background (the ranges are in
:mod:`kp3d.data.synth.face`), so a model trained on default faces can be scored out of
distribution. meta.json's ``options`` records the appearance used ("default" when not given).

``--rig V`` (``creature`` and ``quadruped`` only) renders a capture studio instead: V fixed,
calibrated cameras around a room (different azimuths and heights, all looking at the working
volume), one static background per camera (written to ``backgrounds/cam<v>.png``), and ``--n``
moments of one animal moving in the volume, cut into ``--sequences S`` smooth motion clips (one
individual each). Ground truth adds world joints (``joints3d``) and each moment's clip
(:mod:`kp3d.data.synth.rig`)::

    kp3d synth creature --rig 4 --sequences 20 --n 2000 --out data/creature-rig4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

CATEGORIES = ("creature", "quadruped", "face", "head")
APPEARANCES = ("default", "shifted")  # kp3d.data.synth.APPEARANCES, without importing torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("category", choices=CATEGORIES, help="what to generate")
    parser.add_argument(
        "--n", type=int, required=True, help="number of images (instances with --views/--pairs)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (must not exist, or be empty)"
    )
    parser.add_argument(
        "--size", type=int, default=64, help="image side in pixels, 32..256 (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--views", type=int, default=1, help="cameras per instance (default: %(default)s)"
    )
    parser.add_argument(
        "--pairs", action="store_true", help="render view pairs with a moderate relative rotation"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--sfm-dir",
        type=Path,
        default=None,
        help="Surrey Face Model folder (eos share/ layout), required for `face`",
    )
    parser.add_argument(
        "--articulation",
        type=float,
        default=None,
        metavar="A",
        help="creature/quadruped only: fraction of each joint's angle range that "
        "poses span, in [0, 1] (default: the category's 0.3 = poses span the "
        "middle 30%% of each range; 1.0 = full ranges)",
    )
    parser.add_argument(
        "--azimuth",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="creature/quadruped only: camera azimuth range in degrees, 0 = the "
        "front, 180 = the back (default: all around); -90 90 = front half",
    )
    parser.add_argument(
        "--appearance",
        choices=APPEARANCES,
        default=None,
        help="face only: how faces are rendered: default (the usual look; the default) or "
        "shifted (the same faces and poses, smaller and off centre, harsh side light, colour "
        "cast, grey brows, saturated busy background)",
    )
    parser.add_argument(
        "--rig",
        type=int,
        default=None,
        metavar="V",
        help="creature/quadruped only: a capture rig of V (2..8) fixed calibrated "
        "cameras in a room; --n counts moments",
    )
    parser.add_argument(
        "--sequences",
        type=int,
        default=None,
        metavar="S",
        help="with --rig: cut the moments into S smooth motion clips (default: 1)",
    )
    parser.add_argument(
        "--start", type=int, default=0, help="index of the first instance (default: %(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from kp3d.data.adapters.synth import check_write, write
    from kp3d.data.synth import check_appearance, check_articulation, check_azimuth, get_category
    from kp3d.errors import ConfigError

    # Before the --sfm-dir check: `face --articulation` is wrong whatever the model folder.
    check_articulation(args.category, args.articulation)
    check_azimuth(args.category, args.azimuth)
    check_appearance(args.category, args.appearance)
    if args.category == "face" and args.sfm_dir is None:
        raise ConfigError(
            "`face` renders the Surrey Face Model: pass --sfm-dir DIR, the folder of eos' share/ "
            "files sfm_shape_3448.bin, expression_blendshapes_3448.bin, ibug_to_sfm.txt and "
            "sfm_model_contours.json (e.g. --sfm-dir ../shared/assets/sfm)"
        )
    # What both the up-front check and the writer take from the flags.
    options: dict[str, Any] = {
        "size": args.size,
        "seed": args.seed,
        "views": args.views,
        "pairs": args.pairs,
        "start": args.start,
        "workers": args.workers,
        "overwrite": args.overwrite,
        "rig": args.rig,
        "sequences": args.sequences,
        "azimuth": args.azimuth,
    }
    check_write(args.out, args.n, category=args.category, **options)
    # A bad model folder fails before the bar.
    get_category(
        args.category,
        sfm_dir=args.sfm_dir,
        articulation=args.articulation,
        azimuth=args.azimuth,
        appearance=args.appearance,
    )
    console = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(
        TextColumn(f"synth {args.category}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("synth", total=args.n, rate="")

        def advance(k: int) -> None:
            bar.advance(task, k)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.0f}/s")

        out = write(
            args.out,
            args.category,
            args.n,
            sfm_dir=args.sfm_dir,
            articulation=args.articulation,
            appearance=args.appearance,
            progress=advance,
            **options,
        )
    dt = time.perf_counter() - t0
    console.print(
        f"wrote {args.n} {args.category} instances to {out} in {dt:.1f} s ({args.n / dt:.0f}/s)"
    )
    return 0
