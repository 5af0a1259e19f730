"""``kp3d evaluate``: score a trained run with the protocols that fit the data (see
:mod:`kp3d.evaluation`) and write the numbers to JSON.

The test set is ``--data``; the linear regression of the keypoint protocols (and the mean shape of
the lifting baseline) is fitted on ``--fit``. Without ``--fit``, a dataset that has its own
``training``/``test`` splits (e.g. the ytfaces68 layout) uses them; otherwise the first half of
``--data`` is the fit set and the second half the test set, and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from kp3d.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run folder written by `kp3d train`")
    parser.add_argument("--data", type=Path, required=True, help="labelled test set (any supported format)")
    parser.add_argument("--fit", type=Path, default=None, help="labelled set the regression is fitted on")
    parser.add_argument("--format", default=None, help="format of --data (default: detected)")
    parser.add_argument("--fit-format", default=None, help="format of --fit (default: detected)")
    parser.add_argument("--split", default=None, help="split of --data to test on (format-specific)")
    parser.add_argument("--fit-split", default=None, help="split of --fit to fit on (format-specific)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results (default: RUN/eval.json)")
    parser.add_argument("--batch-size", type=int, default=64, help="inference batch size (default: %(default)s)")


def _open(path: Path, fmt: str | None, split: str | None, size: int | None) -> Dataset:
    from kp3d.data.adapters import open_dataset

    kwargs: dict[str, Any] = {"split": split}
    if size is not None:
        kwargs["size"] = size
    return open_dataset(path, format=fmt, **kwargs)


def _fit_and_test(args: argparse.Namespace, size: int | None) -> tuple[Dataset, Dataset, dict[str, str]]:
    if args.fit is not None:
        test = _open(args.data, args.format, args.split, size)
        fit = _open(args.fit, args.fit_format, args.fit_split, size)
        return fit, test, {"fit": str(args.fit), "test": str(args.data)}
    if args.split is None:
        try:
            fit = _open(args.data, args.format, "training", size)
            test = _open(args.data, args.format, "test", size)
            return fit, test, {"fit": f"{args.data} (training split)", "test": f"{args.data} (test split)"}
        except (ValueError, KeyError):
            pass
    data = _open(args.data, args.format, args.split, size)
    half = len(data) // 2
    if half < 1:
        raise UserError(f"{args.data}: too few samples ({len(data)}) to split into fit and test halves")
    return (
        Subset(data, range(half)),
        Subset(data, range(half, len(data))),
        {"fit": f"{args.data} (first {half} samples)", "test": f"{args.data} (last {len(data) - half} samples)"},
    )


def evaluate_run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``kp3d evaluate`` computes, as a JSON-ready dict."""
    from kp3d.engine import load_run
    from kp3d.evaluation import collect, evaluate_keypoint_discovery, evaluate_lifting

    run = load_run(args.run)
    model = run.model
    if run.spec.data == "images":
        size = getattr(run.method_config, "image_size", None)
        fit, test, sets = _fit_and_test(args, size)
        fit_c = collect(model, fit, batch_size=args.batch_size)
        test_c = collect(model, test, batch_size=args.batch_size)
        try:
            results = evaluate_keypoint_discovery(fit_c, test_c)
        except ValueError as e:
            raise UserError(f"{args.data}: {e}") from e
    elif run.spec.data == "keypoints":
        fit, test, sets = _fit_and_test(args, None)
        test_c = collect(model, test, batch_size=max(args.batch_size, 256))
        fit_c = collect(model, fit, batch_size=max(args.batch_size, 256))
        if "kp3d" not in test_c.pred:
            raise UserError(f"{args.run}: the model does not predict 3D keypoints")
        try:
            results = evaluate_lifting(test_c.pred["kp3d"], test_c.gt, fit=fit_c.gt)
        except ValueError as e:
            raise UserError(f"{args.data}: {e}") from e
    else:
        raise UserError(f"{args.run}: evaluation of {run.spec.data!r} methods is not supported yet")
    basis = model.shape_basis()
    if basis is not None and basis.shape[0] >= 2:
        from kp3d.metrics import mutual_coherence

        results["mutual_coherence"] = {
            "value": float(mutual_coherence(basis.flatten(1))),
            "protocol": "largest |cosine| between two learned basis shapes (Can et al., Table 5)",
        }
    return {"run": str(args.run), "method": run.method_name, **sets, "results": results}


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from kp3d.engine.atomic import atomic_write_text
    from kp3d.evaluation import format_value

    with torch.no_grad():
        out = evaluate_run(args)
    path = args.json or (args.run / "eval.json")
    atomic_write_text(path, json.dumps(out, indent=2))
    table = Table(title=f"{out['method']} — {out['test']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("protocol")
    for name, r in out["results"].items():
        if name == "counts":
            continue
        if "value" in r:
            table.add_row(name, format_value(name, r["value"]), r["protocol"])
        else:
            for metric, v in r.items():
                table.add_row(f"{name} {metric}", f"{v['norm']:.4f} / {v['input_units']:.3f}", "normalised / input units")
    Console().print(table)
    print(f"wrote {path}")
    return 0
