"""Robust face keypoints (issue 24): a model trained on ``kp3d synth face`` only, scored in 2D on
faces of its training appearance, on faces of an appearance it never saw, and on real photos.

Each run trains ``--methods`` x ``--variants`` x ``--k`` on ``--n-train`` synthetic faces
(seed 0, the default appearance) for the same budget (``--minutes`` of CPU time on
``--threads`` threads), then scores its keypoints with kp3d's discovery protocol (the
bias-free regression from the K keypoints to the landmarks, fitted on labelled images of the
test's own domain; NME-68 with the outer-eye-corner distance, NME-5 with the eye-centre
distance) on three domains:

``synth``
    faces of the training appearance: fitted on the first ``--fit`` training faces, scored on
    ``--n-test`` faces of seed 1;
``shifted``
    ``kp3d synth face --appearance shifted`` (smaller, off-centre faces, harsh side light, a
    colour cast, saturated backgrounds: :mod:`kp3d.data.synth.face`), fitted on ``--n-test``
    faces of seed 2, scored on ``--n-test`` faces of seed 3;
``real``
    the photos of ``SHARED/data/ytfaces68``, fitted on ``training_landmarks.csv``, scored on
    ``test_landmarks.csv`` (``benchmarks/faces.py``'s protocol, whose models train on the photos
    themselves).

Variants: ``plain`` (no augmentation) and ``augment`` (:data:`AUGMENT`: photometric, scale
and translation jitter, new backgrounds, AutoLink's horizontal flips; ``--set`` adds or
overrides method-config values for every variant).

    python benchmarks/face_robustness.py --shared ../shared --minutes 30 --clock cpu \\
        --threads 1 --out runs/face_robustness

Writes ``OUT/results.json`` and ``OUT/results.md`` (rows merged by method, variant and K, so
one process per core can share ``OUT``); data sets go to ``--data`` (default ``OUT/data``),
runs to ``OUT/METHOD-VARIANT-kK`` (an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _unsupervised import add_run_arguments, merge_results, parse_set, run_budget, train_timed
from torch.utils.data import Dataset, Subset

AUGMENT: dict[str, float] = {
    "brightness": 0.3,
    "contrast": 0.3,
    "saturation": 0.3,
    "hue": 0.05,
    "scale": 0.15,
    "translate": 0.08,
    "background": 0.5,
    "flip": 0.5,
}
"""The ``augment`` variant's settings (:class:`kp3d.data.augment.AugmentConfig`)."""

VARIANTS: dict[str, dict[str, float]] = {"plain": {}, "augment": AUGMENT}
"""Each variant's ``augment`` table (``--set augment.KEY=VALUE`` overrides a value in every
variant)."""
DOMAINS = ("synth", "shifted", "real")
COLUMNS = [
    "method",
    "variant",
    "k",
    *(f"{d}_{m}" for d in DOMAINS for m in ("nme68", "nme5")),
    "steps",
    "cpu_s",
]


def make_sets(shared: Path, folder: Path, *, n_train: int, n_test: int, size: int) -> dict:
    """The synthetic sets (written once under ``folder``) and the ytfaces68 folder:
    ``{"train", "synth_test", "shifted_fit", "shifted_test": Path, "real": Path}``."""
    from kp3d.data.adapters.synth import write

    sfm = shared / "assets" / "sfm"
    real = shared / "data" / "ytfaces68"
    for need, what in ((sfm, "the Surrey Face Model"), (real, "the ytfaces68 photos")):
        if not need.is_dir():
            sys.exit(f"error: {need} is missing: this benchmark needs {what} (pass --shared PATH)")
    sets = {
        "train": (n_train, 0, "default"),
        "synth_test": (n_test, 1, "default"),
        "shifted_fit": (n_test, 2, "shifted"),
        "shifted_test": (n_test, 3, "shifted"),
    }
    paths: dict[str, Path] = {"real": real}
    for name, (n, seed, appearance) in sets.items():
        path = folder / name
        if not (path / "meta.json").exists():
            write(
                path,
                "face",
                n,
                size=size,
                seed=seed,
                sfm_dir=sfm,
                appearance=appearance,
                overwrite=True,
            )
        paths[name] = path
    return paths


