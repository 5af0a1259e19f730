"""KeypointNet benchmark (issue 21): relative pose from discovered 3D keypoints, against a
supervised rotation regressor, the ground-truth joints and autolink3d, and the multi-view pose
probe.

For each category and seed, synthesises (once, cached under ``OUT/data``) a training set, a
held-out test set of the same kind, and a held-out ``--rig V`` set for the pose probe:

* ``--data rig`` (default): ``kp3d synth CAT --rig V`` moments (train seed 0, test seed 1);
  the test pairs are view 0 with every other view of each test moment;
* ``--data pairs``: ``kp3d synth CAT --pairs`` view pairs (train seed 0, test seed 1), each
  test pair once; the probe still runs on the rig test set. 20000 training pairs by default:
  with 1500, 30 CPU-minutes of keypointnet fitted its training pairs and not held-out ones.

A rig's cameras are fixed, so its pairs have only V - 1 relative rotations (view 0 with each
other camera): a regressor can learn them by heart where the training and test rigs agree.
``--data pairs`` draws a new relative rotation for every pair.

Then, each with the same CPU budget (``--minutes`` of ``--clock``):

* ``keypointnet`` with ``kp3d train`` (method-config values from ``--set``), and each ablation
  of ``--variants``: ``no_sep`` (``--lambda-sep 0``), ``no_obj`` (``--lambda-obj 0``),
  ``no_orient`` (``--orientation off``);
* the supervised baseline (``--baseline``): the same 13-layer dilated network on the two
  images stacked as 6 channels, averaged over the image and regressed to a rotation (6D
  representation, :func:`kp3d.geometry.rotation_6d_to_matrix`) with the geodesic loss against
  the true relative rotation (AdamW, the keypointnet run's learning rate and batch);
* ``autolink3d`` (``--no-autolink`` skips it).

Scored on the test pairs (and, with ``--data pairs``, also on the rig test set's pairs:
``rig_mean``, ``rig_median``): the relative-pose angle (``mean``, ``median`` degrees, ``under_15``,
``under_30`` fractions; :func:`kp3d.metrics.probe.relative_pose_errors`) of R-hat from the
rigid Procrustes alignment of the two views' predicted 3D keypoints, of the baseline's
regressed rotation, of R-hat from the ground-truth 3D joints (the floor), of the identity (what
a model that learned nothing scores: the pairs' own rotation angles), and of R-hat from
the 3D keypoints of ``autolink3d`` (``--autolink``, on by default: trained on the same set with
the same K and budget, each view a single image); and ``kp3d evaluate``'s ``pose_probe`` on the
rig test set (P-MPJPE of the linear and MLP probes at 1/10/100% of the fit moments, first half
fit, second half test).

    python benchmarks/keypointnet.py --categories creature quadruped --seeds 0 1 \\
        --minutes 30 --clock cpu --threads 1 --out runs/keypointnet
    # ablations (another --out, or the same one: rows are merged by their key)
    python benchmarks/keypointnet.py --categories creature --seeds 0 --minutes 30 \\
        --clock cpu --threads 1 --variants no_sep no_obj no_orient --no-baseline \\
        --no-autolink --out runs/keypointnet

Writes ``OUT/results.json`` (every row), ``OUT/results.md`` and each run folder
``OUT/CAT-sSEED/VARIANT`` (with ``eval.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _unsupervised import add_list_argument, parse_set
from torch import Tensor, nn

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no_sep": ["--lambda-sep", "0"],
    "no_obj": ["--lambda-obj", "0"],
    "no_orient": ["--orientation", "off"],
}
"""keypointnet's variants: the ablation switches as method-config flags of ``kp3d train``."""

COLUMNS = [
    "category",
    "seed",
    "model",
    "mean",
    "median",
    "under_15",
    "under_30",
    "rig_mean",
    "rig_median",
    "probe_linear_p_mpjpe",
    "probe_mlp_p_mpjpe",
    "steps",
    "cpu_s",
    "train_loss_deg",
]


# -- data ---------------------------------------------------------------------------------------


def synthesise(folder: Path, category: str, n: int, seed: int, size: int, flags: list[str]) -> Path:
    """``kp3d synth`` into ``folder`` unless it is there already."""
    from kp3d.cli import main as kp3d

    if not (folder / "meta.json").exists():
        args = ["synth", category, "--n", str(n), "--seed", str(seed), "--size", str(size)]
        code = kp3d([*args, *flags, "--out", str(folder), "--overwrite"])
        if code:
            raise SystemExit(f"kp3d synth failed for {folder} (exit {code})")
    return folder


