import numpy as np
import pytest
import torch

from kp3d.geometry import ProcrustesResult, procrustes, procrustes_align, random_rotation


def _random_orthonormal(
    batch: tuple[int, ...], D: int, g: torch.Generator, proper: bool = True
) -> torch.Tensor:
    Q, _ = torch.linalg.qr(torch.randn(*batch, D, D, generator=g, dtype=torch.float64))
    det = torch.linalg.det(Q)
    flip = torch.where(det > 0, 1.0, -1.0) if proper else torch.where(det < 0, 1.0, -1.0)
    return (
        Q * torch.cat((torch.ones(*batch, D - 1, dtype=Q.dtype), flip[..., None]), -1)[..., None, :]
    )


def _naive_umeyama(X, Y, w, mode, allow_reflection):
    """Per-sample numpy reference straight from Umeyama (1991), eqs. (38)-(42)."""
    X, Y, w = (np.asarray(a, dtype=np.float64) for a in (X, Y, w))
    w = w / w.sum()
    mx, my = w @ X, w @ Y
    Xc, Yc = X - mx, Y - my
    cov = (Yc * w[:, None]).T @ Xc
    U, d, Vt = np.linalg.svd(cov)
    S = np.eye(X.shape[1])
    if not allow_reflection and np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[-1, -1] = -1
    R = U @ S @ Vt
    s = np.trace(np.diag(d) @ S) / (w @ (Xc**2).sum(1)) if mode == "similarity" else 1.0
    t = my - s * R @ mx
    return R, t, s


@pytest.mark.parametrize("D", [2, 3, 4])
def test_recovers_known_similarity_exactly(D, gen):
    g = gen(D)
    X = torch.randn(2, 3, 9, D, generator=g, dtype=torch.float64)
    R = _random_orthonormal((2, 3), D, g)
    s = torch.rand(2, 3, generator=g, dtype=torch.float64) * 2 + 0.2
    t = torch.randn(2, 3, D, generator=g, dtype=torch.float64)
    Y = s[..., None, None] * X @ R.transpose(-1, -2) + t[..., None, :]
    out = procrustes(X, Y)
    assert isinstance(out, ProcrustesResult)
    assert out.R.shape == (2, 3, D, D) and out.t.shape == (2, 3, D) and out.s.shape == (2, 3)
    assert out.aligned.shape == (2, 3, 9, D)
    torch.testing.assert_close(out.R, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.s, s, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.t, t, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.aligned, Y, atol=1e-10, rtol=0)


