"""3D face keypoints, the flagship paper's Table 3 (issue 24): 3D NME by yaw bin on faces.

The paper trains on 300W-LP and tests on AFLW2000-3D; here ``kp3d synth face`` (Surrey Face
Model faces with exact 3D landmarks, yaw +-70 degrees) stands in for both: a training set and a
test set of another seed, ``--size`` pixels. Every learned row has the same budget
(``--minutes`` of CPU time on ``--threads`` threads). Rows:

``autolink3d``
    the method's own 3D keypoints (``kp3d_image``: its detections with its head's depth).
``autolink+flat``
    ``autolink`` (the 2D method) keypoints at a constant depth.
``autolink+lifter-fit``
    two stages, the stand-in for AutoLink + MiDaS: ``lifter-fit`` trained on ``autolink``'s
    keypoints of the training images (``--lifter-steps``, not counted in the budget), its 3D
    keypoints of the test images.
``autolink+unsup3d``
    ``autolink``'s keypoints with the depth of an ``unsup3d`` model trained on the same images
    (same budget), sampled at the keypoints (AutoLink + Unsup3d).
``supervised``
    the 3DDFA stand-in, an upper bound: ``autolink3d``'s detector backbone (same width and
    heatmap resolution) with one heatmap per landmark and a depth head on its pooled features,
    trained by L1 on the ground-truth 3D landmarks in the image frame.

Protocol: :func:`kp3d.metrics.nme_3d` as in ``kp3d evaluate``: the 3K -> 3L regression fitted
on ``--fit`` training faces, scored on the test faces, 3DDFA's box normaliser, the 50 iBUG
landmarks that are fixed vertices of the model (``_lifting.SFM_LANDMARKS``); per-image errors
averaged in 3DDFA's absolute-yaw bins [0, 30], [30, 60], [60, 90] degrees (yaw from the
generator's head rotation) and the mean of the bin means.

    python benchmarks/faces3d.py --shared ../shared --minutes 30 --threads 1 --out runs/faces3d

Writes ``OUT/results.json`` and ``OUT/results.md``; data sets go to ``--data`` (default
``OUT/data``; share it between processes that run different rows), runs to ``OUT/<row>``.
Rerunning with the same ``--out`` resumes unfinished runs and rescores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _lifting import SFM_LANDMARKS
from torch import Tensor, nn
from torch.nn import functional as F

ROWS = ("autolink3d", "autolink+flat", "autolink+lifter-fit", "autolink+unsup3d", "supervised")
BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


@dataclass(frozen=True)
class Faces:
    """Images and ground truth of one face set, landmarks restricted to the 50 fixed ones."""

    images: Tensor  # (N, 3, S, S) in [0, 1]
    kp2d: Tensor  # (N, L, 2) pixels
    kp3d_image: Tensor  # (N, L, 3) image frame (u, v, scaled depth), pixels
    yaw_deg: Tensor  # (N,) absolute yaw


def make_sets(
    shared: Path, folder: Path, *, n_train: int, n_test: int, size: int
) -> tuple[Path, Path]:
    """``FOLDER/train`` (seed 0) and ``FOLDER/test`` (seed 1), generated once."""
    from kp3d.data.adapters.synth import write

    sfm = shared / "assets" / "sfm"
    if not sfm.is_dir():
        sys.exit(f"error: {sfm} is missing: this benchmark needs the Surrey Face Model (--shared)")
    paths = []
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        path = folder / name
        if not (path / "meta.json").exists():
            write(path, "face", n, size=size, seed=seed, sfm_dir=sfm, overwrite=True)
        paths.append(path)
    return paths[0], paths[1]


def signed_head_yaw_deg(extrinsics: Tensor) -> Tensor:
    """Yaw in degrees of the face generator's cameras, (N, 3, 4) -> (N,).

    The generator's rotation is ``diag(1, -1, -1) R_z(roll) R_y(yaw) R_x(pitch)``, whose
    (2, 0) entry is ``sin(yaw)``.
    """
    return torch.rad2deg(torch.asin(extrinsics[:, 2, 0].clamp(-1.0, 1.0)))


def head_yaw_deg(extrinsics: Tensor) -> Tensor:
    """|yaw| in degrees (:func:`signed_head_yaw_deg`), what 3DDFA's bins read."""
    return signed_head_yaw_deg(extrinsics).abs()


