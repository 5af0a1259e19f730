"""Synthetic-data speed (issue 3): images per second of ``kp3d synth`` on ONE core.

Target: at least 100 images/s for ``creature`` at 64x64. Measures, on one intra-op thread and
one process, for each category asked for:

* ``render``: sampling and rendering in memory (:func:`kp3d.data.synth.render_indices`);
* ``write``:  the whole ``kp3d synth`` job, PNGs and annotation file included
  (:func:`kp3d.data.adapters.synth.write`, one worker).

Both as wall-clock and as process CPU time: on a machine shared with other jobs the wall clock
also counts time spent waiting for a core, so the CPU-time rate is the one-core figure. Run it
with ``nice`` on a shared machine::

    nice python benchmarks/synth_speed.py --n 1000 --size 64
    nice python benchmarks/synth_speed.py --categories creature quadruped face --sfm-dir ../shared/assets/sfm

``--rig V`` measures a capture-rig set instead (:mod:`kp3d.data.synth.rig`; ``--n`` moments of
V images each, rates in images)::

    nice python benchmarks/synth_speed.py --rig 4 --sequences 4 --n 256 --size 64

Prints a table and writes ``--json`` if given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kp3d.data.synth import Category


def _timed(fn: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _run(what: str, gen: Category, name: str, args: argparse.Namespace, tmp: Path) -> None:
    from kp3d.data.adapters.synth import write
    from kp3d.data.synth import iter_rendered

    if args.rig is not None:
        from kp3d.data.synth import CHUNK
        from kp3d.data.synth.rig import get_rig, render_moments

        if what == "render":
            rig = get_rig(args.rig, args.size, 0)
            with torch.no_grad():
                for lo in range(0, args.n, CHUNK):
                    idx = range(lo, min(lo + CHUNK, args.n))
                    render_moments(gen, idx, rig, n=args.n, sequences=args.sequences, seed=0)  # type: ignore[arg-type]
        else:
            write(
                tmp / "set",
                name,
                args.n,
                size=args.size,
                seed=0,
                rig=args.rig,
                sequences=args.sequences,
            )
        return
    if what == "render":
        for _ in iter_rendered(gen, args.n, size=args.size, seed=0):
            pass
    else:
        write(tmp / "set", name, args.n, size=args.size, seed=0, sfm_dir=args.sfm_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--categories", nargs="+", default=["creature"])
    parser.add_argument("--n", type=int, default=1000, help="images per measurement")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument(
        "--sfm-dir", type=Path, default=None, help="Surrey Face Model folder (for face)"
    )
    parser.add_argument(
        "--rig",
        type=int,
        default=None,
        metavar="V",
        help="measure a --rig V set instead (--n counts moments; images = n V)",
    )
    parser.add_argument("--sequences", type=int, default=1, help="clips of the --rig set")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from kp3d.data.synth import get_category, iter_rendered

    torch.set_num_threads(1)
    rows = []
    for name in args.categories:
        if name == "face" and args.sfm_dir is None:
            print("skipping face: pass --sfm-dir")
            continue
        gen = get_category(name, sfm_dir=args.sfm_dir)
        # Warm-up (first-call allocations, lazy imports).
        for _ in iter_rendered(gen, 32, size=args.size, seed=123):
            pass
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):
            for what in ("render", "write"):
                tmp = Path(tempfile.mkdtemp(prefix="kp3d-synth-speed-"))
                w, c = _timed(lambda: _run(what, gen, name, args, tmp))  # noqa: B023
                shutil.rmtree(tmp, ignore_errors=True)
                if what not in best or c < best[what][1]:
                    best[what] = (w, c)
        images = args.n * (args.rig or 1)
        for what, (w, c) in best.items():
            rows.append(
                {
                    "category": name,
                    "stage": what,
                    "n": images,
                    "size": args.size,
                    "rig": args.rig,
                    "images_per_s_wall": images / w,
                    "images_per_s_cpu": images / c,
                }
            )

    print(
        f"{'category':<10} {'stage':<7} {'n':>6} {'size':>5} {'img/s (cpu)':>12} {'img/s (wall)':>13}"
    )
    for r in rows:
        print(
            f"{r['category']:<10} {r['stage']:<7} {r['n']:>6} {r['size']:>5} "
            f"{r['images_per_s_cpu']:>12.1f} {r['images_per_s_wall']:>13.1f}"
        )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"torch {torch.__version__}, 1 thread, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, load average {load}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "load_average": load, "torch": torch.__version__}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
