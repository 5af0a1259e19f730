from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.geometry.rotations import random_rotation
from kp3d.losses.lifting import reprojection_loss, shape_prior_loss
from kp3d.methods import get_method
from kp3d.methods.lifter_fit import LifterFit, LifterFitConfig
from kp3d.nn.lifting import LiftingOutput, normalise_keypoints

K = 6
SMALL = {"n_keypoints": K, "n_basis": 3, "width": 32, "n_layers": 1, "ensemble": 1}

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
    spec = get_method("lifter-fit")
    assert spec.config_cls is LifterFitConfig and spec.inputs.name == "keypoints"
    assert spec.train_defaults == {"lr": 1e-3, "batch_size": 512, "bf16": False}
    c = LifterFitConfig()
    assert (c.coefficient_ridge, c.motion_free_basis, c.ensemble, c.ensemble_batches) == (
        1.0,
        True,
        4,
        "split",
    )
    for bad in (
        {"n_categories": 0},
        {"refine_steps": -1},
        {"rotation": "euler"},
        {"norm": "group"},
        {"huber_delta": -0.1},
        {"camera": "pinhole"},
        {"shape_prior_weight": -1.0},
        {"coefficient_ridge": 0.0},
        {"ensemble": 0},
        {"ensemble_batches": "bagged"},
        {"ensemble_tolerance": 1.0},
    ):
        with pytest.raises(ConfigError):
            LifterFitConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_keypoints"):
        spec.build(LifterFitConfig())


def test_category_keypoint_subsets_are_learned_from_visibility() -> None:
    model = LifterFit(LifterFitConfig(**SMALL, n_categories=2))
    vis = torch.zeros(3, K, dtype=torch.bool)
    vis[0, :3] = vis[1, 1:4] = True  # category 0 owns keypoints 0..3
    vis[2, 4:] = True  # category 1 owns 4..5
    b = Sample(kp2d=torch.randn(3, K, 2), vis=vis, category=torch.tensor([0, 0, 1]))
    model.training_step(b, 0)
    expected = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(model.support, expected)
    with pytest.raises(ConfigError, match="n_categories = 2"):
        model.training_step(b.replace(category=torch.tensor([0, 2, 1])), 0)


def test_predict_keeps_the_input_xy() -> None:
    model = LifterFit(LifterFitConfig(**SMALL)).eval()
    b = batch()
    pred = model.predict(b)
    assert pred.kp3d.shape == (8, K, 3)
    torch.testing.assert_close(pred.kp3d[..., :2][b.vis], b.kp2d[b.vis])


def test_recovers_rigid_shape_from_noise_free_views(rigid_recovery: RigidRecovery) -> None:
    err, flat = rigid_recovery(
        lambda: LifterFit(
            LifterFitConfig(
                n_keypoints=8,
                n_basis=1,
                width=64,
                n_layers=1,
                coefficient_ridge=10.0,
                motion_free_basis=False,
                ensemble=1,
            )
        ),
    )
    assert err < 0.05 and err < 0.1 * flat


def test_fitted_shape_recovers_a_deforming_low_rank_shape(rigid_recovery: RigidRecovery) -> None:
    err, flat = rigid_recovery(
        lambda: LifterFit(
            LifterFitConfig(
                n_keypoints=8, n_basis=1, width=64, n_layers=1, coefficient_ridge=1e-3, ensemble=1
            )
        ),
        deform=0.3,
    )
    assert err < 0.05 and err < 0.1 * flat


