"""Shared by the lifting methods' tests: small keypoint batches, an oracle lifting network for
one rigid shape, and recovery of a low-rank shape from noise-free views."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from kp3d.data.schema import Sample
from kp3d.geometry.rotations import axis_angle_to_matrix
from kp3d.methods.base import MethodModel
from kp3d.metrics import mpjpe
from kp3d.nn.lifting import LiftingOutput

RigidRecovery = Callable[..., tuple[Tensor, Tensor]]
KeypointBatch = Callable[..., Sample]


def _keypoint_batch(
    n: int = 8, seed: int = 0, *, k: int = 6, categories: int | None = None, occlude: bool = True
) -> Sample:
    """``n`` random keypoint sets (pixels, around 100) of ``k`` keypoints from a generator seeded
    ``seed``: each keypoint visible with probability 3/4 (all with ``occlude=False``), the
    first two always, invisible ones at 0; category labels below ``categories`` if given."""
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(n, k, generator=g) > 0.25 if occlude else torch.ones(n, k, dtype=torch.bool)
    vis[:, :2] = True
    kp2d = 30 * torch.randn(n, k, 2, generator=g) + 100
    category = None if categories is None else torch.randint(0, categories, (n,), generator=g)
    return Sample(kp2d=kp2d * vis[..., None], vis=vis, category=category)


class RigidOracle(nn.Module):
    """A perfectly transversal lifter for one rigid shape: recovers any orthographic view exactly.

    The normalised input is ``Pi(R X0) / s``; the affine fit ``y = X0 A^T`` gives ``A = R_xy / s``,
    hence ``R`` (rows normalised, third row their cross product) and the shape ``X0 / s``.
    """

    def __init__(self, X0: Tensor, *, fixed_rotation: bool = False) -> None:
        super().__init__()
        self.X0, self.fixed_rotation = X0, fixed_rotation

    def forward(self, kp2d: Tensor, vis: Tensor, context: Tensor | None = None) -> LiftingOutput:
        A = torch.linalg.lstsq(self.X0.expand(len(kp2d), -1, -1), kp2d).solution.transpose(-1, -2)
        inv_s = A.norm(dim=-1).mean(-1)
        rows = A / A.norm(dim=-1, keepdim=True)
        R = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], dim=1)
        if self.fixed_rotation:
            R = torch.eye(3, dtype=kp2d.dtype).expand_as(R)
        shape = self.X0 * inv_s[:, None, None]
        return LiftingOutput(
            R,
            torch.zeros(len(kp2d), 1, dtype=kp2d.dtype),
            shape,
            shape,
            shape @ R.transpose(-1, -2),
        )


def _rigid_recovery(
    build: Callable[[], MethodModel],
    *,
    index_generator: torch.Generator | None = None,
    n: int = 512,
    k: int = 8,
    steps: int = 400,
    deform: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Train ``build()`` (made after ``torch.manual_seed(0)``) for ``steps`` Adam steps on
    noise-free orthographic views (pixels) of one rigid shape, or with ``deform > 0`` of a rank-1
    shape space ``X + a S`` with ``a ~ N(0, deform)`` per view; returns (MPJPE with depth flip,
    MPJPE of flat depth) in the protocol's per-sample normalised units.

    The views come from a generator seeded 0; batches are drawn from ``index_generator``, or
    from that same generator's continued stream when None.
    """
    g = torch.Generator().manual_seed(0)
    X = torch.randn(k, 3, generator=g)
    R = axis_angle_to_matrix(0.6 * torch.randn(n, 3, generator=g))
    shapes = (X - X.mean(0)).expand(n, k, 3)
    if deform > 0:
        S = torch.randn(k, 3, generator=g)
        shapes = shapes + deform * torch.randn(n, 1, 1, generator=g) * (S - S.mean(0))
    cam = 50 * shapes @ R.transpose(-1, -2)
    kp2d = cam[..., :2] + 100
    torch.manual_seed(0)
    model = build()
    # The engine's optimizer set-up: the model's groups, each at its learning-rate scale.
    opt = torch.optim.Adam(
        [{"params": list(g.params), "lr": 3e-3 * g.lr_scale} for g in model.param_groups()]
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    draw = g if index_generator is None else index_generator
    for step in range(steps):
        idx = torch.randint(0, n, (128,), generator=draw)
        model.on_step(step)
        loss = model.training_step(Sample(kp2d=kp2d[idx]), step).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    pred = model.eval().predict(Sample(kp2d=kp2d)).kp3d
    s = (kp2d - kp2d.mean(1, keepdim=True)).square().sum(-1).mean(-1).sqrt()[:, None, None]
    gt = torch.cat([kp2d, cam[..., 2:]], -1) / s
    err = mpjpe(pred / s, gt, flip_z=True)
    flat = mpjpe(torch.cat([kp2d / s, torch.zeros_like(gt[..., 2:])], -1), gt)
    return err, flat


@pytest.fixture
def rigid_recovery() -> RigidRecovery:
    """:func:`_rigid_recovery`."""
    return _rigid_recovery


@pytest.fixture
def keypoint_batch() -> KeypointBatch:
    """:func:`_keypoint_batch`."""
    return _keypoint_batch


@pytest.fixture
def rigid_oracle() -> type[RigidOracle]:
    """:class:`RigidOracle`."""
    return RigidOracle
