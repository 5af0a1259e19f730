"""``kp3d report``: write the self-contained HTML report of a run (see :mod:`kp3d.viz.report`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kp3d.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", type=Path, required=True, help="run folder written by `kp3d train`"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="HTML file to write (default: RUN/report.html)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data to show predictions on, as the method reads it "
        "(default: the run's training data)",
    )
    parser.add_argument(
        "--eval", type=Path, default=None, help="evaluation JSON (default: RUN/eval.json)"
    )
    parser.add_argument(
        "--samples", type=int, default=16, help="sample images shown (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    from kp3d.engine import load_run
    from kp3d.engine.atomic import atomic_write_text
    from kp3d.viz.report import build_report

    loaded = load_run(args.run)
    data = args.data
    if data is None:
        stored = (loaded.config.get("data") or {}).get("path")
        data = Path(stored) if stored and Path(stored).exists() else None
    dataset = None
    if data is not None:
        inputs = loaded.spec.inputs
        dataset = inputs.open(data, size=inputs.image_size(loaded.method_config))
    eval_doc = None
    if args.eval is not None:
        try:
            eval_doc = json.loads(args.eval.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{args.eval}: unreadable evaluation JSON ({e})") from None
    page = build_report(args.run, dataset=dataset, eval_doc=eval_doc, samples=args.samples)
    out = args.out or (args.run / "report.html")
    atomic_write_text(out, page)
    print(f"wrote {out}")
    return 0