def test_fitted_coefficients_explain_views_of_the_shape_space() -> None:
    """With coefficient_ridge > 0 the shape is the closed-form fit to the view for the predicted
    rotation: a view of a shape in the model's span is reproduced exactly (tiny ridge)."""
    torch.manual_seed(0)
    model = LifterFit(LifterFitConfig(**SMALL, coefficient_ridge=1e-9)).eval()
    net = model.net
    assert net.coefficient_ridge == 1e-9 and net.shape_basis.motion_free and net.alpha_head is None
    with torch.no_grad():
        beta = torch.randn(8, 3)
        bias = net.shape_basis.bias - net.shape_basis.bias.mean(0)
        X = 2.0 * bias + torch.einsum("bn,nkc->bkc", beta, net.shape_basis.basis)
        out0 = net(normalise_keypoints(torch.randn(8, K, 2)).kp2d, torch.ones(8, K))
        kp2d = 30 * (X @ out0.R.transpose(-1, -2))[..., :2] + 7  # a view for the net's R
        norm, out = model.lift(kp2d)
    torch.testing.assert_close(out.R, out0.R)  # all samples get R = I from the fresh head
    projected = out.shape_cam[..., :2] - out.shape_cam[..., :2].mean(-2, keepdim=True)
    torch.testing.assert_close(projected, norm.kp2d, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.alpha, beta / 2.0, atol=1e-3, rtol=1e-3)


def test_ensemble_members_train_side_by_side() -> None:
    torch.manual_seed(0)
    model = LifterFit(LifterFitConfig(**{**SMALL, "ensemble": 2}, ensemble_batches="shared"))
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


def test_ensemble_prediction_aligns_each_members_depth_sign() -> None:
    """The second member explains every view with the mirrored shape, i.e. the depth-reversed
    solution: aligned, it agrees with the first, so the average is the first's depth (an
    unaligned average would be 0)."""
    g = torch.Generator().manual_seed(0)
    X0 = torch.randn(K, 3, generator=g, dtype=torch.float64)
    X0 = X0 - X0.mean(0)
    model = LifterFit(LifterFitConfig(**{**SMALL, "ensemble": 2}, refine_steps=0)).double().eval()
    model.net = RigidOracle(X0)
    model.ensemble = nn.ModuleList([RigidOracle(X0 * X0.new_tensor([1.0, 1.0, -1.0]))])
    R = random_rotation(16, generator=g, dtype=torch.float64)
    kp2d = 70 * (X0 @ R.transpose(-1, -2))[..., :2] + 3
    pred = model.predict(Sample(kp2d=kp2d))
    z_first = 70 * (X0 @ R.transpose(-1, -2))[..., 2]
    z_first = z_first - z_first.mean(-1, keepdim=True)
    torch.testing.assert_close(pred.kp3d[..., 2], z_first)
    second = LifterFit(LifterFitConfig(**SMALL, refine_steps=0)).double().eval()
    second.net = model.ensemble[0]
    torch.testing.assert_close(second.predict(Sample(kp2d=kp2d)).kp3d[..., 2], -z_first)


def test_split_ensemble_members_train_on_their_own_rows() -> None:
    torch.manual_seed(0)
    model = LifterFit(LifterFitConfig(**{**SMALL, "ensemble": 3}, ensemble_batches="split"))
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
    shared = LifterFitConfig(**{**SMALL, "ensemble": 3}, ensemble_batches="shared")
    assert LifterFit(shared).member_rows(8) == [slice(None)] * 3
    with pytest.raises(ValueError, match="at least one sample per member"):
        model.member_rows(2)


def test_ensemble_objective_is_the_sum_of_the_members_own() -> None:
    """Members run together as one batched network; the objective must be each member's
    reprojection and shape prior on its own rows, computed alone, summed."""
    cfg = LifterFitConfig(
        **{**SMALL, "ensemble": 2}, ensemble_batches="split", n_categories=2, shape_prior_weight=0.5
    )
    torch.manual_seed(0)
    model = LifterFit(cfg).double()
    b = batch(n=10, categories=2)
    kp2d, vis = b.kp2d.double(), b.vis
    out = model.training_step(Sample(kp2d=kp2d, vis=vis, category=b.category), 0)
    torch.manual_seed(0)
    reference = LifterFit(cfg).double()
    reference.load_state_dict(model.state_dict())  # the updated support and statistics
    reference.eval()  # the statistics the step above normalised with are its batch's
    total = torch.zeros((), dtype=torch.float64)
    for net, rows in zip(reference.members, reference.member_rows(10), strict=True):
        w, cat = vis[rows].double(), b.category[rows]
        net.train()
        norm, lifted = reference.lift(kp2d[rows], vis[rows], net=net)
        total = total + (
            reprojection_loss(lifted.shape_cam, norm.kp2d, w, delta=cfg.huber_delta)
            + 0.5 * shape_prior_loss(lifted.basis_shape, cat, reference.support[cat])
        )
    torch.testing.assert_close(out.loss, total)
    assert set(out.logs) == {"reprojection", "shape_prior"}