def domain_sets(
    paths: dict[str, Path], train: Dataset, *, n_fit: int, size: int
) -> dict[str, tuple[Dataset, Dataset]]:
    """``(fit, test)`` of each of :data:`DOMAINS`; ``train``: the opened training set."""
    from kp3d.data.adapters import open_dataset

    return {
        "synth": (
            Subset(train, range(min(n_fit, len(train)))),
            open_dataset(paths["synth_test"], size=size),
        ),
        "shifted": (
            open_dataset(paths["shifted_fit"], size=size),
            open_dataset(paths["shifted_test"], size=size),
        ),
        "real": (
            open_dataset(paths["real"], size=size, split="training"),
            open_dataset(paths["real"], size=size, split="test"),
        ),
    }


def face_nme(fit: Any, test: Any, *, absent: Sequence[int] = ()) -> dict[str, float]:
    """``nme68`` and ``nme5`` of collected keypoints (:func:`kp3d.evaluation.collect`), with the
    regression fitted on ``fit``, scored on ``test``.

    Landmarks count as labelled the way 68-point annotations (300W, ytfaces68) label them:
    every landmark but the ``absent`` ones, occluded ones at their position (the synthetic
    faces' ``vis`` says what the camera sees; the photos' CSVs label all 68). NME-68: the mean
    over the labelled landmarks, divided by the outer-eye-corner distance; NME-5: the MAFL
    points (eye centres, nose tip, mouth corners), divided by the eye-centre distance.
    """
    from kp3d.metrics.nme import (
        INTER_OCULAR_68,
        INTER_PUPIL_MAFL5,
        mafl5_from_ibug68,
        nme_2d,
        pixel_to_unit,
    )

    keep = [i for i in range(68) if i not in set(absent)]
    (fk, fl), (tk, tl) = (
        (pixel_to_unit(c.pred.kp2d, c.image_size), pixel_to_unit(c.gt.kp2d, c.image_size))
        for c in (fit, test)
    )
    eyes = tuple(keep.index(i) for i in INTER_OCULAR_68)  # the outer eye corners, kept
    nme68 = nme_2d(fk, fl[:, keep], tk, tl[:, keep], eyes)
    nme5 = nme_2d(fk, mafl5_from_ibug68(fl), tk, mafl5_from_ibug68(tl), INTER_PUPIL_MAFL5)
    return {"nme68": float(nme68.nme), "nme5": float(nme5.nme)}


def score_domains(
    run_dir: Path, domains: dict[str, tuple[Dataset, Dataset]], *, absent: Sequence[int]
) -> dict[str, float]:
    """``DOMAIN_nme68`` and ``DOMAIN_nme5`` (:func:`face_nme`) of the trained run in
    ``run_dir``; ``absent``: the synthetic faces' landmarks that no face has."""
    import torch

    from kp3d.engine import load_run
    from kp3d.evaluation import collect

    model = load_run(run_dir).model
    out = {}
    with torch.no_grad():
        for name, (fit, test) in domains.items():
            r = face_nme(
                collect(model, fit), collect(model, test), absent=() if name == "real" else absent
            )
            out.update({f"{name}_{metric}": value for metric, value in r.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    add_run_arguments(parser, out="runs/face_robustness", k=[16], minutes=30.0, clock="cpu")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--data", type=Path, default=None, help="data folder (OUT/data)")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--fit", type=int, default=2000, help="training faces of the regression")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    extra = parse_set(args.set)
    paths = make_sets(
        args.shared,
        args.data or args.out / "data",
        n_train=args.n_train,
        n_test=args.n_test,
        size=args.size,
    )
    from kp3d.data.adapters import open_dataset

    train = open_dataset(paths["train"], size=args.size)
    domains = domain_sets(paths, train, n_fit=args.fit, size=args.size)
    absent = json.loads((paths["train"] / "meta.json").read_text())["absent"]
    budget = run_budget(args)
    rows = []
    for method in args.methods:
        for variant in args.variants:
            for k in args.k:
                run_dir = args.out / f"{method}-{variant}-k{k}"
                config = {"k": k, "image_size": args.size, **extra}
                augment = {**VARIANTS[variant], **extra.get("augment", {})}
                if augment:
                    config["augment"] = augment
                done, _, cpu = train_timed(
                    method, train, run_dir, method_config=config, budget=budget, seed=args.seed
                )
                row = {
                    "method": method,
                    "variant": variant,
                    "k": k,
                    **score_domains(run_dir, domains, absent=absent),
                    "steps": done.steps,
                    "cpu_s": round(cpu, 1),
                    "config": config,
                    "budget": budget,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(merge_results(args.out, rows, COLUMNS, key=("method", "variant", "k")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
