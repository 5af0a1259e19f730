"""lifter-fit's algorithm (moved from tests/nn/test_lifting.py with the code)."""

import pytest
import torch
from torch import Tensor

from kp3d.geometry.rotations import axis_angle_to_matrix, random_rotation
from kp3d.methods.lifter_fit.fit import (
    FitNet,
    fit_shape_coefficients,
    fit_shapes,
    ridge_fit,
    stacked_forward,
    stacked_lift,
)
from kp3d.nn.lifting import LiftingNet, Trunk, normalise_keypoints


def test_fit_shape_coefficients_is_the_ridge_least_squares_optimum() -> None:
    g = torch.Generator().manual_seed(3)
    K, n = 7, 3
    shapes = torch.randn(n, K, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_matrix(torch.randn(2, 3, generator=g, dtype=torch.float64))
    kp2d = torch.randn(2, K, 2, generator=g, dtype=torch.float64)
    vis = torch.ones(2, K, dtype=torch.bool)
    vis[1, :2] = False
    ridge = 0.7
    coef = fit_shape_coefficients(R, shapes, kp2d, vis, ridge)
    for i in range(2):
        # Unknowns: coefficients c (n) and translation t (2); rows: visible x, y.
        P = torch.einsum("ij,nkj->nki", R[i, :2], shapes)[:, vis[i]]  # (n, V, 2)
        V = P.shape[1]
        A = torch.cat(
            [P.permute(1, 2, 0).reshape(2 * V, n), torch.eye(2, dtype=torch.float64).repeat(V, 1)],
            1,
        )
        reg = torch.diag(torch.tensor([0.0] + [ridge] * (n - 1) + [0.0, 0.0], dtype=torch.float64))
        y = kp2d[i, vis[i]].reshape(-1)
        sol = torch.linalg.solve(A.T @ A + reg, A.T @ y)
        torch.testing.assert_close(coef[i], sol[:n])
        objective = (A @ sol - y).square().sum() + ridge * sol[1:n].square().sum()
        torch.testing.assert_close(ridge_fit(R, shapes, kp2d, vis, ridge)[1][i], objective)
    # Sample 0 is fully visible: alone it takes the path with batch-shared second moments.
    torch.testing.assert_close(
        fit_shape_coefficients(R[:1], shapes, kp2d[:1], None, ridge), coef[:1]
    )


@pytest.mark.parametrize("partly_visible", [False, True])
def test_fit_shape_coefficients_gradcheck(partly_visible: bool) -> None:
    g = torch.Generator().manual_seed(4)
    K, n = 5, 3
    shapes = torch.randn(n, K, 3, generator=g, dtype=torch.float64, requires_grad=True)
    omega = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kp2d = torch.randn(2, K, 2, generator=g, dtype=torch.float64, requires_grad=True)
    vis = torch.ones(2, K, dtype=torch.bool)
    vis[1, 0] = not partly_visible

    def fit(om: Tensor, S: Tensor, y: Tensor) -> Tensor:
        return fit_shape_coefficients(axis_angle_to_matrix(om), S, y, vis, 0.3)

    assert torch.autograd.gradcheck(fit, (omega, shapes, kp2d))


def test_refine_rotations_improves_the_fit_and_tries_the_depth_flip() -> None:
    torch.manual_seed(0)
    K = 8
    net = FitNet(
        K,
        n_basis=2,
        width=16,
        n_layers=1,
        norm="none",
        camera="weak_perspective",
        motion_free_basis=True,
        coefficient_ridge=1e-6,
    ).double()
    g = torch.Generator().manual_seed(1)
    R_true = axis_angle_to_matrix(0.8 * torch.randn(6, 3, generator=g, dtype=torch.float64))
    with torch.no_grad():
        X = torch.einsum(
            "bn,nkc->bkc",
            torch.randn(6, 3, generator=g, dtype=torch.float64).abs()
            + torch.tensor([1.0, 0, 0], dtype=torch.float64),
            net.fit_shapes(),
        )
    kp2d = normalise_keypoints((X @ R_true.transpose(-1, -2))[..., :2]).kp2d
    vis = torch.ones(6, K, dtype=torch.float64)
    flip = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    # Start from the depth-reversed twin, perturbed: the flip start brings back the true pose.
    R_start = (
        flip
        @ axis_angle_to_matrix(0.05 * torch.randn(6, 3, generator=g, dtype=torch.float64))
        @ R_true
        @ flip
    )
    before = ridge_fit(R_start, net.fit_shapes().detach(), kp2d, vis, 1e-6)[1]
    params = [p.clone() for p in net.parameters()]
    with torch.no_grad():
        out = net.refine_rotations(R_start, kp2d, vis, steps=300, lr=1e-2)
    after = ridge_fit(out.R, net.fit_shapes(), kp2d, vis, 1e-6)[1]
    assert (after <= before + 1e-9).all() and after.max() < 1e-4
    assert all(torch.equal(p, q) for p, q in zip(params, net.parameters()))
    with pytest.raises(ValueError, match="coefficient_ridge > 0"):
        FitNet(K, n_basis=2, coefficient_ridge=0.0)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_stacked_forward_equals_each_module_on_its_own_input(norm: str, mode: str) -> None:
    torch.manual_seed(0)

    def make() -> list[Trunk]:
        return [
            Trunk(6, width=8, n_layers=2, norm=norm).double()  # type: ignore[arg-type]
            for _ in range(3)
        ]

    trunks, reference = make(), make()
    for a, b in zip(trunks, reference, strict=True):
        with torch.no_grad():  # distinct affine norms and running statistics per member
            for p in a.parameters():
                p.add_(0.1 * torch.randn_like(p))
            for buf in a.buffers():
                if buf.is_floating_point():
                    buf.uniform_(0.5, 1.5)
        b.load_state_dict(a.state_dict())
        a.train(mode == "train")
        b.train(mode == "train")
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    out = stacked_forward(trunks, x)
    expected = torch.stack([m(x[e]) for e, m in enumerate(reference)])
    torch.testing.assert_close(out, expected)
    for a, b in zip(trunks, reference, strict=True):  # the same running statistics
        for (name, buf), ref in zip(a.named_buffers(), b.buffers(), strict=True):
            torch.testing.assert_close(buf, ref, msg=name)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), [p for m in trunks for p in m.parameters()])
    ref_grads = torch.autograd.grad(
        (expected * weights).sum(), [p for m in reference for p in m.parameters()]
    )
    for got, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, ref)
    with pytest.raises(TypeError, match="no batched form"):
        stacked_forward([torch.nn.Tanh()], x)