def test_orthogonal_mode_fixes_scale_and_recovers_rigid_motion(gen):
    g = gen(1)
    X = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    R = random_rotation(5, generator=g, dtype=torch.float64)
    t = torch.randn(5, 3, generator=g, dtype=torch.float64)
    Y = X @ R.transpose(-1, -2) + t[:, None]
    out = procrustes(X, Y, mode="orthogonal")
    torch.testing.assert_close(out.s, torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(out.R, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.t, t, atol=1e-10, rtol=0)
    # A scaled target: the rigid fit keeps s = 1 and is worse than the similarity fit.
    rigid = procrustes(X, 2 * Y, mode="orthogonal")
    sim = procrustes(X, 2 * Y)
    assert torch.all(rigid.s == 1)
    torch.testing.assert_close(sim.s, torch.full((5,), 2.0, dtype=torch.float64))
    assert torch.all((rigid.aligned - 2 * Y).square().sum((-2, -1)) > 1e-3)


@pytest.mark.parametrize("mode", ["similarity", "orthogonal"])
@pytest.mark.parametrize("allow_reflection", [False, True])
@pytest.mark.parametrize("D", [2, 3])
def test_matches_naive_umeyama_on_noisy_weighted_data(mode, allow_reflection, D, gen):
    g = gen(10 * D + allow_reflection)
    B, K = 6, 8
    X = torch.randn(B, K, D, generator=g, dtype=torch.float64)
    Y = torch.randn(
        B, K, D, generator=g, dtype=torch.float64
    )  # unrelated: often needs a reflection
    w = torch.rand(B, K, generator=g, dtype=torch.float64)
    out = procrustes(X, Y, weights=w, mode=mode, allow_reflection=allow_reflection)
    for b in range(B):
        R, t, s = _naive_umeyama(X[b], Y[b], w[b], mode, allow_reflection)
        np.testing.assert_allclose(out.R[b].numpy(), R, atol=1e-9)
        np.testing.assert_allclose(out.t[b].numpy(), t, atol=1e-9)
        np.testing.assert_allclose(out.s[b].item(), s, atol=1e-9)
    dets = torch.linalg.det(out.R)
    if not allow_reflection:
        torch.testing.assert_close(dets, torch.ones(B, dtype=torch.float64))


def test_reflection_handling(gen):
    g = gen(2)
    X = torch.randn(10, 3, generator=g, dtype=torch.float64)
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    M = random_rotation((), generator=g, dtype=torch.float64) @ mirror
    Y = 1.5 * X @ M.T + 0.3
    with_refl = procrustes(X, Y, allow_reflection=True)
    torch.testing.assert_close(with_refl.R, M, atol=1e-10, rtol=0)
    torch.testing.assert_close(with_refl.aligned, Y, atol=1e-10, rtol=0)
    proper = procrustes(X, Y)
    assert torch.linalg.det(proper.R).item() == pytest.approx(1.0)
    assert (proper.aligned - Y).abs().max() > 0.1


def test_zero_weights_exclude_outliers(gen):
    g = gen(3)
    X = torch.randn(4, 12, 3, generator=g, dtype=torch.float64)
    R = random_rotation(4, generator=g, dtype=torch.float64)
    Y = 0.7 * X @ R.transpose(-1, -2) - 1.0
    Y_bad = Y.clone()
    Y_bad[:, :3] += 10 * torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    w = torch.ones(4, 12, dtype=torch.float64)
    w[:, :3] = 0
    out = procrustes(X, Y_bad, weights=w)
    torch.testing.assert_close(out.R, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.aligned, Y, atol=1e-10, rtol=0)
    assert (procrustes(X, Y_bad).R - R).abs().max() > 1e-3
    # Only the ratios of the weights matter.
    torch.testing.assert_close(procrustes(X, Y_bad, weights=7 * w).aligned, out.aligned)


def test_broadcasts_template_against_batch_and_keeps_dtype(gen):
    g = gen(4)
    template = torch.randn(6, 3, generator=g)
    R = random_rotation((2, 5), generator=g)
    Y = template @ R.transpose(-1, -2) + 1.0
    out = procrustes(template, Y, weights=torch.ones(5, 6))
    assert out.R.shape == (2, 5, 3, 3) and out.aligned.shape == (2, 5, 6, 3)
    assert all(x.dtype == torch.float32 for x in out)
    torch.testing.assert_close(out.aligned, Y, atol=1e-5, rtol=0)
    torch.testing.assert_close(procrustes_align(template, Y), out.aligned)


def test_errors_on_bad_input():
    X = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="same"):
        procrustes(X, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="same"):
        procrustes(X, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="K, D"):
        procrustes(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        procrustes(X, X, weights=torch.ones(3))
    with pytest.raises(ValueError, match="mode"):
        procrustes(X, X, mode="affine")  # type: ignore[arg-type]


def test_degenerate_inputs_are_finite_with_finite_gradients(gen):
    g = gen(5)
    Y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    # All X at one point: s = 0 and the best fit is the centroid of Y.
    X = torch.ones(5, 3, dtype=torch.float64).requires_grad_()
    out = procrustes(X, Y)
    assert out.s.item() == 0
    torch.testing.assert_close(out.aligned, Y.mean(0).expand(5, 3))
    out.aligned.sum().backward()
    assert torch.isfinite(X.grad).all()
    # No weight at all: identity, zero scale and translation; gradients stay small.
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    out = procrustes(torch.randn(5, 3, dtype=torch.float64), Y, weights=w)
    torch.testing.assert_close(out.R, torch.eye(3, dtype=torch.float64))
    assert out.s.item() == 0 and (out.t == 0).all()
    sum(x.sum() for x in out).backward()
    assert w.grad.abs().max() < 1e3
    # Collinear points: the rotation about the line is not unique; gradients stay finite.
    line = torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None] * torch.tensor(
        [1.0, 2.0, 3.0], dtype=torch.float64
    )
    Xl = line.clone().requires_grad_()
    Yl = (line @ random_rotation((), generator=g, dtype=torch.float64).T).requires_grad_()
    out = procrustes(Xl, Yl)
    torch.testing.assert_close(out.aligned, Yl.detach(), atol=1e-10, rtol=0)
    (out.aligned.square().sum() + out.R.sum()).backward()
    assert torch.isfinite(Xl.grad).all() and torch.isfinite(Yl.grad).all()


@pytest.mark.parametrize(
    ("mode", "D", "allow_reflection"),
    [
        ("similarity", 3, False),
        ("orthogonal", 3, True),
        ("similarity", 2, True),
        ("orthogonal", 2, False),
    ],
)
def test_gradcheck(mode, D, allow_reflection, gen):
    g = gen(6)
    X = torch.randn(2, 6, D, generator=g, dtype=torch.float64, requires_grad=True)
    Y = torch.randn(2, 6, D, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(2, 6, generator=g, dtype=torch.float64) + 0.5).requires_grad_()

    def f(X, Y, w):
        R, t, s, aligned = procrustes(X, Y, weights=w, mode=mode, allow_reflection=allow_reflection)
        return (R, t, aligned) + ((s,) if mode == "similarity" else ())  # s = 1 has no gradient

    assert torch.autograd.gradcheck(f, (X, Y, w), fast_mode=True)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("mode", ["similarity", "orthogonal"])
@pytest.mark.parametrize("D", [2, 3])
def test_matches_roma_rigid_points_registration(weighted, mode, D, gen):
    """An independent implementation: roma's Kabsch/Umeyama registration on noisy data."""
    import roma

    g = gen(11)
    X = torch.randn(5, 9, D, generator=g, dtype=torch.float64)
    R = _random_orthonormal((5,), D, g)
    Y = 1.8 * X @ R.transpose(-1, -2) + torch.randn(5, 1, D, generator=g, dtype=torch.float64)
    Y = Y + 0.05 * torch.randn(Y.shape, generator=g, dtype=torch.float64)
    w = torch.rand(5, 9, generator=g, dtype=torch.float64) + 0.1 if weighted else None
    ours = procrustes(X, Y, weights=w, mode=mode)
    similarity = mode == "similarity"
    ref = roma.rigid_points_registration(X, Y, weights=w, compute_scaling=similarity)
    torch.testing.assert_close(ours.R, ref[0])
    torch.testing.assert_close(ours.t, ref[1])
    if similarity:
        torch.testing.assert_close(ours.s, ref[2])
