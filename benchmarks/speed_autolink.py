"""autolink3d / autolink speed (issue 4): training and keypoint-inference images per second.

Target on a 2-core laptop-class CPU at 64x64, K=16, batch 32: training >= 60 images/s,
keypoint inference (``predict``) >= 1000 images/s. Measures, for each precision setting:

* ``train``: one full optimisation step as the engine runs it (forward, backward, gradient-norm
  clipping, AdamW update) on a fixed batch of random images;
* ``infer``: ``model.predict`` in eval mode (detector + soft-argmax, and the 3D head for
  ``autolink3d``), no gradients.

Settings: ``fp32`` (NCHW), ``fp32-cl`` (channels-last) and ``bf16-cl`` (bf16 autocast +
channels-last; meaningful only where the CPU computes bf16 natively, which the table says).
Each figure is the median over ``--reps`` timed repetitions, as wall-clock images/s and as
the rate the process's CPU time allows on ``--threads`` cores (``cpu-bound``). On a machine
shared with other jobs the wall clock also counts waiting for a core, so both are lower bounds
on what an idle machine does. Run it with ``nice`` when the machine is shared::

    nice python benchmarks/speed_autolink.py
    nice python benchmarks/speed_autolink.py --method autolink --threads 1 --json speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from kp3d.data.schema import Sample
from kp3d.engine.loop import bf16_native
from kp3d.methods import get_method

SETTINGS = {"fp32": (False, False), "fp32-cl": (False, True), "bf16-cl": (True, True)}


def median_times(fn: Callable[[], None], *, reps: int, warmup: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _rates(
    fn: Callable[[], None], images: int, reps: int, warmup: int, threads: int
) -> dict[str, float]:
    wall, cpu = median_times(fn, reps=reps, warmup=warmup)
    return {"images_per_s": images / wall, "cpu_bound_images_per_s": images * threads / cpu}


def measure(
    method: str,
    setting: str,
    *,
    k: int,
    size: int,
    batch: int,
    reps: int,
    warmup: int,
    threads: int,
) -> dict[str, object]:
    bf16, channels_last = SETTINGS[setting]
    spec = get_method(method)
    torch.manual_seed(0)
    model = spec.build(spec.config_cls(**{**spec.overrides, "k": k, "image_size": size}))
    image = torch.rand(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    sample = Sample(image=image)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)  # as kp3d.engine does

    def train_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.training_step(sample, 0)
        out.loss.float().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.predict(sample)

    model.train()
    train = _rates(train_step, batch, reps, warmup, threads)
    model.eval()
    inference = _rates(infer, batch, reps * 4, warmup * 2, threads)
    return {
        "method": method,
        "setting": setting,
        "train": train,
        "infer": inference,
        "trainable_parameters": sum(p.numel() for p in params),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="autolink3d", choices=["autolink3d", "autolink"])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    native = bf16_native(torch.device("cpu"))
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, "
        f"{a.threads} threads, native bf16: {native}"
    )
    print(
        f"{a.method}: {a.size}x{a.size}, K={a.k}, batch {a.batch}, median of {a.reps} reps "
        "(wall-clock images/s; in brackets: the rate this process's CPU time allows)"
    )
    results = []
    for setting in a.settings:
        r = measure(
            a.method,
            setting,
            k=a.k,
            size=a.size,
            batch=a.batch,
            reps=a.reps,
            warmup=a.warmup,
            threads=a.threads,
        )
        results.append(r)
        train, infer = r["train"], r["infer"]
        note = (
            ""
            if not setting.startswith("bf16") or native
            else "  (no native bf16 on this CPU: emulated, slow)"
        )
        print(
            f"  {setting:8s} train {train['images_per_s']:7.1f} "
            f"({train['cpu_bound_images_per_s']:7.1f})"
            f"   infer {infer['images_per_s']:8.1f} ({infer['cpu_bound_images_per_s']:8.1f}){note}"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"threads": a.threads, "native_bf16": native, "results": results}, f, indent=1
            )


if __name__ == "__main__":
    main()
