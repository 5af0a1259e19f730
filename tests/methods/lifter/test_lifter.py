from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.geometry.rotations import random_rotation
from kp3d.losses.lifting import reprojection_loss, shape_prior_loss
from kp3d.methods import get_method
from kp3d.methods.lifter import Lifter, LifterConfig
from kp3d.nn.lifting import LiftingOutput, normalise_keypoints

K = 6
SMALL = {"n_keypoints": K, "n_basis": 3, "width": 32, "n_layers": 1}

RigidRecovery = Callable[..., tuple[Tensor, Tensor]]
"""The ``rigid_recovery`` fixture of tests/methods/conftest.py."""


def batch(n: int = 8, seed: int = 0, categories: int = 1) -> Sample:
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(n, K, generator=g) > 0.25
    vis[:, :2] = True
    kp2d = 30 * torch.randn(n, K, 2, generator=g) + 100
    category = torch.randint(0, categories, (n,), generator=g)
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


def test_spec_and_config_validation() -> None:
    spec = get_method("lifter")
    assert spec.config_cls is LifterConfig and spec.inputs.name == "keypoints"
    assert spec.train_defaults == {"lr": 1e-3, "batch_size": 256, "bf16": False}
    # lifter = the paper (non-negative head, cycle); lifter-fit is its own method.
    assert LifterConfig().cycle_start == 1000
    assert get_method("lifter-fit").config_cls is not LifterConfig
    for bad in (
        {"n_categories": 0},
        {"cycle_start": -1},
        {"rotation": "euler"},
        {"norm": "group"},
        {"camera_weight": -1.0},
        {"huber_delta": -0.1},
        {"camera": "pinhole"},
        {"shape_prior_weight": -1.0},
    ):
        with pytest.raises(ConfigError):
            LifterConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_keypoints"):
        spec.build(LifterConfig())


def test_cycle_losses_vanish_for_a_perfectly_transversal_lifter() -> None:
    g = torch.Generator().manual_seed(0)
    X0 = torch.randn(K, 3, generator=g, dtype=torch.float64)
    X0 = X0 - X0.mean(0)
    model = Lifter(LifterConfig(**SMALL)).double()
    model.support[:] = True
    model.net = RigidOracle(X0)
    R = random_rotation(16, generator=g, dtype=torch.float64)
    norm = normalise_keypoints(70 * (X0 @ R.transpose(-1, -2))[..., :2] + 3)
    out = model.net(norm.kp2d, torch.ones(16, K, dtype=torch.float64))
    torch.testing.assert_close(out.shape_cam[..., :2], norm.kp2d)  # the oracle explains the view
    torch.testing.assert_close(out.R, R)
    cyc = model.cycle_losses(out, torch.zeros(16, dtype=torch.long), generator=g)
    assert cyc.camera.item() == pytest.approx(0.0, abs=1e-9)
    assert cyc.shape.item() == pytest.approx(0.0, abs=1e-9)
    # A lifter that cannot tell rotations apart is penalised.
    model.net = RigidOracle(X0, fixed_rotation=True)
    assert model.cycle_losses(out, torch.zeros(16, dtype=torch.long), generator=g).camera > 0.1


