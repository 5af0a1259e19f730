"""Options of the shared lifting code added for Can et al.'s comparisons: the "-A" reprojection
over every keypoint of the category, the coefficient layer W_g as an artifact, and the cycle
losses as a function of any lifting network."""

import pytest
import torch

from kp3d.errors import ConfigError
from kp3d.methods.lifter import Lifter, LifterConfig
from kp3d.nn.lifting import LiftingNet, cycle_losses, lifting_artifacts


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    kp2d = 30 * torch.randn(8, 6, 2, generator=g) + 100
    vis = torch.ones(8, 6, dtype=torch.bool)
    vis[:, 5] = False  # occluded but labelled: the synthetic sets' case
    return kp2d, vis


@pytest.mark.parametrize("points", ["visible", "all"])
def test_reprojection_points(points: str) -> None:
    torch.manual_seed(0)
    model = Lifter(LifterConfig(n_keypoints=6, reprojection_points=points, cycle_start=None))
    kp2d, vis = _batch()
    model.update_support(
        torch.ones(8, 6), torch.zeros(8, dtype=torch.long)
    )  # all 6 are the category's
    kp2d.requires_grad_(True)
    loss = model.objective(kp2d, vis, None, 0).losses["reprojection"]
    (grad,) = torch.autograd.grad(loss, kp2d)
    # The occluded keypoint's location enters the loss with "all" only (its input is masked).
    assert bool((grad[:, 5] != 0).any()) == (points == "all")


def test_reprojection_points_all_is_the_visible_loss_when_all_are_visible() -> None:
    kp2d, _ = _batch(1)
    vis = torch.ones(8, 6, dtype=torch.bool)
    values = []
    for points in ("visible", "all"):
        torch.manual_seed(0)
        model = Lifter(LifterConfig(n_keypoints=6, reprojection_points=points, cycle_start=None))
        values.append(model.objective(kp2d, vis, None, 0).losses["reprojection"])
    torch.testing.assert_close(values[0], values[1])


def test_reprojection_points_must_be_known() -> None:
    with pytest.raises(ConfigError, match="reprojection_points"):
        LifterConfig(n_keypoints=6, reprojection_points="occluded")


def test_the_coefficient_layer_is_an_artifact() -> None:
    net = LiftingNet(6, n_basis=4, width=16)
    art = lifting_artifacts(net)
    assert torch.equal(art["coefficient_layer"], net.alpha_head.weight.detach())
    assert art["coefficient_layer"].shape == (4, 16)
    headless = LiftingNet(6, n_basis=4, width=16, coefficient_head=False)
    assert "coefficient_layer" not in lifting_artifacts(headless)


def test_cycle_losses_match_the_lifter_method() -> None:
    torch.manual_seed(0)
    model = Lifter(LifterConfig(n_keypoints=6, cycle_start=0))
    kp2d, vis = _batch(2)
    category = torch.zeros(8, dtype=torch.long)
    model.update_support(vis.float(), category)
    _, out = model.lift(kp2d, vis)
    a = model.cycle_losses(out, category, generator=torch.Generator().manual_seed(3))
    b = cycle_losses(
        model.net,
        out,
        model.support[category],
        generator=torch.Generator().manual_seed(3),
        delta=model.config.huber_delta,
    )
    assert torch.equal(a.camera, b.camera) and torch.equal(a.shape, b.shape)


def test_reprojection_onto_a_target() -> None:
    """The reprojection onto given labelled keypoints: the input itself as the target is the
    default loss; only the target's labelled points count, absent (NaN) ones included."""
    kp2d, vis = _batch(2)
    torch.manual_seed(0)
    model = Lifter(LifterConfig(n_keypoints=6, cycle_start=None)).train()
    model.update_support(torch.ones(8, 6), torch.zeros(8, dtype=torch.long))

    def loss(**target) -> torch.Tensor:
        torch.manual_seed(1)
        return model.member_losses(kp2d, vis, None, **target)[0]["reprojection"]

    torch.testing.assert_close(loss(target=kp2d, target_vis=vis), loss())
    labels = kp2d + torch.randn(kp2d.shape, generator=torch.Generator().manual_seed(3))
    labelled = vis.clone()
    labelled[:, 2] = False
    moved = loss(target=labels, target_vis=labelled)
    assert not torch.allclose(moved, loss())
    # Unlabelled points (NaN or anything) do not count; a labelled one does.
    absent = labels.clone()
    absent[:, 2] = float("nan")
    torch.testing.assert_close(loss(target=absent, target_vis=labelled), moved)
    labels.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(target=labels, target_vis=labelled), labels)
    assert bool((grad[:, 2] == 0).all()) and bool((grad[:, 0] != 0).any())
