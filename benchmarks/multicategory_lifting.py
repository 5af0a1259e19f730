"""Synthetic multi-category lifting (issue 7; Can et al., Table 4): one lifter for two categories
with different keypoint sets, trained jointly, against one lifter per category.

Data: 3D skeletons of kp3d's procedural ``creature`` (16 joints) and ``quadruped`` (18 joints)
(:mod:`kp3d.data.synth`: random articulation, proportions and size; camera azimuth all around,
the categories' elevation ranges, small roll), seen by an orthographic camera (x right, y down),
in pixels (100 px per world unit). Only skeletons are generated; nothing is rendered. The joint
model sees K = 16 + 18 = 34 keypoints, of which an instance has its own category's visible
(``zeta_z``); the separate models see only their category's keypoints.

Protocol: that of ``aflw_lifting.py`` (C3DPO's), per category on held-out instances: per sample,
2D centring and division by the RMS radius ``s`` of the 2D points; MPJPE with depth flip,
Stress, P-MPJPE; in those normalised units (``x s`` gives pixels).

    nice .venv/bin/python benchmarks/multicategory_lifting.py --steps 3000 --out runs/multicat

Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _unsupervised import add_list_argument, check_out_is_empty, parse_set, write_results
from torch import Tensor

CATEGORIES = ("creature", "quadruped")
PIXELS_PER_UNIT = 100.0


def skeletons(name: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Camera-frame 3D joints (n, J, 3) in pixels and their orthographic projections (n, J, 2)."""
    from kp3d.data.synth import get_category, scene

    cat = get_category(name)
    rng = np.random.default_rng(seed)
    p = scene.stack_params([cat.sample(rng, 1, False) for _ in range(n)])
    joints, _ = cat.pose(p)
    R = scene.orbit_rotation(
        p["view_azimuth"][:, 0], p["view_elevation"][:, 0], p["view_roll"][:, 0]
    )
    cam = (joints - joints.mean(1, keepdim=True)) @ R.transpose(-1, -2) * PIXELS_PER_UNIT
    cam = cam + torch.tensor([200.0, 200.0, 0.0])  # an image position for the 2D points
    return cam, cam[..., :2]


def score(pred_px: Tensor, gt_px: Tensor) -> dict[str, float]:
    """MPJPE (depth flip), Stress, P-MPJPE (flip allowed) in per-sample normalised units."""
    from kp3d.metrics import mpjpe, p_mpjpe, stress

    centre = gt_px[..., :2].mean(-2, keepdim=True)
    s = (gt_px[..., :2] - centre).square().sum(-1).mean(-1).sqrt()[:, None, None]

    def units(x: Tensor) -> Tensor:
        return torch.cat([x[..., :2] - centre, x[..., 2:]], -1) / s

    pred, gt = units(pred_px.double()), units(gt_px.double())
    return {
        "mpjpe": mpjpe(pred, gt, flip_z=True).item(),
        "stress": stress(pred, gt).item(),
        "p_mpjpe": p_mpjpe(pred, gt, flip_z=True).item(),
    }