def load_faces(path: Path, size: int, limit: int | None = None) -> Faces:
    """The set at ``path`` as one :class:`Faces` (the first ``limit`` samples)."""
    from kp3d.data.adapters import open_dataset
    from kp3d.data.schema import collate
    from kp3d.evaluation import image_frame_3d

    data = open_dataset(path, size=size)
    n = len(data) if limit is None else min(limit, len(data))
    batch = collate([data[i] for i in range(n)])
    idx = list(SFM_LANDMARKS)
    kp2d, kp3d = batch.kp2d[:, idx].double(), batch.kp3d[:, idx].double()
    return Faces(
        batch.image, kp2d, image_frame_3d(kp3d, kp2d), head_yaw_deg(batch.extrinsics.double())
    )


def unit3(points: Tensor, size: int) -> Tensor:
    """Image-frame pixels -> unit coordinates (``kp3d evaluate``'s frame for 3D NME)."""
    return points.double() / size


def score(fit_pred: Tensor, fit: Faces, test_pred: Tensor, test: Faces, size: int) -> dict:
    """3D NME overall, per yaw bin and the mean of the bin means (fractions)."""
    from kp3d.metrics import nme_3d

    r = nme_3d(
        unit3(fit_pred, size),
        unit3(fit.kp3d_image, size),
        unit3(test_pred, size),
        unit3(test.kp3d_image, size),
        "bbox",
    )
    out: dict[str, Any] = {"nme3d": float(r.nme)}
    means = []
    for lo, hi in BINS:
        sel = (test.yaw_deg >= lo) & (test.yaw_deg < hi)
        value = float(r.per_image[sel].mean()) if bool(sel.any()) else math.nan
        out[f"yaw_{lo:.0f}_{hi:.0f}"] = value
        out[f"n_{lo:.0f}_{hi:.0f}"] = int(sel.sum())
        if not math.isnan(value):
            means.append(value)
    out["bin_mean"] = sum(means) / len(means)
    return out


def predict_images(model: Any, images: Tensor, batch: int = 128) -> Any:
    """A trained image method's :class:`~kp3d.methods.Prediction` on ``images``, batched."""
    from kp3d.data.schema import Sample
    from kp3d.methods import Prediction

    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            parts.append(model.predict(Sample(image=images[i : i + batch])))
    return Prediction.cat(parts)


def train_image_method(
    method: str, data_path: Path, run_dir: Path, args: argparse.Namespace
) -> tuple[Any, dict]:
    """Train (or resume) ``method`` on the images at ``data_path`` for the row budget, with the
    method's own training defaults (``kp3d train``'s)."""
    from kp3d.data.adapters import open_dataset
    from kp3d.engine import load_run, train

    config: dict[str, Any] = {"image_size": args.size}
    if method in ("autolink3d", "autolink"):
        config["k"] = args.k
    c0 = time.process_time()
    done = train(
        method,
        open_dataset(data_path, size=args.size),
        run_dir,
        method_config=config,
        # A mapping, not a TrainConfig: the method's train_defaults then apply.
        train_config={"seed": args.seed, "steps": None, "minutes": args.minutes, "clock": "cpu"},
        resume=(run_dir / "config.json").exists(),
        progress_bar=False,
    )
    return load_run(run_dir).model, {"steps": done.steps, "cpu_s": time.process_time() - c0}


