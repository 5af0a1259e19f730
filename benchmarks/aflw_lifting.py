"""AFLW2000-3D, 68 landmarks (issue 7): unsupervised 2D→3D lifting against the C3DPO anchor.

Data: ``SHARED/data/aflw2000_3d/AFLW2000-3D.pts68.npy`` (2000, 3, 68): x, y are the 2D input,
(x, y, z) the ground truth; faces 0–1599 train (2D only), 1600–1999 test, in file order.

Protocol (``SHARED/ANCHORS.md``, C3DPO's own): per face, centre the 2D points and divide by
``s`` = the RMS distance of the centred 2D points from their centre (pixels); the ground truth
is centred and divided by the same ``s``. A lifter keeps the input x, y and predicts depth; mean
depth is set to 0 in both (:func:`kp3d.metrics.mpjpe`), MPJPE takes the better of z and -z per
face, Stress runs over all pairs i < j, P-MPJPE aligns each face by a similarity transform.
Pixel errors are per-face errors times that face's ``s``, then averaged.

Rows: ``c3dpo`` and ``lifter`` trained by :func:`kp3d.engine.train` with a step budget on one CPU
thread (the CPU time each used is reported), and two baselines: flat (z = 0) and the mean
*training 3D* shape (generalised Procrustes over the training faces' ground truth) fitted to
each test face by the best orthographic camera; that one uses 3D labels.

    nice .venv/bin/python benchmarks/aflw_lifting.py --shared ../shared --out runs/aflw_lifting

Writes ``OUT/results.json`` and ``OUT/results.md``; the run folders and the ``.npz`` files of the
split (usable with ``kp3d train`` / ``kp3d evaluate``) go to ``OUT`` as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

N_TRAIN = 1600
"""Faces 0..1599 train, the rest (1600..1999) test, in file order."""

ANCHOR_MPJPE_PX = 4.16
"""C3DPO's official code on this split and protocol (``SHARED/ANCHORS.md``)."""

DEFAULT_STEPS = {"c3dpo": 5000, "lifter": 5000}


def load_faces(shared: Path) -> np.ndarray:
    """(2000, 68, 3) float64 landmark positions in pixels; exits with a message if missing."""
    path = shared / "data" / "aflw2000_3d" / "AFLW2000-3D.pts68.npy"
    if not path.is_file():
        sys.exit(f"error: {path} is missing: this benchmark needs the shared AFLW2000-3D landmarks "
                 "(pass --shared PATH)")
    pts = np.load(path)
    if pts.shape != (2000, 3, 68):
        sys.exit(f"error: {path}: expected shape (2000, 3, 68), got {pts.shape}")
    return pts.transpose(0, 2, 1).astype(np.float64)


def protocol_units(gt_px: Tensor) -> tuple[Tensor, Tensor]:
    """Per-face 2D centre (N, 2) and scale ``s`` (N,): RMS distance of the centred 2D points."""
    centre = gt_px[..., :2].mean(-2)
    s = (gt_px[..., :2] - centre[:, None]).square().sum(-1).mean(-1).sqrt()
    return centre, s


def to_units(x_px: Tensor, centre: Tensor, s: Tensor) -> Tensor:
    """Points (N, K, 3) in pixels -> the protocol's units: 2D-centred, divided by ``s``."""
    return torch.cat([x_px[..., :2] - centre[:, None], x_px[..., 2:]], dim=-1) / s[:, None, None]


def score(pred_px: Tensor, gt_px: Tensor) -> dict[str, dict[str, float]]:
    """MPJPE (depth flip), Stress, P-MPJPE (flip allowed) in normalised units and pixels."""
    from kp3d.metrics import mpjpe, p_mpjpe, stress

    centre, s = protocol_units(gt_px)
    pred, gt = to_units(pred_px, centre, s), to_units(gt_px, centre, s)
    per_face = {
        "mpjpe": mpjpe(pred, gt, flip_z=True, reduction="none"),
        "stress": stress(pred, gt, reduction="none"),
        "p_mpjpe": p_mpjpe(pred, gt, flip_z=True, reduction="none"),
    }
    return {k: {"norm": v.mean().item(), "px": (v * s).mean().item()} for k, v in per_face.items()}


def flat_baseline(test_px: Tensor) -> Tensor:
    """The input x, y with z = 0."""
    return torch.cat([test_px[..., :2], torch.zeros_like(test_px[..., 2:])], dim=-1)


def mean_training_shape(train_px: Tensor, iterations: int = 10) -> Tensor:
    """(K, 3) generalised-Procrustes mean of the training faces' 3D shapes, in protocol units."""
    from kp3d.geometry import procrustes

    centre, s = protocol_units(train_px)
    shapes = to_units(train_px, centre, s)
    shapes = shapes - shapes.mean(-2, keepdim=True)
    mean = shapes[0]
    for _ in range(iterations):
        aligned = procrustes(shapes, mean.expand_as(shapes), mode="orthogonal").aligned
        mean = aligned.mean(0)
        mean = mean - mean.mean(0)
    return mean


