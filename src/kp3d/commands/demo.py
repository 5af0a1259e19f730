"""``kp3d demo``: the README's main job, end to end on built-in data.

It runs the same sub-commands a user would, in order: ``synth`` a training and a held-out test
set of a built-in procedural category (``--category``: ``creature``, a biped seen all around;
``quadruped``; ``head``, a textured head turning +-60 degrees, whose landmarks move in depth),
``train`` the flagship ``autolink3d`` for a few minutes, ``evaluate`` it (2D NME after the
linear regression fitted on the training set's labels, 3D NME against the exact 3D keypoints),
and write the HTML ``report``, which says in plain words what the run recovered in 3D. Finished
steps are not repeated when the demo is run again with the same ``--out`` (the data folders are
named after the category).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)

DEMO_CATEGORIES = ("head", "creature", "quadruped")
"""The built-in categories the demo can use (``face`` needs a third-party model)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="training budget in minutes (default: %(default)s)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training budget in steps (overrides --minutes)"
    )
    parser.add_argument(
        "--n-train", type=int, default=4000, help="training images (default: %(default)s)"
    )
    parser.add_argument(
        "--n-test", type=int, default=500, help="held-out test images (default: %(default)s)"
    )
    parser.add_argument("--size", type=int, default=64, help="image size (default: %(default)s)")
    parser.add_argument(
        "--k", type=int, default=16, help="keypoints to discover (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--category",
        choices=DEMO_CATEGORIES,
        default="creature",
        help="built-in synthetic category to train on (default: %(default)s)",
    )


def _step(title: str, argv: list[str]) -> None:
    from kp3d.cli import main
    from kp3d.errors import UserError

    console.rule(f"[bold]{title}")
    console.print("[dim]$ kp3d " + " ".join(argv))
    t0 = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise UserError(f"step '{title}' failed (exit {code})")
    console.print(f"[dim]{title}: {time.perf_counter() - t0:.1f} s")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    category: str = args.category
    train_dir, test_dir = out / f"{category}-train", out / f"{category}-test"
    run_dir = out / "run"
    common = ["--size", str(args.size)]
    if not (train_dir / "meta.json").exists():
        _step(
            "synthesise training set",
            [
                "synth",
                category,
                "--n",
                str(args.n_train),
                "--seed",
                str(args.seed),
                "--out",
                str(train_dir),
                *common,
            ],
        )
    if not (test_dir / "meta.json").exists():
        _step(
            "synthesise test set",
            [
                "synth",
                category,
                "--n",
                str(args.n_test),
                "--seed",
                str(args.seed + 1),
                "--out",
                str(test_dir),
                *common,
            ],
        )
    budget = ["--steps", str(args.steps)] if args.steps else ["--minutes", str(args.minutes)]
    train_argv = [
        "train",
        "--method",
        "autolink3d",
        "--data",
        str(train_dir),
        "--out",
        str(run_dir),
        "--k",
        str(args.k),
        "--seed",
        str(args.seed),
        *budget,
        *common,
    ]
    if (run_dir / "config.json").exists():
        train_argv.append("--resume")
    _step("train autolink3d", train_argv)
    eval_json = run_dir / "eval.json"
    _step(
        "evaluate",
        [
            "evaluate",
            "--run",
            str(run_dir),
            "--data",
            str(test_dir),
            "--fit",
            str(train_dir),
            "--json",
            str(eval_json),
        ],
    )
    report = run_dir / "report.html"
    _step("report", ["report", "--run", str(run_dir), "--out", str(report)])
    console.rule("[bold green]done")
    console.print(
        f"report:  {report.resolve()}\nmetrics: {eval_json.resolve()}\nrun:     {run_dir.resolve()}"
    )
    return 0