class Supervised(nn.Module):
    """The detector backbone with L landmark heatmaps (x, y) and a depth head (z), all in
    normalised units ([-1, 1] over the image; z scaled like x)."""

    def __init__(self, landmarks: int, *, width: int, n_up: int) -> None:
        from kp3d.nn.detector import Detector

        super().__init__()
        self.detector = Detector(landmarks, width=width, n_up=n_up)
        self.depth = nn.Linear(self.detector.feature_channels, landmarks)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, L, 3)."""
        det = self.detector(image * 2 - 1)
        z = self.depth(det.features.mean(dim=(-2, -1)))
        return torch.cat([det.kp, z[..., None]], -1)


def normalised(points: Tensor, size: int) -> Tensor:
    """Image-frame pixels (..., 3) -> normalised units: x, y in [-1, 1], z scaled like them."""
    from kp3d.geometry import pixel_to_normalised

    return torch.cat(
        [pixel_to_normalised(points[..., :2], (size, size)), points[..., 2:] * 2 / size], -1
    )


def image_frame(points: Tensor, size: int) -> Tensor:
    """The inverse of :func:`normalised`."""
    from kp3d.geometry import normalised_to_pixel

    return torch.cat(
        [normalised_to_pixel(points[..., :2], (size, size)), points[..., 2:] * size / 2], -1
    )


def train_supervised(
    train: Faces, run_dir: Path, args: argparse.Namespace
) -> tuple[nn.Module, dict]:
    """Train :class:`Supervised` for the row budget (AdamW at the engine's default lr and
    batch); the weights are cached in ``run_dir``."""
    from kp3d.methods.autolink3d import AutoLink3DConfig

    cfg = AutoLink3DConfig(k=args.k, image_size=args.size)
    n_up = (cfg.heatmap_size // (args.size // 16)).bit_length() - 1
    model = Supervised(train.kp2d.shape[1], width=cfg.base_width, n_up=n_up)
    path = run_dir / "supervised.pt"
    if path.exists():
        state = torch.load(path)
        model.load_state_dict(state["model"])
        return model.eval(), state["info"]
    run_dir.mkdir(parents=True, exist_ok=True)
    target = normalised(train.kp3d_image, args.size).float()
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    c0, steps, loss = time.process_time(), 0, torch.zeros(())
    model.train()
    while time.process_time() - c0 < args.minutes * 60:
        idx = torch.randint(len(target), (32,), generator=gen)
        loss = F.l1_loss(model(train.images[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    info = {"steps": steps, "cpu_s": time.process_time() - c0, "final_loss": float(loss.detach())}
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "info": info}, tmp)
    tmp.replace(path)
    return model.eval(), info


def supervised_predict(model: nn.Module, images: Tensor, size: int) -> Tensor:
    """Image-frame pixels (N, L, 3) from :class:`Supervised`."""
    with torch.no_grad():
        out = torch.cat([model(images[i : i + 128]) for i in range(0, len(images), 128)])
    return image_frame(out, size).double()


def lift(
    kp2d_train: Tensor, kp2d_test: Tensor, run_dir: Path, *, seed: int, steps: int
) -> tuple[Tensor, dict]:
    """``lifter-fit`` trained on ``kp2d_train`` for ``steps``, 3D of ``kp2d_test``:
    x, y the input keypoints, z its depth, in the keypoints' pixels."""
    import numpy as np
    from aflw_lifting import train_and_predict

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "train.npz"
    np.savez(path, kp2d=kp2d_train.numpy().astype(np.float32))
    pred, info = train_and_predict(
        "lifter-fit",
        path,
        kp2d_test.double(),
        run_dir / "lifter-fit",
        steps=steps,
        seed=seed,
        method_config={},
    )
    return pred, {k: info[k] for k in ("steps", "cpu_s")}


def depth_at(model: Any, images: Tensor, kp2d: Tensor) -> Tensor:
    """``unsup3d``'s input-view depth at (N, K, 2) pixel keypoints, (N, K, 1).

    :func:`kp3d.geometry.sample_depth` on the predicted depth and mask; a keypoint off the
    predicted surface takes its image's median valid depth (the regression needs finite
    inputs)."""
    from kp3d.geometry import sample_depth

    pred = predict_images(model, images)
    scale = pred.depth.shape[-1] / images.shape[-1]
    z, valid = sample_depth(pred.depth.double(), kp2d.double() * scale, mask=pred.mask.double())
    fill = torch.stack(
        [
            zi[vi].median() if bool(vi.any()) else pred.depth[i].median()
            for i, (zi, vi) in enumerate(zip(z, valid))
        ]
    )
    return torch.where(valid, z, fill[:, None].to(z.dtype))[..., None]


