"""What the lifting methods share, tested once per method: the common settings
(:class:`kp3d.nn.lifting.LiftingConfig`), the prediction protocol, and the ensemble of ``lifter``
and ``lifter-fit`` (:class:`kp3d.nn.lifting.LiftingEnsemble`)."""

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.geometry.rotations import random_rotation
from kp3d.losses.lifting import reprojection_loss
from kp3d.methods import get_method

K = 6
SMALL = {"n_keypoints": K, "n_basis": 3, "width": 32, "n_layers": 1}

PLAIN = {"lifter": {"cycle_start": None}, "lifter-fit": {"ensemble": 1, "refine_steps": 0}}
"""Per ensemble method: the settings under which its members are plain lifting networks, whose
losses and predictions the tests rebuild (``lifter`` without its cycle, ``lifter-fit`` as one
network without the test-time refinement)."""

KeypointBatch = Callable[..., Sample]
"""The ``keypoint_batch`` fixture of tests/methods/conftest.py."""
Make = Callable[..., Any]
"""``make(**settings)``: the method's model for :data:`SMALL` updated with ``settings``."""


def maker(name: str, **base: Any) -> Make:
    spec = get_method(name)

    def make(**settings: Any) -> Any:
        return spec.build(spec.config_cls(**{**SMALL, **base, **settings}))

    return make


@pytest.fixture(params=["c3dpo", "lifter", "lifter-fit"])
def lifting_method(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=sorted(PLAIN))
def ensemble_method(request: pytest.FixtureRequest) -> str:
    return request.param


def test_shared_settings_are_checked(lifting_method: str) -> None:
    config_cls = get_method(lifting_method).config_cls
    for bad in (
        {"n_keypoints": -1},
        {"n_basis": 0},
        {"width": 0},
        {"n_layers": -1},
        {"norm": "group"},
        {"rotation": "euler"},
        {"rotation": "quat"},
        {"camera": "pinhole"},
        {"huber_delta": 0.0},
        {"huber_delta": -0.1},
        {"shape_prior_weight": -1.0},
    ):
        with pytest.raises(ConfigError):
            config_cls(**bad)
    with pytest.raises(ConfigError, match="n_keypoints"):
        get_method(lifting_method).build(config_cls())