def best_orthographic_fit(shape: Tensor, kp2d: Tensor, iterations: int = 300) -> Tensor:
    """Depths (N, K) of ``shape`` (K, 3) under the best scaled-orthographic camera for each view.

    Minimises ``sum_k || c Pi(R X_k) + t - y_k ||^2`` over rotation R, scale c, translation t per
    view (``kp2d`` (N, K, 2), centred): initialised by the affine fit projected onto scaled
    rotations, refined by L-BFGS over (axis-angle, log c).
    """
    import roma

    from kp3d.geometry.rotations import axis_angle_to_matrix

    n = kp2d.shape[0]
    y = kp2d - kp2d.mean(-2, keepdim=True)
    A = torch.linalg.lstsq(shape.expand(n, -1, -1), y).solution.transpose(-1, -2)  # (N, 2, 3)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    rows = U @ Vh
    R0 = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], dim=1)
    rotvec = roma.rotmat_to_rotvec(R0).clone().requires_grad_(True)
    log_c = S.mean(-1).log().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([rotvec, log_c], max_iter=iterations, line_search_fn="strong_wolfe")

    def camera_frame() -> Tensor:
        return log_c.exp()[:, None, None] * (shape @ axis_angle_to_matrix(rotvec).transpose(-1, -2))

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (camera_frame()[..., :2] - y).square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return camera_frame()[..., 2]


def mean_shape_baseline(train_px: Tensor, test_px: Tensor) -> Tensor:
    """Input x, y with the depth of the mean training 3D shape at its best orthographic fit."""
    centre, s = protocol_units(test_px)
    y = to_units(test_px, centre, s)[..., :2]
    z = best_orthographic_fit(mean_training_shape(train_px), y) * s[:, None]
    return torch.cat([test_px[..., :2], z[..., None]], dim=-1)


def write_split(out: Path, faces: np.ndarray) -> tuple[Path, Path]:
    """``train.npz`` (kp2d only: training never sees 3D) and ``test.npz`` (kp2d and kp3d)."""
    out.mkdir(parents=True, exist_ok=True)
    train, test = out / "train.npz", out / "test.npz"
    np.savez(train, kp2d=faces[:N_TRAIN, :, :2].astype(np.float32))
    np.savez(test, kp2d=faces[N_TRAIN:, :, :2].astype(np.float32),
             kp3d=faces[N_TRAIN:].astype(np.float32))
    return train, test


def train_and_predict(method: str, train_path: Path, test_px: Tensor, run_dir: Path, *,
                      steps: int, seed: int, method_config: dict) -> tuple[Tensor, dict]:
    """Train ``method`` with the engine (one thread); predict the test faces' 3D keypoints."""
    from kp3d.data.adapters import open_dataset
    from kp3d.data.schema import Sample
    from kp3d.engine import TrainConfig, train
    from kp3d.metrics import mutual_coherence

    data = open_dataset(train_path, format="keypoints_npz")
    cfg = TrainConfig(steps=steps, batch_size=256, lr=1e-3, seed=seed, bf16=False,
                      ckpt_every=steps, log_every=100, device="cpu")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = train(method, data, run_dir, method_config=method_config, train_config=cfg,
                   progress_bar=False)
    info = {"steps": result.steps, "cpu_s": time.process_time() - cpu0,
            "wall_s": time.perf_counter() - wall0, "final_loss": result.final_loss}
    model = result.model.eval()
    with torch.no_grad():
        pred = model.predict(Sample(kp2d=test_px[..., :2].float()))
        info["mutual_coherence"] = mutual_coherence(model.net.shape_basis.basis).item()
    return pred["kp3d"].double(), info


def markdown(rows: list[dict]) -> str:
    header = ("| method (test, 400 faces) | MPJPE (norm / px) | Stress (norm / px) "
              "| P-MPJPE (norm / px) | steps | CPU s |")
    lines = [header, "|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        cells = [f"{m[k]['norm']:.4f} / {m[k]['px']:.2f}" for k in ("mpjpe", "stress", "p_mpjpe")]
        steps = str(r.get("steps", "")) or "–"
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else "–"
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {steps} | {cpu} |")
    lines.append(f"\nC3DPO anchor (official code, ANCHORS.md): MPJPE {ANCHOR_MPJPE_PX} px; "
                 f"goal <= {0.8 * ANCHOR_MPJPE_PX:.2f} px.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared"),
                        help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/aflw_lifting"))
    parser.add_argument("--methods", nargs="*", default=["c3dpo", "lifter"])
    parser.add_argument("--steps", type=int, default=None,
                        help=f"step budget per method (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="METHOD.KEY=VALUE",
                        help="method-config values, e.g. lifter.n_basis=8 (JSON values)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    faces = load_faces(args.shared)
    extra: dict[str, dict] = {m: {} for m in args.methods}
    for kv in args.set:
        key, value = kv.split("=", 1)
        method, field = key.split(".", 1)
        extra.setdefault(method, {})[field] = json.loads(value)
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"error: {args.out} is not empty; choose another --out")
    train_path, _ = write_split(args.out, faces)
    all_px = torch.from_numpy(faces)
    train_px, test_px = all_px[:N_TRAIN], all_px[N_TRAIN:]

    rows: list[dict] = []
    for method in args.methods:
        steps = args.steps or DEFAULT_STEPS[method]
        pred, info = train_and_predict(method, train_path, test_px, args.out / method,
                                       steps=steps, seed=args.seed, method_config=extra[method])
        rows.append({"name": method, "metrics": score(pred, test_px), **info})
        print(markdown(rows[-1:]).splitlines()[-3], flush=True)
    rows.append({"name": "flat, z = 0", "metrics": score(flat_baseline(test_px), test_px)})
    rows.append({"name": "mean training 3D shape, best orthographic fit (uses 3D labels)",
                 "metrics": score(mean_shape_baseline(train_px, test_px), test_px)})

    table = markdown(rows)
    print(table)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"seed": args.seed, "anchor_mpjpe_px": ANCHOR_MPJPE_PX, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
