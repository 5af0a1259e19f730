"""Occlusion (issue 7): AFLW2000-3D lifting with random visibility masks at train and test time.

Each of the 68 landmarks of every face is dropped independently with probability ``p`` (20% and
40%), with different draws for the training and the test faces; a dropped landmark is given to
the lifter as invisible (its coordinates unseen). Split, normalisation and metrics are those of
``aflw_lifting.py`` (C3DPO's protocol, per-face ``s`` from the full ground-truth 2D), reported
over all 68 landmarks (an invisible landmark's x, y is the lifter's reprojection) and over the
visible ones only.

    nice .venv/bin/python benchmarks/occlusion_lifting.py --shared ../shared --out runs/occlusion

Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _unsupervised import check_out_is_empty, write_results
from aflw_lifting import N_TRAIN, load_faces, protocol_units, to_units

DROPS = (0.2, 0.4)


def masks(n: int, k: int, p: float, seed: int) -> np.ndarray:
    """(n, k) bool visibility, each point dropped with probability p; >= 3 visible per sample."""
    rng = np.random.default_rng(seed)
    vis = rng.random((n, k)) >= p
    for i in np.flatnonzero(vis.sum(1) < 3):
        vis[i, rng.choice(k, 3, replace=False)] = True
    return vis


def score(pred_px: torch.Tensor, gt_px: torch.Tensor, vis: torch.Tensor | None) -> dict:
    from kp3d.metrics import mpjpe, p_mpjpe, stress

    centre, s = protocol_units(gt_px)
    pred, gt = to_units(pred_px, centre, s), to_units(gt_px, centre, s)
    per_face = {
        "mpjpe": mpjpe(pred, gt, vis=vis, flip_z=True, reduction="none"),
        "stress": stress(pred, gt, vis=vis, reduction="none"),
        "p_mpjpe": p_mpjpe(pred, gt, vis=vis, flip_z=True, reduction="none"),
    }
    return {k: {"norm": v.mean().item(), "px": (v * s).mean().item()} for k, v in per_face.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("runs/occlusion_lifting"))
    parser.add_argument("--methods", nargs="*", default=["c3dpo", "lifter"])
    parser.add_argument("--drops", type=float, nargs="*", default=list(DROPS))
    parser.add_argument("--steps", type=int, default=4000, help="step budget per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    check_out_is_empty(args.out)
    args.out.mkdir(parents=True)

    from kp3d.data.adapters import open_dataset
    from kp3d.data.schema import Sample
    from kp3d.engine import TrainConfig, train

    faces = load_faces(args.shared)
    gt = torch.from_numpy(faces)
    test_px = gt[N_TRAIN:]
    rows = []
    for p in args.drops:
        train_vis = masks(N_TRAIN, 68, p, seed=2 * args.seed)
        test_vis = torch.from_numpy(masks(len(faces) - N_TRAIN, 68, p, seed=2 * args.seed + 1))
        path = args.out / f"train-drop{p:g}.npz"
        np.savez(path, kp2d=faces[:N_TRAIN, :, :2].astype(np.float32), vis=train_vis)
        data = open_dataset(path, format="keypoints_npz")
        test_in = test_px[..., :2].float() * test_vis[..., None]
        for method in args.methods:
            cfg = TrainConfig(
                steps=args.steps,
                batch_size=256,
                lr=1e-3,
                seed=args.seed,
                bf16=False,
                ckpt_every=args.steps,
                log_every=100,
                device="cpu",
            )
            cpu0 = time.process_time()
            result = train(
                method, data, args.out / f"{method}-drop{p:g}", train_config=cfg, progress_bar=False
            )
            cpu = time.process_time() - cpu0
            with torch.no_grad():
                pred = result.model.eval().predict(Sample(kp2d=test_in, vis=test_vis)).kp3d
            pred = pred.double()
            row = {
                "method": method,
                "drop": p,
                "steps": result.steps,
                "cpu_s": cpu,
                "all": score(pred, test_px, None),
                "visible": score(pred, test_px, test_vis),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    header = (
        "| method | drop | MPJPE all (norm / px) | MPJPE visible (norm / px) "
        "| Stress all (px) | P-MPJPE all (px) | steps | CPU s |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, v = r["all"], r["visible"]
        lines.append(
            f"| {r['method']} | {r['drop']:.0%} "
            f"| {a['mpjpe']['norm']:.4f} / {a['mpjpe']['px']:.2f} "
            f"| {v['mpjpe']['norm']:.4f} / {v['mpjpe']['px']:.2f} | {a['stress']['px']:.2f} "
            f"| {a['p_mpjpe']['px']:.2f} | {r['steps']} | {r['cpu_s']:.0f} |"
        )
    table = "\n".join(lines)
    write_results(args.out, table, {"seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