def test_stacked_lift_equals_each_network_on_its_own_views() -> None:
    torch.manual_seed(0)
    K = 6
    nets = [
        FitNet(
            K,
            n_basis=2,
            width=16,
            n_layers=1,
            rotation="6d",
            motion_free_basis=True,
            coefficient_ridge=0.5,
            camera="weak_perspective",
        ).double()
        for _ in range(2)
    ]
    kp2d = torch.randn(2, 4, K, 2, dtype=torch.float64)
    vis = (torch.rand(2, 4, K) > 0.2).double()
    norm = normalise_keypoints(kp2d, vis)
    out = stacked_lift(nets, norm.kp2d, vis)
    for e, net in enumerate(nets):
        alone = net(norm.kp2d[e], vis[e])
        for name, got, ref in zip(alone._fields, out, alone, strict=True):
            torch.testing.assert_close(got[e], ref, msg=name)
    torch.testing.assert_close(fit_shapes(nets), torch.stack([n.fit_shapes() for n in nets]))
    with pytest.raises(ValueError, match="fitted coefficients"):
        stacked_lift(
            [LiftingNet(K, n_basis=2, width=16, n_layers=1).double()], norm.kp2d[:1], vis[:1]
        )


@pytest.mark.parametrize("partly_visible", [False, True])
def test_fit_shape_coefficients_with_a_shape_model_per_member(partly_visible: bool) -> None:
    g = torch.Generator().manual_seed(5)
    E, B, K, n = 3, 4, 6, 3
    shapes = torch.randn(E, n, K, 3, generator=g, dtype=torch.float64)
    R = random_rotation((E, B), generator=g, dtype=torch.float64)
    kp2d = torch.randn(E, B, K, 2, generator=g, dtype=torch.float64)
    vis = torch.ones(E, B, K, dtype=torch.bool)
    vis[1, 2, :2] = not partly_visible
    coef = fit_shape_coefficients(R, shapes, kp2d, vis, 0.3)
    for e in range(E):
        torch.testing.assert_close(
            coef[e], fit_shape_coefficients(R[e], shapes[e], kp2d[e], vis[e], 0.3)
        )