def test_ensemble_settings_are_checked(ensemble_method: str) -> None:
    config_cls = get_method(ensemble_method).config_cls
    for bad in (
        {"n_categories": 0},
        {"context_dim": -1},
        {"ensemble_batches": "bagged"},
        {"ensemble_tolerance": -0.1},
        {"ensemble_tolerance": 1.0},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            config_cls(**bad)
    with pytest.raises(ConfigError, match="ensemble"):
        config_cls(ensemble=0)


def test_predict_keeps_the_input_xy(lifting_method: str, keypoint_batch: KeypointBatch) -> None:
    """With each method's own prediction (``lifter-fit`` refines its rotations)."""
    model = maker(lifting_method)().eval()
    b = keypoint_batch()
    pred = model.predict(b)
    assert pred.kp3d.shape == (8, K, 3) and pred.R.shape == (8, 3, 3)
    assert pred.extras["alpha"].shape == (8, 3) and pred.extras["shape"].shape == (8, K, 3)
    torch.testing.assert_close(pred.kp3d[..., :2][b.vis], b.kp2d[b.vis])
    z = pred.kp3d[..., 2]
    torch.testing.assert_close((z * b.vis).sum(-1), torch.zeros(8), atol=1e-4, rtol=0)


def test_category_keypoint_subsets_are_learned_from_visibility(ensemble_method: str) -> None:
    model = maker(ensemble_method, **PLAIN[ensemble_method])(n_categories=2)
    vis = torch.zeros(3, K, dtype=torch.bool)
    vis[0, :3] = vis[1, 1:4] = True  # category 0 owns keypoints 0..3
    vis[2, 4:] = True  # category 1 owns 4..5
    b = Sample(kp2d=torch.randn(3, K, 2), vis=vis, category=torch.tensor([0, 0, 1]))
    model.training_step(b, 0)
    expected = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(model.support, expected)
    with pytest.raises(ConfigError, match="n_categories = 2"):
        model.training_step(b.replace(category=torch.tensor([0, 2, 1])), 0)


def test_ensemble_members_train_side_by_side(
    ensemble_method: str, keypoint_batch: KeypointBatch
) -> None:
    torch.manual_seed(0)
    model = maker(ensemble_method, **PLAIN[ensemble_method])(ensemble=2, ensemble_batches="shared")
    assert len(model.members) == 2 and model.members[0] is model.net
    first, second = (m.shape_basis.raw_basis for m in model.members)
    assert not torch.equal(first, second)  # independently initialised
    b = keypoint_batch()
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


def test_ensemble_prediction_aligns_each_members_depth_sign(
    ensemble_method: str, rigid_oracle: Callable[..., nn.Module]
) -> None:
    """The second member explains every view with the mirrored shape, i.e. the depth-reversed
    solution: aligned, it agrees with the first, so the average is the first's depth (an
    unaligned average would be 0)."""
    make = maker(ensemble_method, **PLAIN[ensemble_method])
    g = torch.Generator().manual_seed(0)
    X0 = torch.randn(K, 3, generator=g, dtype=torch.float64)
    X0 = X0 - X0.mean(0)
    model = make(ensemble=2).double().eval()
    model.net = rigid_oracle(X0)
    model.ensemble = nn.ModuleList([rigid_oracle(X0 * X0.new_tensor([1.0, 1.0, -1.0]))])
    R = random_rotation(16, generator=g, dtype=torch.float64)
    kp2d = 70 * (X0 @ R.transpose(-1, -2))[..., :2] + 3
    pred = model.predict(Sample(kp2d=kp2d))
    z_first = 70 * (X0 @ R.transpose(-1, -2))[..., 2]
    z_first = z_first - z_first.mean(-1, keepdim=True)
    torch.testing.assert_close(pred.kp3d[..., 2], z_first)
    second = make().double().eval()
    second.net = model.ensemble[0]
    torch.testing.assert_close(second.predict(Sample(kp2d=kp2d)).kp3d[..., 2], -z_first)


def test_split_ensemble_members_train_on_their_own_rows(
    ensemble_method: str, keypoint_batch: KeypointBatch
) -> None:
    make = maker(ensemble_method, **PLAIN[ensemble_method])
    torch.manual_seed(0)
    model = make(ensemble=3, ensemble_batches="split")
    rows = model.member_rows(8)
    assert rows == [slice(0, 2), slice(2, 4), slice(4, 6)]  # rows 6, 7 left out
    b = keypoint_batch(n=8)
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
    assert make(ensemble=3, ensemble_batches="shared").member_rows(8) == [slice(None)] * 3
    with pytest.raises(ValueError, match="at least one sample per member"):
        model.member_rows(2)


def test_depth_extent_is_the_running_mean_of_each_members_depth_rms(
    ensemble_method: str, keypoint_batch: KeypointBatch
) -> None:
    torch.manual_seed(0)
    model = maker(ensemble_method, **PLAIN[ensemble_method])(ensemble=2, ensemble_batches="split")
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

    first, second = keypoint_batch(n=8, seed=1), keypoint_batch(n=8, seed=2)
    expected = 0.99 * naive(first) + 0.01 * naive(second)  # no optimiser: the weights stay
    model.training_step(first, 0)
    model.training_step(second, 1)
    torch.testing.assert_close(model.depth_extent, expected)
    model.eval()
    model.training_step(keypoint_batch(seed=3), 2)  # evaluation passes leave it alone
    torch.testing.assert_close(model.depth_extent, expected)
    # Saved with the weights; runs saved before it existed load with NaN (every member kept).
    state = {k: v for k, v in model.state_dict().items() if k != "depth_extent"}
    model.load_state_dict(state)
    assert model.depth_extent.isnan().all() and model.kept_members() == model.members


def test_rotation_spread_is_the_running_mean_of_each_members_spread(
    ensemble_method: str, keypoint_batch: KeypointBatch
) -> None:
    torch.manual_seed(0)
    model = maker(ensemble_method, **PLAIN[ensemble_method])(ensemble=2, ensemble_batches="split")
    assert model.rotation_spread.isnan().all() and model.kept_members() == model.members

    def naive(b: Sample) -> Tensor:
        spreads = []
        for net, r in zip(model.members, model.member_rows(len(b.kp2d)), strict=True):
            R = model.lift(b.kp2d[r], b.vis[r], net=net)[1].R.detach().double()
            # The chordal mean: the rotation nearest the mean matrix (SVD, det fixed to +1).
            U, _, Vh = torch.linalg.svd(R.mean(0))
            D = torch.diag(torch.tensor([1.0, 1.0, float(torch.linalg.det(U @ Vh))]))
            mean = U.double() @ D.double() @ Vh
            cos = (torch.einsum("bij,ij->b", R, mean) - 1) / 2
            spreads.append(torch.arccos(cos.clamp(-1, 1)).mean())
        return torch.stack(spreads).float()

    first, second = keypoint_batch(n=8, seed=1), keypoint_batch(n=8, seed=2)
    expected = 0.99 * naive(first) + 0.01 * naive(second)  # no optimiser: the weights stay
    model.training_step(first, 0)
    model.training_step(second, 1)
    torch.testing.assert_close(model.rotation_spread, expected, atol=1e-4, rtol=1e-4)
    model.eval()
    model.training_step(keypoint_batch(seed=3), 2)  # evaluation passes leave it alone
    torch.testing.assert_close(model.rotation_spread, expected, atol=1e-4, rtol=1e-4)
    # Saved with the weights; runs saved before it existed load with NaN.
    state = {k: v for k, v in model.state_dict().items() if k != "rotation_spread"}
    model.load_state_dict(state)
    assert model.rotation_spread.isnan().all()


def test_prediction_leaves_out_degenerate_members(
    ensemble_method: str, rigid_oracle: Callable[..., nn.Module]
) -> None:
    make = maker(ensemble_method, **PLAIN[ensemble_method])
    g = torch.Generator().manual_seed(0)
    shapes = [torch.randn(K, 3, generator=g, dtype=torch.float64) for _ in range(4)]
    oracles = [rigid_oracle(X - X.mean(0)) for X in shapes]
    R = random_rotation(16, generator=g, dtype=torch.float64)
    kp2d = 70 * (shapes[0] @ R.transpose(-1, -2))[..., :2] + 3
    alone = []
    for oracle in oracles:
        single = make().double().eval()
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

    model = make(ensemble=4).double().eval()
    model.net, model.ensemble = oracles[0], nn.ModuleList(oracles[1:])
    # Members 1 and 2 degenerate: they pose the views alike (a narrow rotation spread); their
    # depth extent does not decide.
    model.depth_extent.copy_(torch.tensor([0.42, 0.61, 0.34, 0.43]))
    model.rotation_spread.copy_(torch.tensor([0.61, 0.35, 0.2, 0.63]))
    assert model.kept_members() == [oracles[0], oracles[3]]
    pred = model.predict(Sample(kp2d=kp2d))
    torch.testing.assert_close(pred.kp3d[..., 2], average([0, 3]))
    torch.testing.assert_close(pred.R, alone[0].R)
    assert not torch.allclose(pred.kp3d[..., 2], average([0, 1, 2, 3]))
    model.config = dataclasses.replace(model.config, ensemble_tolerance=0.0)
    assert model.kept_members() == [oracles[3]]  # only the widest
    # Runs saved before spreads were tracked keep their rule on the depth extent: the deepest.
    model.rotation_spread.fill_(float("nan"))
    assert model.kept_members() == [oracles[1]]
    model.depth_extent.fill_(float("nan"))  # untrained: all
    assert model.kept_members() == oracles


def test_diagnose_warns_when_the_predictions_are_flat(
    lifting_method: str, rigid_oracle: Callable[..., nn.Module]
) -> None:
    from kp3d.geometry.rotations import axis_angle_to_matrix

    make = maker(lifting_method, **PLAIN.get(lifting_method, {}))
    g = torch.Generator().manual_seed(0)
    X = torch.randn(K, 3, generator=g, dtype=torch.float64)
    X = X - X.mean(0)
    views = random_rotation(32, generator=g, dtype=torch.float64)
    # A near-flat lifter: its shape has almost no depth and it sees it face on (in-plane turns).
    thin = X * torch.tensor([1.0, 1.0, 0.01], dtype=torch.float64)
    turns = axis_angle_to_matrix(
        torch.randn(32, 1, generator=g, dtype=torch.float64) * torch.tensor([0.0, 0.0, 1.0])
    )
    for shape, R, flat in ((X, views, False), (thin, turns, True)):
        model = make().double().eval()
        model.net = rigid_oracle(shape)
        kp2d = 70 * (shape @ R.transpose(-1, -2))[..., :2] + 3
        found = model.diagnose(Sample(kp2d=kp2d))
        assert found.values["near_flat"] is flat
        assert (found.values["median_depth_ratio"] < 0.05) is flat
        assert len(found.warnings) == int(flat)
        assert all(w.startswith(f"{lifting_method}: ") for w in found.warnings)
    assert model.diagnose_samples > 0  # the engine calls it


def test_diagnose_reports_the_ensemble(ensemble_method: str, keypoint_batch: KeypointBatch) -> None:
    model = maker(ensemble_method, **PLAIN[ensemble_method])(ensemble=3)
    model.depth_extent.copy_(torch.tensor([0.4, 0.6, 0.5]))
    model.rotation_spread.copy_(torch.tensor([0.7, 0.3, 0.69]))
    values = model.eval().diagnose(keypoint_batch(seed=5)).values
    assert values["kept_members"] == [0, 2]
    assert values["member_depth_extent"] == pytest.approx([0.4, 0.6, 0.5])
    assert values["member_rotation_spread_deg"] == pytest.approx(
        [0.7 * 180 / torch.pi, 0.3 * 180 / torch.pi, 0.69 * 180 / torch.pi]
    )
    single = maker(ensemble_method, **PLAIN[ensemble_method])().eval()
    assert "kept_members" not in single.diagnose(keypoint_batch(seed=5)).values


def test_the_exported_graph_keeps_the_members_chosen_when_training_stopped(
    keypoint_batch: KeypointBatch,
) -> None:
    # torch.export cannot branch on the spreads (buffers): eval() decides the kept members.
    torch.manual_seed(0)
    model = maker("lifter")(ensemble=3)
    model.rotation_spread.copy_(torch.tensor([0.7, 0.3, 0.69]))
    model.eval()
    batch = keypoint_batch(n=5, seed=4)

    class Predict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, kp2d: Tensor, vis: Tensor) -> Tensor:
            return self.model.predict(Sample(kp2d=kp2d, vis=vis)).kp3d

    graph = torch.export.export(Predict(), (batch.kp2d, batch.vis)).module()
    expected = model.predict(batch).kp3d
    torch.testing.assert_close(graph(batch.kp2d, batch.vis), expected)
    # The eager prediction reads the spreads each time; the graph keeps member 1 out.
    model.rotation_spread.fill_(0.5)
    assert not torch.allclose(model.predict(batch).kp3d, expected)