def test_pairs(dataset: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The test pairs of a multi-view set: view 0 with every other view of each moment.

    Returns:
        images a, b (P, 3, S, S); intrinsics a, b (P, 3, 3) stacked (2, P, 3, 3); relative
        rotations (P, 3, 3), camera a to b; ground-truth 3D joints a, b stacked (2, P, L, 3);
        and the moment of each pair (P,).
    """
    from kp3d.data.schema import collate
    from kp3d.metrics.probe import relative_rotation

    batch = collate([dataset[i] for i in range(len(dataset))])
    image, E, K, joints = batch.image, batch.extrinsics, batch.intrinsics, batch.kp3d
    V = image.shape[1]
    a = torch.zeros(V - 1, dtype=torch.long)
    b = torch.arange(1, V)
    images = torch.stack((image[:, a].flatten(0, 1), image[:, b].flatten(0, 1)))
    Ks = torch.stack((K[:, a].flatten(0, 1), K[:, b].flatten(0, 1)))
    R = relative_rotation(E[:, a], E[:, b]).flatten(0, 1)
    gt = torch.stack((joints[:, a].flatten(0, 1), joints[:, b].flatten(0, 1)))
    moment = torch.arange(len(image)).repeat_interleave(V - 1)
    return images, Ks, R, gt, moment


# -- the supervised baseline -----------------------------------------------------------------


class RotationRegressor(nn.Module):
    """The paper's supervised baseline: KeypointNet's network on the stacked image pair,
    averaged over the image, regressed to the relative rotation (6D representation)."""

    def __init__(self, width: int, features: int = 64) -> None:
        super().__init__()
        from kp3d.methods.keypointnet import DilatedFCN

        self.net = DilatedFCN(6, features, width=width)
        self.head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(features, 6))

    def forward(self, image_a: Tensor, image_b: Tensor) -> Tensor:
        from kp3d.geometry import rotation_6d_to_matrix

        x = torch.cat((image_a, image_b), 1) * 2 - 1
        return rotation_6d_to_matrix(self.head(self.net(x).mean((-2, -1))).double()).float()


def train_baseline(
    dataset: Any,
    *,
    width: int,
    lr: float,
    batch_size: int,
    seconds: float | None,
    steps: int | None,
    clock: str,
    seed: int,
) -> tuple[RotationRegressor, int, float, float]:
    """:class:`RotationRegressor` trained on random view pairs of ``dataset`` (calibrated
    moments) for ``seconds`` of ``clock`` time, or ``steps`` steps. Returns the model (eval
    mode), the steps it took, the ``clock`` seconds they took and the mean training loss in
    degrees over the last tenth of the steps (did it fit its own training pairs?)."""
    from kp3d.data.schema import collate
    from kp3d.geometry import geodesic_distance
    from kp3d.metrics.probe import relative_rotation

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = RotationRegressor(width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    now = time.process_time if clock == "cpu" else time.perf_counter
    start, done, losses = now(), 0, []
    while (seconds is None or now() - start < seconds) and (steps is None or done < steps):
        idx = torch.randint(0, len(dataset), (batch_size,), generator=g)
        batch = collate([dataset[int(i)] for i in idx])
        V = batch.image.shape[1]
        a = torch.randint(0, V, (batch_size,), generator=g)
        b = (a + torch.randint(1, V, (batch_size,), generator=g)) % V
        rows = torch.arange(batch_size)
        R = relative_rotation(batch.extrinsics[rows, a], batch.extrinsics[rows, b])
        R_hat = model(batch.image[rows, a], batch.image[rows, b])
        loss = geodesic_distance(R_hat, R).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        done += 1
    seconds = now() - start
    tail = losses[-max(1, len(losses) // 10) :]
    return model.eval(), done, seconds, math.degrees(sum(tail) / len(tail))


# -- scoring ---------------------------------------------------------------------------------


@torch.no_grad()
def predicted_keypoints(model: nn.Module, images: Tensor, K: Tensor) -> Tensor:
    """3D keypoints (2, P, N, 3) a loaded run's model predicts from each image of the pairs,
    each in its camera's frame (intrinsics given)."""
    from kp3d.data.schema import Sample

    out = []
    for view in range(2):
        chunks = []
        for s in range(0, images.shape[1], 64):
            batch = Sample(image=images[view, s : s + 64], intrinsics=K[view, s : s + 64])
            chunks.append(model.predict(batch).kp3d.float())
        out.append(torch.cat(chunks))
    return torch.stack(out)


def probe_columns(run_dir: Path) -> dict[str, Any]:
    """P-MPJPE of the linear and MLP probes at 100% of the fit moments from ``eval.json``,
    and the whole pose-probe result."""
    doc = json.loads((run_dir / "eval.json").read_text())
    probe = doc["results"].get("pose_probe")
    if probe is None:
        return {"probe_skipped": doc["skipped"].get("pose_probe")}
    table = probe["probe"]
    return {
        "probe_linear_p_mpjpe": table.get("linear", {}).get("100%", {}).get("p_mpjpe"),
        "probe_mlp_p_mpjpe": table.get("mlp", {}).get("100%", {}).get("p_mpjpe"),
        "pose_probe": probe,
    }


Pairs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
"""The test pairs of :func:`test_pairs`."""


def scored_sets(
    sets: dict[str, Pairs], errors: Callable[[Pairs], dict[str, float]]
) -> dict[str, Any]:
    """``errors(pairs)`` (angle statistics) for each test set, the keys of each set prefixed
    with its name (``""`` for the main test set, ``"rig_"`` for the rig test set)."""
    return {
        prefix + k: v
        for prefix, pairs in sets.items()
        for k, v in rounded(errors(pairs)).items()
        if not prefix or k in ("mean", "median")
    }


def train_and_score(
    method: str,
    run_dir: Path,
    flags: list[str],
    rig_test: Path,
    probe: str,
    sets: dict[str, Pairs],
) -> dict[str, Any]:
    """Train ``method`` with ``kp3d train`` flags (unless ``run_dir`` holds a finished run),
    evaluate it with the pose probe on ``rig_test``, and score the relative pose of each set of
    test pairs (:func:`test_pairs`, :func:`scored_sets`) from its 3D keypoints. Returns the
    row's scores."""
    from kp3d.cli import main as kp3d
    from kp3d.engine import load_run
    from kp3d.metrics.probe import relative_pose_errors

    cpu = None
    if not (run_dir / "result.json").exists():
        cpu0 = time.process_time()
        if kp3d(["train", "--method", method, "--out", str(run_dir), *flags]):
            raise SystemExit(f"kp3d train failed for {run_dir}")
        cpu = time.process_time() - cpu0
    if kp3d(["evaluate", "--run", str(run_dir), "--data", str(rig_test), "--probe", probe]):
        raise SystemExit(f"kp3d evaluate failed for {run_dir}")
    result = json.loads((run_dir / "result.json").read_text())
    model = load_run(run_dir).model.eval()  # once for every set of pairs

    def errors(pairs: Pairs) -> dict[str, float]:
        images, K, R, _, _ = pairs
        kp = predicted_keypoints(model, images, K)
        return relative_pose_errors(kp[0], kp[1], R)

    return {
        **scored_sets(sets, errors),
        **probe_columns(run_dir),
        "steps": result.get("steps"),
        "cpu_s": None if cpu is None else round(cpu, 1),
        "run": str(run_dir),
    }


def rounded(errors: dict[str, float]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in errors.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/keypointnet"))
    parser.add_argument("--categories", nargs="+", default=["creature"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", choices=["rig", "pairs"], default="rig")
    parser.add_argument("--rig", type=int, default=4, help="cameras of the rig sets")
    parser.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="training pairs (--data pairs, default 20000) or moments (--data rig, default 1500)",
    )
    parser.add_argument("--n-test", type=int, default=400, help="test moments (pairs)")
    parser.add_argument("--sequences", type=int, default=20, help="motion clips of the rig sets")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--k", type=int, default=10, help="keypoints of keypointnet")
    parser.add_argument("--minutes", type=float, default=30.0, help="budget of every run")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument(
        "--steps", type=int, default=None, help="a step budget instead of --minutes (tests)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--variants", nargs="*", choices=sorted(VARIANTS), default=["full"], metavar="VARIANT"
    )
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--autolink",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train autolink3d (same data, keypoints and budget) and score it alike",
    )
    parser.add_argument("--probe", choices=["linear", "linear+mlp"], default="linear+mlp")
    add_list_argument(
        parser, "--set", metavar="KEY=VALUE", help="extra keypointnet config values (JSON)"
    )
    args = parser.parse_args(argv)
    if args.n_train is None:  # 1500 pairs over-fitted within 30 CPU-minutes (docs/results.md)
        args.n_train = 20000 if args.data == "pairs" else 1500

    from kp3d.data.adapters import open_dataset
    from kp3d.engine.atomic import atomic_write_text
    from kp3d.methods import get_method
    from kp3d.methods.keypointnet import KeypointNetConfig
    from kp3d.metrics.probe import relative_pose_errors, rotation_errors

    if args.threads:
        torch.set_num_threads(args.threads)
    extra = parse_set(args.set)
    train_defaults = get_method("keypointnet").train_defaults
    set_flags = [x for k, v in extra.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    budget = (
        ["--steps", str(args.steps)]
        if args.steps
        else ["--minutes", str(args.minutes), "--clock", args.clock, "--steps", "none"]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"

    def read_rows() -> list[dict[str, Any]]:
        return json.loads(path.read_text()) if path.exists() else []

    def add(row: dict[str, Any]) -> None:
        # Read again: another invocation (other categories or seeds) may share this --out.
        key = (row["category"], row["seed"], row["model"])
        rows = [r for r in read_rows() if (r["category"], r["seed"], r["model"]) != key] + [row]
        rows.sort(key=lambda r: (r["category"], r["seed"], r["model"]))
        atomic_write_text(path, json.dumps(rows, indent=2))
        print(json.dumps({k: row.get(k) for k in COLUMNS}), flush=True)

    for category in args.categories:
        data = args.out / "data"
        rig = ["--rig", str(args.rig), "--sequences"]
        rig_test = synthesise(
            data / f"{category}-rig{args.rig}-test",
            category,
            args.n_test,
            1,
            args.size,
            [*rig, str(max(1, args.sequences // 4))],
        )
        if args.data == "rig":
            train = synthesise(
                data / f"{category}-rig{args.rig}-train",
                category,
                args.n_train,
                0,
                args.size,
                [*rig, str(args.sequences)],
            )
            test = rig_test
        else:
            train = synthesise(
                data / f"{category}-pairs-train", category, args.n_train, 0, args.size, ["--pairs"]
            )
            test = synthesise(
                data / f"{category}-pairs-test", category, args.n_test, 1, args.size, ["--pairs"]
            )
        sets = {"": test_pairs(open_dataset(test, size=args.size))}
        if test != rig_test:
            sets["rig_"] = test_pairs(open_dataset(rig_test, size=args.size))
        base = {"category": category, "data": args.data, "pairs": int(sets[""][2].shape[0])}
        for seed in args.seeds:
            where = args.out / f"{category}-s{seed}"
            # What a model that learned nothing scores: the test pairs' own rotation angles.
            add(
                {
                    **base,
                    "seed": seed,
                    "model": "identity rotation",
                    **scored_sets(
                        sets, lambda p: rotation_errors(torch.eye(3).expand_as(p[2]), p[2])
                    ),
                }
            )
            add(
                {
                    **base,
                    "seed": seed,
                    "model": "ground-truth joints",
                    **scored_sets(sets, lambda p: relative_pose_errors(p[3][0], p[3][1], p[2])),
                }
            )

            jobs = [
                (f"keypointnet {v}", "keypointnet", v, [*VARIANTS[v], *set_flags])
                for v in args.variants
            ]
            jobs += [("autolink3d", "autolink3d", "autolink3d", [])] if args.autolink else []
            common = ["--data", str(train), "--k", str(args.k), "--size", str(args.size)]
            common += [*budget, "--seed", str(seed)]
            for model, method, folder, flags in jobs:
                run_flags = [*common, *flags]
                scores = train_and_score(
                    method, where / folder, run_flags, rig_test, args.probe, sets
                )
                add({**base, "seed": seed, "model": model, **scores})
            if args.baseline:
                lr = float(train_defaults["lr"])
                width = int(extra.get("width", KeypointNetConfig().width))
                regressor, steps, seconds, train_loss = train_baseline(
                    open_dataset(train, size=args.size),
                    width=width,
                    lr=lr,
                    batch_size=int(train_defaults["batch_size"]),
                    seconds=None if args.steps else args.minutes * 60,
                    steps=args.steps,
                    clock=args.clock,
                    seed=seed,
                )

                @torch.no_grad()
                def errors(
                    pairs: Pairs, regressor: RotationRegressor = regressor
                ) -> dict[str, float]:
                    images, R = pairs[0], pairs[2]
                    R_hat = [
                        regressor(images[0, s : s + 64], images[1, s : s + 64])
                        for s in range(0, images.shape[1], 64)
                    ]
                    return rotation_errors(torch.cat(R_hat), R)

                add(
                    {
                        **base,
                        "seed": seed,
                        "model": "supervised rotation regressor",
                        **scored_sets(sets, errors),
                        "steps": steps,
                        f"{args.clock}_s": round(seconds, 1),
                        "train_loss_deg": round(train_loss, 2),
                    }
                )

    rows = read_rows()
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [
        "| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |"
        for r in rows
    ]
    table = "\n".join(lines) + "\n"
    atomic_write_text(args.out / "results.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
