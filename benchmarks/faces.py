"""Real-face benchmark (issue 5): unsupervised keypoints on ytfaces68, scored like AutoLink.

For each method (``autolink``, ``autolink3d``) and each K, train on ALL images of
``SHARED/data/ytfaces68`` (training/ and test/, labels unused), 64x64, whole image resized, for a
fixed wall-clock budget; then fit the bias-free regression on ``training_landmarks.csv`` and test
on ``test_landmarks.csv``: NME-5 (MAFL reduction, eye-centre distance) and NME-68 (outer eye
corners). Writes ``OUT/results.json``, ``OUT/results.md`` and a keypoint-overlay montage per run.

    python benchmarks/faces.py --shared ../shared --minutes 30 --k 8 16 --out runs/faces

Compare with the AutoLink anchor in ``SHARED/ANCHORS.md`` (same data, protocol and budget).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/faces"))
    parser.add_argument("--methods", nargs="+", default=["autolink", "autolink3d"])
    parser.add_argument("--k", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget per run")
    parser.add_argument("--steps", type=int, default=None, help="step budget instead of --minutes")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra method-config values, e.g. n_basis=8 (JSON values)")
    args = parser.parse_args(argv)

    root = args.shared / "data" / "ytfaces68"
    if not (root / "training_landmarks.csv").is_file():
        print(f"error: {root} is missing: this benchmark needs the shared ytfaces68 data "
              "(pass --shared PATH)", file=sys.stderr)
        return 2

    from kp3d.data.adapters import open_dataset
    from kp3d.engine import TrainConfig, load_run, train
    from kp3d.evaluation import collect, evaluate_keypoint_discovery
    from kp3d.viz.report import draw_overlay, montage

    extra = {kv.split("=", 1)[0]: json.loads(kv.split("=", 1)[1]) for kv in args.set}
    data = open_dataset(root, size=args.size)
    fit = open_dataset(root, size=args.size, split="training")
    test = open_dataset(root, size=args.size, split="test")
    results = []
    for method in args.methods:
        for k in args.k:
            run_dir = args.out / f"{method}-k{k}"
            budget = {"steps": args.steps, "minutes": None} if args.steps else {"steps": None, "minutes": args.minutes}
            t0 = time.perf_counter()
            train(method, data, run_dir, method_config={"k": k, "image_size": args.size, **extra},
                  train_config=TrainConfig(seed=args.seed, **budget), resume=(run_dir / "config.json").exists())
            wall = time.perf_counter() - t0
            run = load_run(run_dir)
            with torch.no_grad():
                scores = evaluate_keypoint_discovery(collect(run.model, fit), collect(run.model, test))
                shown = [test[i] for i in range(0, len(test), max(1, len(test) // 32))][:32]
                from kp3d.data.schema import collate

                batch = collate(shown)
                pred = run.model.predict(batch)
            edges = []
            if run.model.skeleton() is not None:
                from kp3d.viz.html import top_edges

                edges = top_edges(run.model.skeleton().float().numpy(), min_weight=0.2)
            tiles = [draw_overlay(batch.image[i], pred["kp2d"][i].numpy(), edges) for i in range(len(shown))]
            montage(tiles).save(run_dir / "montage.png")
            log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
            row = {
                "method": method, "k": k, "nme5": scores["nme5"]["value"], "nme68": scores["nme68"]["value"],
                "steps": log[-1].get("step") if log else None, "wall_s": round(wall, 1),
                "images": (log[-1].get("step", 0) * run.train_config.batch_size) if log else None,
                "montage": str(run_dir / "montage.png"),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| method | K | NME-5 | NME-68 | steps | images | wall s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['k']} | {100 * r['nme5']:.2f}% | {100 * r['nme68']:.2f}% | "
              f"{r['steps']} | {r['images']} | {r['wall_s']} |" for r in results]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
