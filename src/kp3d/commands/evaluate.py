"""``kp3d evaluate``: score a trained run with the protocols that fit the data (see
:mod:`kp3d.evaluation`) and write the numbers to JSON.

The protocols are the method's (``MethodSpec.protocols``); one whose ground truth the data lacks
is skipped with a one-line note (also in the JSON's ``skipped``), and none applicable is an
error. The JSON's ``results`` holds one entry per protocol that ran.

On a multi-view set (``kp3d synth ... --rig V``, the real-rig format) the protocols are the
multi-view ones (``pose_probe``: 3D keypoints frozen and probed for the joints on 1%, 10% and
100% of the fit moments, with the flat and triangulated 2D baselines; ``foreground_mask``:
per-view predicted masks against the ground-truth masks, IoU); a single-view method is run on
every view of a moment.

The test set is ``--data``; the linear regression of the keypoint protocols (and the mean shape of
the lifting baseline) is fitted on ``--fit``. Without ``--fit``, a dataset that has its own
``training``/``test`` splits (e.g. the ytfaces68 layout) uses them; otherwise the first half of
``--data`` is the fit set and the second half the test set, and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, Subset

from kp3d.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

    from kp3d.data.inputs import Inputs
    from kp3d.data.schema import Sample
    from kp3d.methods.prediction import Prediction


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe",
        choices=("linear", "linear+mlp"),
        default="linear+mlp",
        help="multi-view sets: the pose probes to fit (the MLP, 2 x 2048 units as in Honari & "
        "Fua, takes most of the time) (default: %(default)s)",
    )
    parser.add_argument(
        "--probe-steps",
        type=int,
        default=200,
        metavar="N",
        help="multi-view sets: Adam steps of each MLP probe (default: %(default)s)",
    )
    parser.add_argument(
        "--probe-seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the probes' subsets and training (default: %(default)s)",
    )
    parser.add_argument(
        "--run", type=Path, required=True, help="run folder written by `kp3d train`"
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="labelled test set (any supported format)"
    )
    parser.add_argument(
        "--fit", type=Path, default=None, help="labelled set the regression is fitted on"
    )
    parser.add_argument("--format", default=None, help="format of --data (default: detected)")
    parser.add_argument("--fit-format", default=None, help="format of --fit (default: detected)")
    parser.add_argument(
        "--split", default=None, help="split of --data to test on (format-specific)"
    )
    parser.add_argument(
        "--fit-split", default=None, help="split of --fit to fit on (format-specific)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default: RUN/eval.json)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="inference batch size (default: the method's, 64 for images)",
    )


def _open(
    inputs: Inputs, path: Path, fmt: str | None, split: str | None, size: int | None
) -> Dataset:
    return inputs.open(path, format=fmt, split=split, size=size)


def _fit_and_test(
    args: argparse.Namespace, inputs: Inputs, size: int | None
) -> tuple[Dataset, Dataset, dict[str, str]]:
    if args.fit is not None:
        test = _open(inputs, args.data, args.format, args.split, size)
        fit = _open(inputs, args.fit, args.fit_format, args.fit_split, size)
        return fit, test, {"fit": str(args.fit), "test": str(args.data)}
    if args.split is None:
        try:
            fit = _open(inputs, args.data, args.format, "training", size)
            test = _open(inputs, args.data, args.format, "test", size)
            return (
                fit,
                test,
                {"fit": f"{args.data} (training split)", "test": f"{args.data} (test split)"},
            )
        except (ValueError, KeyError):
            pass
    data = _open(inputs, args.data, args.format, args.split, size)
    half = len(data) // 2
    if half < 1:
        raise UserError(
            f"{args.data}: too few samples ({len(data)}) to split into fit and test halves"
        )
    return (
        Subset(data, range(half)),
        Subset(data, range(half, len(data))),
        {
            "fit": f"{args.data} (first {half} samples)",
            "test": f"{args.data} (last {len(data) - half} samples)",
        },
    )


def _probe_config(args: argparse.Namespace) -> Any:
    from kp3d.metrics.probe import ProbeConfig

    kinds = ("linear",) if args.probe == "linear" else ("linear", "mlp")
    return ProbeConfig(kinds=kinds, steps=args.probe_steps, seed=args.probe_seed)


def evaluate_run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``kp3d evaluate`` computes, as a JSON-ready dict: ``results`` by protocol
    (the spec's protocols that the data allows, :data:`kp3d.evaluation.PROTOCOLS`), ``skipped``
    protocols with their reasons, and under ``results["artifacts"]`` what is scored on the
    learned artifacts alone (the basis' mutual coherence)."""
    from kp3d.engine import load_run
    from kp3d.evaluation import collect, evaluate_protocols

    run = load_run(args.run)
    model, spec = run.model, run.spec
    if not spec.protocols:
        raise UserError(f"{args.run}: method {run.method_name!r} names no evaluation protocol")
    size = spec.inputs.image_size(run.method_config)
    fit, test, sets = _fit_and_test(args, spec.inputs, size)
    batch_size = args.batch_size or spec.inputs.batch_size

    def predict(batch: Sample) -> Prediction:
        return spec.inputs.predict(model, batch)

    fit_c = collect(model, fit, batch_size=batch_size, predict=predict)
    test_c = collect(model, test, batch_size=batch_size, predict=predict)
    try:
        done = evaluate_protocols(spec.protocols, fit_c, test_c, probe=_probe_config(args))
    except ValueError as e:
        raise UserError(f"{args.data}: {e}") from e
    if not done.results:
        reasons = "; ".join(f"{n}: {r}" for n, r in done.skipped.items())
        raise UserError(
            f"{args.data}: no evaluation protocol of {run.method_name!r} applies ({reasons})"
        )
    results: dict[str, Any] = dict(done.results)
    scored = _artifact_scores(model.artifacts())
    if scored:
        results["artifacts"] = scored
    return {
        "run": str(args.run),
        "method": run.method_name,
        **sets,
        "results": results,
        "skipped": done.skipped,
    }