def with_depth(kp2d: Tensor, z: Tensor | None = None) -> Tensor:
    """(N, K, 3) from (N, K, 2) pixels and a depth (default: constant)."""
    z = torch.zeros_like(kp2d[..., :1]) if z is None else z
    return torch.cat([kp2d.double(), z.double()], -1)


def run_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every requested row: train what it needs (cached), predict fit and test, score."""
    train_path, test_path = make_sets(
        args.shared,
        args.data or args.out / "data",
        n_train=args.n_train,
        n_test=args.n_test,
        size=args.size,
    )
    fit = load_faces(train_path, args.size, args.fit)
    test = load_faces(test_path, args.size)
    rows: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}

    def image_method(method: str) -> tuple[Any, dict]:
        if method not in cache:
            cache[method] = train_image_method(method, train_path, args.out / method, args)
        return cache[method]

    def autolink_kp2d() -> tuple[Tensor, Tensor, dict]:
        """``autolink``'s keypoints of the fit and test faces, predicted once for all rows."""
        if "autolink_kp2d" not in cache:
            model, info = image_method("autolink")
            fk, tk = predict_images(model, fit.images).kp2d, predict_images(model, test.images).kp2d
            cache["autolink_kp2d"] = (fk, tk, info)
        return cache["autolink_kp2d"]

    for row in args.rows:
        t0 = time.perf_counter()
        if row == "autolink3d":
            model, info = image_method("autolink3d")
            fp, tp = predict_images(model, fit.images), predict_images(model, test.images)
            f3, t3 = fp.kp3d_image.double(), tp.kp3d_image.double()
        elif row == "autolink+flat":
            fk, tk, info = autolink_kp2d()
            f3, t3 = with_depth(fk), with_depth(tk)
        elif row == "autolink+lifter-fit":
            fk, tk, info = autolink_kp2d()
            # The regression is fitted on the lifter's 3D of the fit faces, i.e. of its own
            # training keypoints, as the paper's two-stage rows are.
            both, lift_info = lift(
                fk,
                torch.cat([fk, tk]),
                args.out / "lifter",
                seed=args.seed,
                steps=args.lifter_steps,
            )
            f3, t3 = both[: len(fk)], both[len(fk) :]
            info = {**info, "lifter": lift_info}
        elif row == "autolink+unsup3d":
            fk, tk, info = autolink_kp2d()
            depth_model, depth_info = image_method("unsup3d")
            f3 = with_depth(fk, depth_at(depth_model, fit.images, fk))
            t3 = with_depth(tk, depth_at(depth_model, test.images, tk))
            info = {**info, "unsup3d": depth_info}
        elif row == "supervised":
            model, info = train_supervised(load_faces(train_path, args.size), args.out / row, args)
            f3 = supervised_predict(model, fit.images, args.size)
            t3 = supervised_predict(model, test.images, args.size)
        else:  # argparse's choices keep this unreachable
            raise ValueError(row)
        result = {"row": row, **score(f3, fit, t3, test, args.size), **info}
        result["score_wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(result)
        print(json.dumps(result), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table: 3D NME (%) per yaw bin, their mean, overall; steps and CPU s of the model."""
    lines = [
        "| row | [0, 30] | [30, 60] | [60, 90] | bin mean | all | steps | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r[f"yaw_{lo:.0f}_{hi:.0f}"] for lo, hi in BINS] + [r["bin_mean"], r["nme3d"]]
        lines.append(
            f"| {r['row']} | "
            + " | ".join("–" if math.isnan(v) else f"{100 * v:.2f}" for v in cells)
            + f" | {r.get('steps', '–')} | {r.get('cpu_s', 0):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("runs/faces3d"))
    parser.add_argument(
        "--data", type=Path, default=None, help="folder of the face sets (default OUT/data)"
    )
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--minutes", type=float, default=30.0, help="CPU minutes per model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k", type=int, default=16, help="keypoints of autolink/autolink3d")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--fit", type=int, default=2000, help="training faces of the regression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lifter-steps", type=int, default=8500, help="steps of lifter-fit (its benchmark budget)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run_rows(args)
    table = markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    doc = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