def train_lifter(
    kp2d: Tensor,
    vis: Tensor,
    category: Tensor,
    n_categories: int,
    run_dir: Path,
    *,
    steps: int,
    seed: int,
    extra: dict,
):
    """Train ``lifter`` with the engine on an in-memory keypoint set; returns (model, info)."""
    from kp3d.data.adapters import open_dataset
    from kp3d.engine import TrainConfig, train

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir.with_suffix(".npz")
    np.savez(path, kp2d=kp2d.numpy(), vis=vis.numpy(), category=category.numpy())
    cfg = TrainConfig(
        steps=steps,
        batch_size=256,
        lr=1e-3,
        seed=seed,
        bf16=False,
        ckpt_every=steps,
        log_every=100,
        device="cpu",
    )
    cpu0 = time.process_time()
    result = train(
        "lifter",
        open_dataset(path, format="keypoints_npz"),
        run_dir,
        method_config={"n_categories": n_categories, **extra},
        train_config=cfg,
        progress_bar=False,
    )
    return result.model.eval(), {"steps": result.steps, "cpu_s": time.process_time() - cpu0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/multicategory_lifting"))
    parser.add_argument("--train", type=int, default=2000, help="training instances per category")
    parser.add_argument("--test", type=int, default=500, help="test instances per category")
    parser.add_argument("--steps", type=int, default=3000, help="step budget of every model")
    parser.add_argument("--seed", type=int, default=0)
    add_list_argument(
        parser,
        "--set",
        metavar="KEY=VALUE",
        help="lifter config values, e.g. n_basis=8 (JSON values, else strings)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    check_out_is_empty(args.out)
    extra = parse_set(args.set)

    from kp3d.data.schema import Sample

    # Category z's keypoints occupy columns offsets[z] .. offsets[z] + k_z of the joint layout.
    data = {}
    for z, name in enumerate(CATEGORIES):
        gt, kp2d = skeletons(name, args.train + args.test, seed=1000 * args.seed + z)
        data[name] = {"gt": gt, "kp2d": kp2d}
    sizes = [data[n]["gt"].shape[1] for n in CATEGORIES]
    offsets = np.cumsum([0, *sizes])
    K = int(offsets[-1])

    def joint_layout(z: int, x: Tensor) -> tuple[Tensor, Tensor]:
        out = torch.zeros(len(x), K, x.shape[-1])
        vis = torch.zeros(len(x), K, dtype=torch.bool)
        out[:, offsets[z] : offsets[z + 1]] = x
        vis[:, offsets[z] : offsets[z + 1]] = True
        return out, vis

    rows = []
    # Joint: one lifter, both categories, mixed in one training set.
    parts = [joint_layout(z, data[n]["kp2d"][: args.train]) for z, n in enumerate(CATEGORIES)]
    kp2d = torch.cat([p[0] for p in parts])
    vis = torch.cat([p[1] for p in parts])
    category = torch.cat([torch.full((args.train,), z) for z in range(len(CATEGORIES))])
    model, info = train_lifter(
        kp2d,
        vis,
        category,
        len(CATEGORIES),
        args.out / "joint",
        steps=args.steps,
        seed=args.seed,
        extra=extra,
    )
    for z, name in enumerate(CATEGORIES):
        x, v = joint_layout(z, data[name]["kp2d"][args.train :])
        with torch.no_grad():
            pred = model.predict(Sample(kp2d=x, vis=v)).kp3d[:, offsets[z] : offsets[z + 1]]
        rows.append(
            {
                "training": "joint",
                "category": name,
                **score(pred, data[name]["gt"][args.train :]),
                **info,
            }
        )
        print(rows[-1], flush=True)
    # Separate: one lifter per category on its own keypoints.
    for z, name in enumerate(CATEGORIES):
        n_k = sizes[z]
        model, info = train_lifter(
            data[name]["kp2d"][: args.train],
            torch.ones(args.train, n_k, dtype=torch.bool),
            torch.zeros(args.train, dtype=torch.long),
            1,
            args.out / f"separate-{name}",
            steps=args.steps,
            seed=args.seed,
            extra=extra,
        )
        with torch.no_grad():
            pred = model.predict(Sample(kp2d=data[name]["kp2d"][args.train :])).kp3d
        rows.append(
            {
                "training": "separate",
                "category": name,
                **score(pred, data[name]["gt"][args.train :]),
                **info,
            }
        )
        print(rows[-1], flush=True)

    for name in CATEGORIES:
        gt = data[name]["gt"][args.train :]
        flat = torch.cat([gt[..., :2], torch.zeros_like(gt[..., 2:])], -1)
        rows.append(
            {
                "training": "flat baseline (z = 0)",
                "category": name,
                **score(flat, gt),
                "steps": 0,
                "cpu_s": 0.0,
            }
        )
    lines = [
        "| training | category | MPJPE | Stress | P-MPJPE | steps | CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['training']} | {r['category']} | {r['mpjpe']:.4f} | {r['stress']:.4f} "
            f"| {r['p_mpjpe']:.4f} | {r['steps']} | {r['cpu_s']:.0f} |"
        )
    table = "\n".join(lines) + "\n\n(errors in units of each sample's 2D RMS radius)"
    write_results(args.out, table, {"seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
