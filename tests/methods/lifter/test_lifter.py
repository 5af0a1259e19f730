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
from kp3d.nn.lifting import normalise_keypoints

K = 6
SMALL = {"n_keypoints": K, "n_basis": 3, "width": 32, "n_layers": 1}

RigidRecovery = Callable[..., tuple[Tensor, Tensor]]
"""The ``rigid_recovery`` fixture of tests/methods/conftest.py."""
KeypointBatch = Callable[..., Sample]
"""The ``keypoint_batch`` fixture of tests/methods/conftest.py."""


def test_spec_and_config_validation() -> None:
    spec = get_method("lifter")
    assert spec.config_cls is LifterConfig and spec.inputs.name == "keypoints"
    assert spec.train_defaults == {"lr": 1e-3, "batch_size": 256, "bf16": False}
    # lifter = the paper (non-negative head, cycle); lifter-fit is its own method.
    assert LifterConfig().cycle_start == 1000
    assert get_method("lifter-fit").config_cls is not LifterConfig
    # The shared settings' checks: tests/methods/test_lifting_methods.py.
    for bad in ({"cycle_start": -1}, {"camera_weight": -1.0}, {"shape_weight": -1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            LifterConfig(**bad)  # type: ignore[arg-type]


def test_cycle_losses_vanish_for_a_perfectly_transversal_lifter(
    rigid_oracle: Callable[..., nn.Module],
) -> None:
    g = torch.Generator().manual_seed(0)
    X0 = torch.randn(K, 3, generator=g, dtype=torch.float64)
    X0 = X0 - X0.mean(0)
    model = Lifter(LifterConfig(**SMALL)).double()
    model.support[:] = True
    model.net = rigid_oracle(X0)
    R = random_rotation(16, generator=g, dtype=torch.float64)
    norm = normalise_keypoints(70 * (X0 @ R.transpose(-1, -2))[..., :2] + 3)
    out = model.net(norm.kp2d, torch.ones(16, K, dtype=torch.float64))
    torch.testing.assert_close(out.shape_cam[..., :2], norm.kp2d)  # the oracle explains the view
    torch.testing.assert_close(out.R, R)
    cyc = model.cycle_losses(out, torch.zeros(16, dtype=torch.long), generator=g)
    assert cyc.camera.item() == pytest.approx(0.0, abs=1e-9)
    assert cyc.shape.item() == pytest.approx(0.0, abs=1e-9)
    # A lifter that cannot tell rotations apart is penalised.
    model.net = rigid_oracle(X0, fixed_rotation=True)
    assert model.cycle_losses(out, torch.zeros(16, dtype=torch.long), generator=g).camera > 0.1


def test_two_training_steps_pretrain_then_cycle_with_frozen_statistics(
    keypoint_batch: KeypointBatch,
) -> None:
    torch.manual_seed(0)
    model = get_method("lifter").build(LifterConfig(**SMALL, cycle_start=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    for step in range(2):
        stats = bn.running_mean.clone()
        model.on_step(step)  # as the engine does before every step
        out = model.training_step(keypoint_batch(seed=step), step)
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if step == 0:
            assert set(out.logs) == {"reprojection"} and not torch.equal(bn.running_mean, stats)
        else:
            assert set(out.logs) == {"reprojection", "camera", "shape"}
            assert torch.equal(bn.running_mean, stats)


def test_invisible_points_enter_no_loss(keypoint_batch: KeypointBatch) -> None:
    torch.manual_seed(0)
    model = Lifter(LifterConfig(**SMALL, cycle_start=0))
    b = keypoint_batch()
    kp2d = b.kp2d.clone().requires_grad_(True)
    model.on_step(5)
    torch.manual_seed(1)  # the same cycle rotations in both evaluations
    loss = model.training_step(b.replace(kp2d=kp2d), 5).loss
    loss.backward()
    assert kp2d.grad[~b.vis].eq(0).all() and kp2d.grad[b.vis].ne(0).any()
    torch.manual_seed(1)
    again = model.training_step(b.replace(kp2d=b.kp2d - 500 * (~b.vis)[..., None]), 5).loss
    torch.testing.assert_close(again, loss.detach())


def test_context_vector_and_non_negative_coefficients(keypoint_batch: KeypointBatch) -> None:
    model = Lifter(LifterConfig(**SMALL, context_dim=4, cycle_start=0))
    b = keypoint_batch()
    out = model.objective(b.kp2d, b.vis, None, 0, context=torch.randn(8, 4))
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert {"camera", "shape"} <= set(out.losses)
    _, lifted = model.eval().lift(b.kp2d, b.vis, torch.randn(8, 4))
    assert lifted.alpha.ge(0).all() and lifted.shape.shape == (8, K, 3)
    with pytest.raises(ValueError, match="context"):
        model.predict(b)


def test_recovers_rigid_shape_from_noise_free_views(rigid_recovery: RigidRecovery) -> None:
    err, flat = rigid_recovery(
        lambda: Lifter(
            LifterConfig(n_keypoints=8, n_basis=1, width=64, n_layers=1, cycle_start=200)
        ),
    )
    assert err < 0.05 and err < 0.1 * flat


def test_ensemble_objective_is_the_sum_of_the_members_own(keypoint_batch: KeypointBatch) -> None:
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
    b = keypoint_batch(n=10, categories=2)
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


def test_statistics_freeze_at_cycle_start_also_after_a_resume(
    tmp_path: Path, keypoint_batch: KeypointBatch
) -> None:
    """The engine calls on_step before every step: a run interrupted after cycle_start and
    resumed equals the uninterrupted one bitwise (CPU)."""
    from kp3d.engine import train

    data = [keypoint_batch(n=1, seed=i, categories=1) for i in range(16)]
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
