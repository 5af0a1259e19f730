"""Lifting beyond AFLW2000-3D (issue 27): every lifter and both baselines on several lifting sets,
so that a default is chosen on several data sets, never on one.

Sets (:mod:`_lifting`): ``aflw`` (AFLW2000-3D, pixels), ``sfm`` (Surrey Face Model faces from
kp3d's ``face`` generator, 50 fixed iBUG landmarks, orthographic, millimetres, yaw +-70),
``creature`` and ``quadruped`` (procedural 3D joints, orthographic), ``discovered`` (the
keypoints ``autolink3d`` discovers on ``kp3d synth face`` images, the exact surface point under
each as ground truth, pixels; keypoints off the face are invisible); on request ``aflw50``
(AFLW2000-3D on the 50 landmarks of ``sfm``). ``--scale`` multiplies a set's coordinates (a
change of units: every lifter should be indifferent to it).

Set ``discovered`` trains autolink3d first (``--discovered-minutes`` of CPU time on the
benchmark's one thread), in ``--discovered-cache`` (default ``OUT/discovered/autolink3d``); a
cache folder outside ``OUT`` is reused by later runs with the same options.

Protocol: C3DPO's, :func:`kp3d.evaluation.evaluate_lifting` (as ``aflw_lifting.py``): MPJPE with
depth flip in per-sample normalised units (the 2D RMS radius is 1) and in the set's units. Rows:
each method trained by :func:`kp3d.engine.train` on one CPU thread, per seed; flat (z = 0); the
mean training 3D shape placed by the best orthographic camera (uses 3D labels).

    nice .venv/bin/python benchmarks/lifting_sets.py --sets sfm --methods lifter-fit \
        --steps 3000 --seeds 0 --out runs/lifting_sets

Writes ``OUT/results.json`` and ``OUT/results.md``; each set's ``train.npz`` / ``test.npz``
(usable with ``kp3d train`` / ``kp3d evaluate``) and run folders go to ``OUT/<set>/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from _discovered import DiscoveredConfig
from _lifting import EXTRA_SETS, SET_NAMES, load_set, scaled, write_npz
from _unsupervised import parse_set
from aflw_lifting import DEFAULT_STEPS, baselines, score, train_and_predict


def markdown(rows: list[dict]) -> str:
    """One table: set, method, seed, steps, MPJPE (normalised / set units), CPU s."""
    lines = [
        "| set | method | seed | steps | MPJPE (norm / units) | P-MPJPE (norm) | CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else "–"
        lines.append(
            f"| {r['set']} | {r['name']} | {r.get('seed', '–')} | {r.get('steps', '–')} "
            f"| {m['mpjpe']['norm']:.4f} / {m['mpjpe']['px']:.2f} {r['units']} "
            f"| {m['p_mpjpe']['norm']:.4f} | {cpu} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path("../shared"),
        help="the shared data folder (AFLW2000-3D, the Surrey Face Model)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/lifting_sets"))
    parser.add_argument(
        "--sets", nargs="+", default=list(SET_NAMES), choices=SET_NAMES + EXTRA_SETS
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every set's coordinates by this (a change of units)",
    )
    parser.add_argument("--methods", nargs="*", default=["c3dpo", "lifter", "lifter-fit"])
    parser.add_argument(
        "--steps", type=int, default=None, help=f"step budget per method (default {DEFAULT_STEPS})"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of the synthetic sets (sfm, creature, quadruped, discovered)",
    )
    parser.add_argument(
        "--discovered-minutes",
        type=float,
        default=DiscoveredConfig.minutes,
        help="set discovered: autolink3d's training budget, CPU minutes (default %(default)s)",
    )
    parser.add_argument(
        "--discovered-k",
        type=int,
        default=DiscoveredConfig.k,
        help="set discovered: keypoints autolink3d discovers (default %(default)s)",
    )
    parser.add_argument(
        "--discovered-cache",
        type=Path,
        default=None,
        help="set discovered: where autolink3d and the set are built or reused "
        "(default OUT/discovered/autolink3d)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="method-config values, e.g. lifter-fit.coefficient_ridge=3 (JSON)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"error: {args.out} is not empty; choose another --out")
    extra: dict[str, dict] = {m: {} for m in args.methods}
    for kv in args.set:
        key, value = kv.split("=", 1)
        method, field = key.split(".", 1)
        extra.setdefault(method, {}).update(parse_set([f"{field}={value}"]))

    discovered = DiscoveredConfig(minutes=args.discovered_minutes, k=args.discovered_k)
    cache = args.discovered_cache or args.out / "discovered" / "autolink3d"
    rows: list[dict] = []
    for name in args.sets:
        data = load_set(name, args.shared, args.data_seed, cache=cache, discovered=discovered)
        if args.scale != 1.0:
            data = scaled(data, args.scale)
        train_path, _ = write_npz(data, args.out / data.name)
        for method in args.methods:
            for seed in args.seeds:
                steps = args.steps or DEFAULT_STEPS[method]
                pred, info = train_and_predict(
                    method,
                    train_path,
                    data.test,
                    args.out / data.name / f"{method}-{seed}",
                    steps=steps,
                    seed=seed,
                    method_config=extra[method],
                    test_vis=data.test_vis,
                )
                rows.append(
                    {
                        "set": data.name,
                        "units": data.units,
                        "name": method,
                        "seed": seed,
                        "metrics": score(pred, data.test, vis=data.test_vis),
                        **info,
                    }
                )
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        for row in baselines(
            data.train, data.test, train_vis=data.train_vis, test_vis=data.test_vis
        ):
            rows.append({"set": data.name, "units": data.units, **row})

    table = markdown(rows)
    print(table)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
