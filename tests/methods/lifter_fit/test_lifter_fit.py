from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.losses.lifting import reprojection_loss, shape_prior_loss
from kp3d.methods import get_method
from kp3d.methods.lifter_fit import LifterFit, LifterFitConfig
from kp3d.nn.lifting import normalise_keypoints

K = 6
SMALL = {"n_keypoints": K, "n_basis": 3, "width": 32, "n_layers": 1, "ensemble": 1}

RigidRecovery = Callable[..., tuple[Tensor, Tensor]]
"""The ``rigid_recovery`` fixture of tests/methods/conftest.py."""
KeypointBatch = Callable[..., Sample]
"""The ``keypoint_batch`` fixture of tests/methods/conftest.py."""


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
    # The shared settings' checks: tests/methods/test_lifting_methods.py.
    for bad in ({"refine_steps": -1}, {"coefficient_ridge": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            LifterFitConfig(**bad)  # type: ignore[arg-type]


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


def test_ensemble_objective_is_the_sum_of_the_members_own(keypoint_batch: KeypointBatch) -> None:
    """Members run together as one batched network; the objective must be each member's
    reprojection and shape prior on its own rows, computed alone, summed."""
    cfg = LifterFitConfig(
        **{**SMALL, "ensemble": 2}, ensemble_batches="split", n_categories=2, shape_prior_weight=0.5
    )
    torch.manual_seed(0)
    model = LifterFit(cfg).double()
    b = keypoint_batch(n=10, categories=2)
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


def test_two_training_steps_change_every_member(keypoint_batch: KeypointBatch) -> None:
    torch.manual_seed(0)
    model = LifterFit(LifterFitConfig(**{**SMALL, "ensemble": 2}))
    groups = model.param_groups()
    opt = torch.optim.Adam([{"params": list(g.params), "lr": 1e-3 * g.lr_scale} for g in groups])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(2):
        model.on_step(step)
        out = model.training_step(keypoint_batch(seed=step), step)
        assert torch.isfinite(out.loss) and set(out.logs) == {"reprojection"}
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    changed = {
        n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])
    }
    assert changed == {"net", "ensemble"}
