"""Unsup3d renderer speed (issue 23): milliseconds per forward and forward+backward.

The renderer is what the official code needs CUDA for: Lambertian shading of the canonical
surface (:func:`kp3d.nn.depth_render.lambertian_shading`, normals by
:func:`kp3d.metrics.surface.depth_to_normals`) and the warp of the shaded canonical image to
the viewpoint through the depth map (:func:`kp3d.nn.depth_render.warp_canonical`: z-buffer
without gradient, differentiable barycentrics and ``grid_sample``). Inputs: random smooth depth
maps in [0.9, 1.1], albedo, light and viewpoints within Unsup3d's ranges, 64x64, batch 64, one
thread by default. ``--surface rough`` (every pixel 0.9 or 1.1 at random) with ``--yaw 60`` is
the worst case the rasteriser meets: the depth map of a collapsing run seen from the
viewpoint's bound, every triangle a sliver across the image. With ``--step`` it also times one
full training step of the method (``Unsup3D.losses``, backward, Adam), flip and confidence on,
perceptual term as configured.
Each figure is the median over ``--reps`` repetitions, wall clock and the process's CPU time
(on a shared machine the wall clock also counts waiting for a core)::

    nice python benchmarks/speed_unsup3d.py --threads 1 --step
    nice python benchmarks/speed_unsup3d.py --threads 1 --batch 32 --surface rough --yaw 60
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from speed_autolink import median_times

from kp3d.metrics.surface import depth_to_normals, unsup3d_intrinsics
from kp3d.nn.depth_render import euler_to_matrix, lambertian_shading, warp_canonical


def timed(fn: Callable[[], None], *, reps: int, warmup: int) -> dict[str, float]:
    """Median wall and CPU milliseconds of ``fn``."""
    wall, cpu = median_times(fn, reps=reps, warmup=warmup)
    return {"wall_ms": round(1000 * wall, 2), "cpu_ms": round(1000 * cpu, 2)}


def renderer_inputs(
    batch: int,
    size: int,
    *,
    surface: Literal["smooth", "rough"] = "smooth",
    yaw_deg: float | None = None,
    max_angle_deg: float = 20.0,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random inputs of the renderer within Unsup3d's ranges: ``smooth`` depth (low-resolution
    noise upsampled) or ``rough`` (each pixel 0.9 or 1.1); angles within +-``max_angle_deg``,
    the yaw set to ``yaw_deg`` in every view if given."""
    g = torch.Generator().manual_seed(seed)
    if surface == "smooth":
        low = torch.rand(batch, 1, size // 8, size // 8, generator=g)
        depth = 0.9 + 0.2 * F.interpolate(low, size=(size, size), mode="bilinear")
    else:
        depth = 0.9 + 0.2 * (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    angles = (torch.rand(batch, 3, generator=g) * 2 - 1) * math.radians(max_angle_deg)
    if yaw_deg is not None:
        angles[:, 1] = math.radians(yaw_deg)
    light = torch.cat((torch.rand(batch, 2, generator=g) - 0.5, torch.ones(batch, 1)), 1)
    return {
        "depth": depth,
        "albedo": torch.rand(batch, 3, size, size, generator=g),
        "light": F.normalize(light, dim=1),
        "ambient": 0.5 * torch.ones(batch),
        "diffuse": 0.5 * torch.ones(batch),
        "R": euler_to_matrix(angles),
        "t": (torch.rand(batch, 3, generator=g) * 2 - 1) * 0.05,
    }


def render(x: dict[str, torch.Tensor], K: torch.Tensor) -> torch.Tensor:
    """Shading and warp: the reconstruction ``Pi(Lambda(a, d, l), d, w)``."""
    normals = depth_to_normals(x["depth"], K, eps=1e-12)
    shading = lambertian_shading(normals, x["light"], x["ambient"], x["diffuse"])
    warp = warp_canonical(
        x["albedo"] * shading, x["depth"], x["R"], x["t"], K, centre_depth=1.0, background=1.2
    )
    return warp.image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--surface", choices=("smooth", "rough"), default="smooth")
    parser.add_argument("--yaw", type=float, default=None, help="turn every view by this yaw")
    parser.add_argument(
        "--max-angle", type=float, default=20.0, help="range of the random angles, +- degrees"
    )
    parser.add_argument("--step", action="store_true", help="also time a full training step")
    parser.add_argument(
        "--perceptual", default="efficientnet_lite0", help="the method's perceptual setting"
    )
    parser.add_argument("--json", type=str, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    K = unsup3d_intrinsics(args.size, args.size)
    x = renderer_inputs(
        args.batch, args.size, surface=args.surface, yaw_deg=args.yaw, max_angle_deg=args.max_angle
    )

    def forward() -> None:
        with torch.no_grad():
            render(x, K)

    def forward_backward() -> None:
        y = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in x.items()}
        render(y, K).square().mean().backward()

    results: dict[str, object] = {
        "size": args.size,
        "batch": args.batch,
        "surface": args.surface,
        "yaw_deg": args.yaw,
        "max_angle_deg": args.max_angle,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "renderer_forward": timed(forward, reps=args.reps, warmup=args.warmup),
        "renderer_forward_backward": timed(forward_backward, reps=args.reps, warmup=args.warmup),
    }
    if args.step:
        from kp3d.data.schema import Sample
        from kp3d.methods.unsup3d import Unsup3D, Unsup3DConfig

        torch.manual_seed(0)
        model = Unsup3D(Unsup3DConfig(image_size=args.size, perceptual=args.perceptual)).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-4)
        batch = Sample(image=torch.rand(args.batch, 3, args.size, args.size))

        def step() -> None:
            out = model.losses(batch, 0)
            weights = model.loss_weights()
            loss = sum(weights[k] * v for k, v in out.losses.items())
            opt.zero_grad()
            loss.backward()
            opt.step()

        results["training_step"] = timed(step, reps=max(1, args.reps // 2), warmup=1)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