def test_depth_extent_is_the_running_mean_of_each_members_depth_rms() -> None:
    torch.manual_seed(0)
    model = LifterFit(LifterFitConfig(**{**SMALL, "ensemble": 2}, ensemble_batches="split"))
    assert model.depth_extent.isnan().all()

    def naive(b: Sample) -> Tensor:
        extents = []
        for net, r in zip(model.members, model.member_rows(len(b.kp2d)), strict=True):
            _, lifted = model.lift(b.kp2d[r], b.vis[r], net=net)
            z, vis = lifted.shape_cam[..., 2].detach(), b.vis[r]
            rms = [
                (z[s][vis[s]] - z[s][vis[s]].mean()).square().mean().sqrt() for s in range(len(z))
            ]
            extents.append(torch.stack(rms).mean())
        return torch.stack(extents)

    first, second = batch(n=8, seed=1), batch(n=8, seed=2)
    expected = 0.99 * naive(first) + 0.01 * naive(second)  # no optimiser: the weights stay
    model.training_step(first, 0)
    model.training_step(second, 1)
    torch.testing.assert_close(model.depth_extent, expected)
    model.eval()
    model.training_step(batch(seed=3), 2)  # evaluation passes leave it alone
    torch.testing.assert_close(model.depth_extent, expected)
    # Saved with the weights; runs saved before it existed load with NaN (every member kept).
    state = {k: v for k, v in model.state_dict().items() if k != "depth_extent"}
    model.load_state_dict(state)
    assert model.depth_extent.isnan().all() and model.kept_members() == model.members


def test_prediction_leaves_out_flattened_members() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [torch.randn(K, 3, generator=g, dtype=torch.float64) for _ in range(4)]
    oracles = [RigidOracle(X - X.mean(0)) for X in shapes]
    R = random_rotation(16, generator=g, dtype=torch.float64)
    kp2d = 70 * (shapes[0] @ R.transpose(-1, -2))[..., :2] + 3
    alone = []
    for oracle in oracles:
        single = LifterFit(LifterFitConfig(**SMALL, refine_steps=0)).double().eval()
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

    model = LifterFit(LifterFitConfig(**{**SMALL, "ensemble": 4}, refine_steps=0)).double().eval()
    model.net, model.ensemble = oracles[0], nn.ModuleList(oracles[1:])
    # Members 1 and 2 flattened (AFLW2000-3D's were at 0.35 against 0.61-0.63).
    model.depth_extent.copy_(torch.tensor([0.61, 0.35, 0.34, 0.63]))
    assert model.kept_members() == [oracles[0], oracles[3]]
    pred = model.predict(Sample(kp2d=kp2d))
    torch.testing.assert_close(pred.kp3d[..., 2], average([0, 3]))
    torch.testing.assert_close(pred.R, alone[0].R)
    assert not torch.allclose(pred.kp3d[..., 2], average([0, 1, 2, 3]))
    model.config = LifterFitConfig(
        **{**SMALL, "ensemble": 4}, ensemble_tolerance=0.0, refine_steps=0
    )
    assert model.kept_members() == [oracles[3]]  # only the deepest
    model.depth_extent.fill_(float("nan"))  # untrained: all
    assert model.kept_members() == oracles


def test_two_training_steps_change_every_member() -> None:
    torch.manual_seed(0)
    model = LifterFit(LifterFitConfig(**{**SMALL, "ensemble": 2}))
    groups = model.param_groups()
    opt = torch.optim.Adam([{"params": list(g.params), "lr": 1e-3 * g.lr_scale} for g in groups])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(2):
        model.on_step(step)
        out = model.training_step(batch(seed=step), step)
        assert torch.isfinite(out.loss) and set(out.logs) == {"reprojection"}
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    changed = {
        n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])
    }
    assert changed == {"net", "ensemble"}
