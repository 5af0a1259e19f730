import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.methods import get_method
from kp3d.methods.c3dpo import C3DPO, C3DPOConfig
from kp3d.metrics import mpjpe, stress

K = 6
SMALL = {"n_keypoints": K, "n_basis": 3, "width": 32, "n_layers": 1}

RigidRecovery = Callable[..., tuple[Tensor, Tensor]]
"""The ``rigid_recovery`` fixture of tests/methods/conftest.py."""
KeypointBatch = Callable[..., Sample]
"""The ``keypoint_batch`` fixture of tests/methods/conftest.py."""


def test_spec_and_config_validation() -> None:
    spec = get_method("c3dpo")
    assert spec.config_cls is C3DPOConfig and spec.inputs.name == "keypoints"
    assert spec.train_defaults["lr"] == 1e-3
    # The shared settings' checks: tests/methods/test_lifting_methods.py.
    for bad in ({"canonicalisation_weight": -1.0}, {"canonicalisation_rotations": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            C3DPOConfig(**bad)  # type: ignore[arg-type]


def test_two_training_steps_change_the_model(keypoint_batch: KeypointBatch) -> None:
    torch.manual_seed(0)
    model = get_method("c3dpo").build(C3DPOConfig(**SMALL))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(2):
        out = model.training_step(keypoint_batch(seed=step), step)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert set(out.logs) == {"reprojection", "canonicalisation"}
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_invisible_points_enter_no_loss(keypoint_batch: KeypointBatch) -> None:
    torch.manual_seed(0)
    model = C3DPO(C3DPOConfig(**SMALL))
    b = keypoint_batch()
    kp2d = b.kp2d.clone().requires_grad_(True)
    torch.manual_seed(1)  # the same random canonicalisation rotations in both evaluations
    loss = model.training_step(b.replace(kp2d=kp2d), 0).loss
    loss.backward()
    assert kp2d.grad[~b.vis].eq(0).all() and kp2d.grad[b.vis].ne(0).any()
    moved = b.kp2d + 1e3 * (~b.vis)[..., None]
    torch.manual_seed(1)
    again = model.training_step(b.replace(kp2d=moved), 0).loss
    torch.testing.assert_close(again, loss.detach())


def test_canonicalisation_uses_several_rotations(keypoint_batch: KeypointBatch) -> None:
    cfg = C3DPOConfig(**SMALL, canonicalisation_rotations=3)
    model = C3DPO(cfg)
    seen = []
    model.canonicaliser.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model.training_step(keypoint_batch(), 0)
    assert seen == [(3 * 8, 3 * K)]
    assert dataclasses.replace(cfg, canonicalisation_rotations=1).canonicalisation_rotations == 1


def test_recovers_rigid_shape_from_noise_free_views(rigid_recovery: RigidRecovery) -> None:
    err, flat = rigid_recovery(
        lambda: C3DPO(
            C3DPOConfig(n_keypoints=8, n_basis=1, width=64, n_layers=1, camera="weak_perspective")
        ),
        index_generator=torch.Generator().manual_seed(1),
    )
    assert err < 0.05 and err < 0.1 * flat


def test_scores_do_not_penalise_the_depth_reflection(keypoint_batch: KeypointBatch) -> None:
    # Orthographic lifting cannot tell a shape from its mirror in depth: the protocol's Stress
    # and flip-MPJPE must score a prediction and its reflection alike.
    model = C3DPO(C3DPOConfig(**SMALL)).eval()
    b = keypoint_batch(occlude=False)
    pred = model.predict(b).kp3d
    mirrored = pred * torch.tensor([1.0, 1.0, -1.0])
    gt = pred + torch.randn(pred.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(stress(mirrored, gt), stress(pred, gt))
    torch.testing.assert_close(mpjpe(mirrored, gt, flip_z=True), mpjpe(pred, gt, flip_z=True))
    assert not torch.allclose(mpjpe(mirrored, gt), mpjpe(pred, gt))