def test_two_training_steps_pretrain_then_cycle_with_frozen_statistics() -> None:
    torch.manual_seed(0)
    model = get_method("lifter").build(LifterConfig(**SMALL, cycle_start=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    for step in range(2):
        stats = bn.running_mean.clone()
        model.on_step(step)  # as the engine does before every step
        out = model.training_step(batch(seed=step), step)
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if step == 0:
            assert set(out.logs) == {"reprojection"} and not torch.equal(bn.running_mean, stats)
        else:
            assert set(out.logs) == {"reprojection", "camera", "shape"}
            assert torch.equal(bn.running_mean, stats)


def test_invisible_points_enter_no_loss() -> None:
    torch.manual_seed(0)
    model = Lifter(LifterConfig(**SMALL, cycle_start=0))
    b = batch()
    kp2d = b.kp2d.clone().requires_grad_(True)
    model.on_step(5)
    torch.manual_seed(1)  # the same cycle rotations in both evaluations
    loss = model.training_step(b.replace(kp2d=kp2d), 5).loss
    loss.backward()
    assert kp2d.grad[~b.vis].eq(0).all() and kp2d.grad[b.vis].ne(0).any()
    torch.manual_seed(1)
    again = model.training_step(b.replace(kp2d=b.kp2d - 500 * (~b.vis)[..., None]), 5).loss
    torch.testing.assert_close(again, loss.detach())


def test_category_keypoint_subsets_are_learned_from_visibility() -> None:
    model = Lifter(LifterConfig(**SMALL, n_categories=2))
    vis = torch.zeros(3, K, dtype=torch.bool)
    vis[0, :3] = vis[1, 1:4] = True  # category 0 owns keypoints 0..3
    vis[2, 4:] = True  # category 1 owns 4..5
    b = Sample(kp2d=torch.randn(3, K, 2), vis=vis, category=torch.tensor([0, 0, 1]))
    model.training_step(b, 0)
    expected = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(model.support, expected)
    with pytest.raises(ConfigError, match="n_categories = 2"):
        model.training_step(b.replace(category=torch.tensor([0, 2, 1])), 0)


def test_context_vector_and_non_negative_coefficients() -> None:
    model = Lifter(LifterConfig(**SMALL, context_dim=4, cycle_start=0))
    b = batch()
    out = model.objective(b.kp2d, b.vis, None, 0, context=torch.randn(8, 4))
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert {"camera", "shape"} <= set(out.losses)
    _, lifted = model.eval().lift(b.kp2d, b.vis, torch.randn(8, 4))
    assert lifted.alpha.ge(0).all() and lifted.shape.shape == (8, K, 3)
    with pytest.raises(ValueError, match="context"):
        model.predict(b)


def test_predict_keeps_the_input_xy() -> None:
    model = Lifter(LifterConfig(**SMALL)).eval()
    b = batch()
    pred = model.predict(b)
    assert pred.kp3d.shape == (8, K, 3)
    torch.testing.assert_close(pred.kp3d[..., :2][b.vis], b.kp2d[b.vis])


def test_recovers_rigid_shape_from_noise_free_views(rigid_recovery: RigidRecovery) -> None:
    err, flat = rigid_recovery(
        lambda: Lifter(
            LifterConfig(n_keypoints=8, n_basis=1, width=64, n_layers=1, cycle_start=200)
        ),
    )
    assert err < 0.05 and err < 0.1 * flat


def test_ensemble_members_train_side_by_side() -> None:
    torch.manual_seed(0)
    model = Lifter(LifterConfig(**SMALL, ensemble=2, cycle_start=None))
    assert len(model.members) == 2 and model.members[0] is model.net
    first, second = (m.shape_basis.raw_basis for m in model.members)
    assert not torch.equal(first, second)  # independently initialised
    b = batch()
    out = model.training_step(b, 0)
    out.loss.backward()
    assert first.grad is not None and second.grad is not None
    assert first.grad.abs().sum() > 0 and second.grad.abs().sum() > 0
    # The loss is the members' sum (each trains as if alone); the log is their mean.
    alone = []
    for net in model.members:
        norm, lifted = model.lift(b.kp2d, b.vis, net=net)
        alone.append(reprojection_loss(lifted.shape_cam, norm.kp2d, b.vis.float(), delta=0.1))
    torch.testing.assert_close(out.loss.detach(), (alone[0] + alone[1]).detach())
    torch.testing.assert_close(out.logs["reprojection"], (alone[0] + alone[1]).detach() / 2)
    with pytest.raises(ConfigError, match="ensemble"):
        LifterConfig(ensemble=0)


def test_ensemble_prediction_aligns_each_members_depth_sign() -> None:
    """The second member explains every view with the mirrored shape, i.e. the depth-reversed
    solution: aligned, it agrees with the first, so the average is the first's depth (an
    unaligned average would be 0)."""
    g = torch.Generator().manual_seed(0)
    X0 = torch.randn(K, 3, generator=g, dtype=torch.float64)
    X0 = X0 - X0.mean(0)
    model = Lifter(LifterConfig(**SMALL, ensemble=2)).double().eval()
    model.net = RigidOracle(X0)
    model.ensemble = nn.ModuleList([RigidOracle(X0 * X0.new_tensor([1.0, 1.0, -1.0]))])
    R = random_rotation(16, generator=g, dtype=torch.float64)
    kp2d = 70 * (X0 @ R.transpose(-1, -2))[..., :2] + 3
    pred = model.predict(Sample(kp2d=kp2d))
    z_first = 70 * (X0 @ R.transpose(-1, -2))[..., 2]
    z_first = z_first - z_first.mean(-1, keepdim=True)
    torch.testing.assert_close(pred.kp3d[..., 2], z_first)
    second = Lifter(LifterConfig(**SMALL)).double().eval()
    second.net = model.ensemble[0]
    torch.testing.assert_close(second.predict(Sample(kp2d=kp2d)).kp3d[..., 2], -z_first)


def test_split_ensemble_members_train_on_their_own_rows() -> None:
    torch.manual_seed(0)
    model = Lifter(LifterConfig(**SMALL, ensemble=3, ensemble_batches="split", cycle_start=None))
    rows = model.member_rows(8)
    assert rows == [slice(0, 2), slice(2, 4), slice(4, 6)]  # rows 6, 7 left out
    b = batch(n=8)
    out = model.training_step(b, 0)
    alone = []
    for net, r in zip(model.members, rows, strict=True):
        norm, lifted = model.lift(b.kp2d[r], b.vis[r], net=net)
        alone.append(reprojection_loss(lifted.shape_cam, norm.kp2d, b.vis[r].float(), delta=0.1))
    torch.testing.assert_close(out.loss.detach(), sum(alone).detach())
    # The first member's gradient comes from its rows only.
    first = model.members[0].shape_basis.raw_basis
    (grad,) = torch.autograd.grad(out.loss, first)
    changed = b.kp2d.clone()
    changed[2:] += 5 * torch.randn_like(changed[2:])
    moved = model.training_step(Sample(kp2d=changed, vis=b.vis, category=b.category), 0)
    torch.testing.assert_close(torch.autograd.grad(moved.loss, first)[0], grad)
    assert Lifter(LifterConfig(**SMALL, ensemble=3)).member_rows(8) == [slice(None)] * 3
    with pytest.raises(ValueError, match="at least one sample per member"):
        model.member_rows(2)
    with pytest.raises(ConfigError, match="ensemble_batches"):
        LifterConfig(ensemble_batches="bagged")  # type: ignore[arg-type]


def test_ensemble_objective_is_the_sum_of_the_members_own() -> None:
    """Members run together (one by one and stacked); the objective must be each member's reprojection, shape prior and cycle losses on its own
    rows, computed alone, summed."""
    cfg = LifterConfig(
        **SMALL,
        ensemble=2,
        ensemble_batches="split",
        n_categories=2,
        cycle_start=0,
        shape_prior_weight=0.5,
    )
    torch.manual_seed(0)
    model = Lifter(cfg).double()
    b = batch(n=10, categories=2)
    kp2d, vis = b.kp2d.double(), b.vis
    model.on_step(0)  # cycling: frozen statistics
    torch.manual_seed(1)  # the cycle's random rotations
    out = model.training_step(Sample(kp2d=kp2d, vis=vis, category=b.category), 0)
    torch.manual_seed(0)
    reference = Lifter(cfg).double()
    reference.load_state_dict(model.state_dict())  # the updated support and statistics
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.eval()  # cycling: frozen statistics, as in the step above
    torch.manual_seed(1)
    total = torch.zeros((), dtype=torch.float64)
    for net, rows in zip(reference.members, reference.member_rows(10), strict=True):
        w, cat = vis[rows].double(), b.category[rows]
        norm, lifted = reference.lift(kp2d[rows], vis[rows], net=net)
        cyc = reference.cycle_losses(lifted, cat, net=net)
        total = total + (
            reprojection_loss(lifted.shape_cam, norm.kp2d, w, delta=cfg.huber_delta)
            + 0.5 * shape_prior_loss(lifted.basis_shape, cat, reference.support[cat])
            + cfg.camera_weight * cyc.camera
            + cfg.shape_weight * cyc.shape
        )
    torch.testing.assert_close(out.loss, total)
    assert set(out.logs) == {"reprojection", "shape_prior", "camera", "shape"}


def test_prediction_leaves_out_flattened_members() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [torch.randn(K, 3, generator=g, dtype=torch.float64) for _ in range(4)]
    oracles = [RigidOracle(X - X.mean(0)) for X in shapes]
    R = random_rotation(16, generator=g, dtype=torch.float64)
    kp2d = 70 * (shapes[0] @ R.transpose(-1, -2))[..., :2] + 3
    alone = []
    for oracle in oracles:
        single = Lifter(LifterConfig(**SMALL)).double().eval()
        single.net = oracle
        alone.append(single.predict(Sample(kp2d=kp2d)))

    def average(kept: list[int]) -> Tensor:
        z0 = alone[kept[0]].kp3d[..., 2]
        zs = [z0]
        for i in kept[1:]:
            z = alone[i].kp3d[..., 2]
            flip = (z - z0).square().sum(-1) > (z + z0).square().sum(-1)
            zs.append(torch.where(flip[:, None], -z, z))
        return torch.stack(zs).mean(0)

    model = Lifter(LifterConfig(**SMALL, ensemble=4)).double().eval()
    model.net, model.ensemble = oracles[0], nn.ModuleList(oracles[1:])
    # Members 1 and 2 flattened (AFLW2000-3D's were at 0.35 against 0.61-0.63).
    model.depth_extent.copy_(torch.tensor([0.61, 0.35, 0.34, 0.63]))
    assert model.kept_members() == [oracles[0], oracles[3]]
    pred = model.predict(Sample(kp2d=kp2d))
    torch.testing.assert_close(pred.kp3d[..., 2], average([0, 3]))
    torch.testing.assert_close(pred.R, alone[0].R)
    assert not torch.allclose(pred.kp3d[..., 2], average([0, 1, 2, 3]))
    model.config = LifterConfig(**SMALL, ensemble=4, ensemble_tolerance=0.0)
    assert model.kept_members() == [oracles[3]]  # only the deepest
    model.depth_extent.fill_(float("nan"))  # untrained: all
    assert model.kept_members() == oracles
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="ensemble_tolerance"):
            LifterConfig(ensemble_tolerance=bad)


def test_statistics_freeze_at_cycle_start_also_after_a_resume(tmp_path: Path) -> None:
    """The engine calls on_step before every step: a run interrupted after cycle_start and
    resumed equals the uninterrupted one bitwise (CPU)."""
    from kp3d.engine import train

    data = [batch(n=1, seed=i) for i in range(16)]
    data = [Sample(kp2d=s.kp2d[0], vis=s.vis[0], category=s.category[0]) for s in data]
    settings = {"method_config": {**SMALL, "cycle_start": 2}}
    budget = {"batch_size": 8, "schedule": "constant", "warmup_steps": 0, "device": "cpu"}
    train("lifter", data, tmp_path / "whole", **settings, train_config={**budget, "steps": 5})
    train("lifter", data, tmp_path / "split", **settings, train_config={**budget, "steps": 3})
    train("lifter", data, tmp_path / "split", resume=True, train_config={"steps": 5})
    whole = (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert whole == (tmp_path / "split" / "model.safetensors").read_bytes()
    # Only steps 0 and 1 moved the statistics.
    weights = load_file(tmp_path / "split" / "model.safetensors")
    tracked = [v for k, v in weights.items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) == 2 for v in tracked)
