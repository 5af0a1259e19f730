"""Honari & Fua's multi-view keypoints (``triangulation``, issue 22) on a capture-rig set.

Synthesises (once, cached under ``OUT/data``) a training rig set and a held-out rig set of
``creature`` (or ``quadruped``) with ``--rig`` cameras, trains ``triangulation`` unsupervised on
the training moments for a fixed budget, and scores it with ``kp3d evaluate`` on the held-out
moments (first half fit, second half test: the probe is fitted in camera 0's frame, so fit and
test share the rig):

* the pose probe (``pose_probe``: linear and MLP, 1 / 10 / 100% of the fit moments) MPJPE,
  N-MPJPE and P-MPJPE of the frozen 3D keypoints, in the set's units (metres);
* ``mask_iou`` of the per-view foreground masks against the ground-truth masks (and the
  all-foreground baseline);
* the same probe on ``keypointnet`` (view pairs of the same moments, their known relative pose)
  and ``autolink3d`` (single views), trained on the same training moments for the same budget:
  the rows to beat (``--baselines``).

Ablations (``--ablations``; the paper's Tables 6 and 7): ``views`` (2 and 3 of the cameras
beside all of them), ``keypoints`` (``--ablation-k``), ``target_mask`` (the ground-truth masks
and the image minus the background as the target of the keypoints' mask, beside the predicted
one). Every run of every seed (``--seeds``) is one row.

    python benchmarks/triangulation.py --minutes 30 --clock cpu --seeds 0 1 --out runs/tri
    # a smoke test of the plumbing (numbers meaningless):
    python benchmarks/triangulation.py --n-train 16 --n-test 16 --size 32 --k 4 --steps 2 \\
        --ablations views --baselines --out /tmp/tri

Writes ``OUT/results.json``, ``OUT/results.md`` (rows of earlier invocations into the same
``OUT`` kept, a run of the same name and seed replaced: one invocation per core merges) and
each run's folder (``OUT/NAME-sSEED``, with its ``eval.json``; a run folder that has one is
reused, not trained again).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kp3d.cli import main as kp3d

PROBES = ("linear", "mlp")
FRACTIONS = ("1%", "10%", "100%")
REFERENCES = ("flat_2d", "triangulated_2d")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/triangulation"))
    p.add_argument("--category", choices=("creature", "quadruped"), default="creature")
    p.add_argument("--rig", type=int, default=4, help="cameras of the rig (default: 4)")
    p.add_argument("--n-train", type=int, default=1500, help="training moments")
    p.add_argument("--n-test", type=int, default=400, help="held-out moments (fit + test)")
    p.add_argument("--sequences-train", type=int, default=20)
    p.add_argument("--sequences-test", type=int, default=5)
    p.add_argument("--size", type=int, default=64, help="image side (px)")
    p.add_argument("--k", type=int, default=16, help="keypoints of the main runs")
    p.add_argument("--minutes", type=float, default=None, help="training budget per run")
    p.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    p.add_argument("--steps", type=int, default=None, help="training steps (instead of minutes)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--ablations",
        nargs="*",
        choices=("views", "keypoints", "target_mask"),
        default=["views", "keypoints", "target_mask"],
    )
    p.add_argument("--ablation-k", type=int, nargs="+", default=[8, 32])
    p.add_argument(
        "--baselines",
        nargs="*",
        choices=("keypointnet", "autolink3d"),
        default=["keypointnet", "autolink3d"],
    )
    p.add_argument("--probe", choices=("linear", "linear+mlp"), default="linear+mlp")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FLAG=VALUE",
        help="extra train flags of triangulation, e.g. lr=1e-3 batch-size=4",
    )
    args = p.parse_args(argv)
    if (args.minutes is None) == (args.steps is None):
        p.error("give exactly one of --minutes and --steps")
    return args


def synth(args: argparse.Namespace, split: str) -> Path:
    """The cached rig set of ``split`` (train: seed 0, test: seed 1)."""
    out = args.out / "data" / f"{args.category}-rig{args.rig}-{args.size}px-{split}"
    if (out / "meta.json").is_file():
        return out
    n, seq, seed = (
        (args.n_train, args.sequences_train, 0)
        if split == "train"
        else (args.n_test, args.sequences_test, 1)
    )
    argv = ["synth", args.category, "--rig", str(args.rig), "--sequences", str(seq)]
    argv += ["--n", str(n), "--size", str(args.size), "--seed", str(seed), "--out", str(out)]
    if kp3d(argv) != 0:
        sys.exit(f"synth {split} failed")
    return out


def runs(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """``(name, method, extra train flags)`` of every run."""
    base = [f"--{kv.split('=', 1)[0]}={kv.split('=', 1)[1]}" for kv in args.set]
    k = ["--k", str(args.k)]
    out = [("triangulation", "triangulation", [*k, *base])]
    if "views" in args.ablations:
        out += [
            (f"triangulation-views{v}", "triangulation", [*k, "--views", str(v), *base])
            for v in range(2, args.rig)
        ]
    if "keypoints" in args.ablations:
        out += [
            (f"triangulation-k{n}", "triangulation", ["--k", str(n), *base])
            for n in args.ablation_k
            if n != args.k
        ]
    if "target_mask" in args.ablations:
        out += [
            (f"triangulation-target-{t}", "triangulation", [*k, "--target-mask", t, *base])
            for t in ("ground_truth", "background")
        ]
    out += [(b, b, list(k)) for b in args.baselines]
    return out


def _errors(r: dict[str, Any]) -> list[float]:
    """MPJPE, N-MPJPE and P-MPJPE of one probe result."""
    return [r["mpjpe"], r["n_mpjpe"], r["p_mpjpe"]]


def _cell(errors: Sequence[float]) -> str:
    return " / ".join(f"{x:.4f}" for x in errors)


def scores(doc: dict[str, Any]) -> dict[str, Any]:
    """The probe table and the mask IoU of an ``eval.json``."""
    res = doc["results"]
    row: dict[str, Any] = {}
    probe = res.get("pose_probe", {}).get("probe", {})
    for kind in PROBES:
        for frac in FRACTIONS:
            r = probe.get(kind, {}).get(frac)
            if r is not None:
                row[f"{kind} {frac}"] = _errors(r)
    refs = res.get("pose_probe", {})
    if "mean_pose" in refs:
        row["ref mean_pose"] = _errors(refs["mean_pose"])
    for ref in REFERENCES:
        for kind in PROBES:
            for frac in FRACTIONS:
                r = refs.get(ref, {}).get(kind, {}).get(frac)
                if r is not None:
                    row[f"ref {ref} {kind} {frac}"] = _errors(r)
    mask = res.get("foreground_mask")
    if mask is not None:
        row["mask_iou"] = mask["mask_iou"]["value"]
        row["mask_iou_full_baseline"] = mask["mask_iou_full_baseline"]["value"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Every run's row; then, from the first row that has them (they depend only on the
    held-out data), the references: the fit moments' mean pose, and the same probe on the
    ground-truth 2D joints of view 0 (flat) and of every view, triangulated."""
    cols = [f"{k} {f}" for k in PROBES for f in FRACTIONS]
    cols = [c for c in cols if any(c in r for r in rows)]
    head = ["run", "seed", "steps", *cols, "mask IoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(r: dict[str, Any], prefix: str = "") -> list[str]:
        return [_cell(r[prefix + c]) if prefix + c in r else "" for c in cols]

    for r in rows:
        line = [r["name"], str(r["seed"]), str(r.get("steps", "")), *cells(r)]
        line.append(f"{r['mask_iou']:.3f}" if "mask_iou" in r else "")
        lines.append("| " + " | ".join(line) + " |")
    ref = next((r for r in rows if "ref mean_pose" in r), None)
    if ref is not None:
        mean = _cell(ref["ref mean_pose"])
        lines.append(
            "| the fit moments' mean pose | | | "
            + " | ".join(mean if c == "linear 100%" else "" for c in cols)
            + " | |"
        )
        for name, label in (
            ("flat_2d", "ground-truth 2D joints of view 0, z = 0"),
            ("triangulated_2d", "ground-truth 2D joints of every view, triangulated"),
        ):
            lines.append(f"| {label} | | | " + " | ".join(cells(ref, f"ref {name} ")) + " | |")
    return (
        "\n".join(lines)
        + "\n\nMPJPE / N-MPJPE / P-MPJPE (data units), pose probe on held-out moments.\n"
    )


def train_and_evaluate(
    args: argparse.Namespace,
    run: Path,
    method: str,
    flags: list[str],
    train: Path,
    test: Path,
    seed: int,
) -> None:
    """``kp3d train`` into ``run`` and ``kp3d evaluate`` on the held-out set into
    ``run/eval.json``."""
    argv = ["train", "--method", method, "--data", str(train), "--out", str(run)]
    if kp3d([*argv, "--size", str(args.size), "--seed", str(seed), *flags]) != 0:
        sys.exit(f"train {run.name} failed")
    argv = ["evaluate", "--run", str(run), "--data", str(test), "--json", str(run / "eval.json")]
    if kp3d([*argv, "--probe", args.probe, "--probe-seed", str(seed)]) != 0:
        sys.exit(f"evaluate {run.name} failed")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train, test = synth(args, "train"), synth(args, "test")
    budget = (
        ["--steps", str(args.steps)]
        if args.steps is not None
        else ["--minutes", str(args.minutes), "--clock", args.clock]
    )
    saved = args.out / "results.json"
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for name, method, flags in runs(args):
            run = args.out / f"{name}-s{seed}"
            ev = run / "eval.json"
            if not ev.is_file():  # a finished run (an earlier invocation's) is reused
                train_and_evaluate(args, run, method, [*budget, *flags], train, test, seed)
            result = json.loads((run / "result.json").read_text())
            # Re-read just before writing: other invocations into OUT (one per core) add theirs.
            rows = json.loads(saved.read_text()) if saved.is_file() else []
            rows = [r for r in rows if (r["name"], r["seed"]) != (name, seed)]
            rows.append(
                {"name": name, "seed": seed, "steps": result.get("steps"), "flags": flags}
                | scores(json.loads(ev.read_text()))
            )
            saved.write_text(json.dumps(rows, indent=1))
            (args.out / "results.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