_COHERENCE = {
    "shape_basis": (
        "mutual_coherence",
        "largest |cosine| between two learned basis shapes S (Can et al., Table 5)",
    ),
    "coefficient_layer": (
        "mutual_coherence_W_g",
        "largest |cosine| between two rows of the coefficient layer W_g (Can et al., Table 5)",
    ),
}
"""Artifacts whose mutual coherence ``kp3d evaluate`` reports: name -> (result name, text)."""


def _artifact_scores(artifacts: dict[str, Tensor]) -> dict[str, Any]:
    """The mutual coherence (:func:`kp3d.metrics.mutual_coherence`) of each learned artifact
    in :data:`_COHERENCE` that has two vectors or more: of the basis S (``mutual_coherence``)
    and of the lifter's coefficient layer W_g (``mutual_coherence_W_g``)."""
    from kp3d.metrics import mutual_coherence

    out: dict[str, Any] = {}
    for artifact, (name, text) in _COHERENCE.items():
        value = artifacts.get(artifact)
        if value is not None and value.shape[0] >= 2:
            out[name] = {"value": float(mutual_coherence(value.flatten(1))), "protocol": text}
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from kp3d.engine.atomic import atomic_write_text
    from kp3d.evaluation import result_rows

    with torch.no_grad():
        out = evaluate_run(args)
    path = args.json or (args.run / "eval.json")
    atomic_write_text(path, json.dumps(out, indent=2))
    console = Console()
    for name, reason in out["skipped"].items():
        console.print(f"skipped protocol {name}: {reason}", highlight=False)
    table = Table(title=f"{out['method']} — {out['test']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("protocol")
    for group, results in out["results"].items():
        table.add_row(f"[bold]{group}[/bold]", "", "")
        for metric, value, protocol in result_rows(results):
            table.add_row(metric, value, protocol)
        table.add_section()
    console.print(table)
    print(f"wrote {path}")
    return 0
