import math

import numpy as np
import pytest
import torch

from kp3d.geometry import procrustes
from kp3d.metrics import mpjpe, mutual_coherence, n_mpjpe, p_mpjpe, stress


def _points(*batch, K=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.randn(*batch, K, 3, generator=g, dtype=torch.float64)
    pred = gt + 0.3 * torch.randn(*batch, K, 3, generator=g, dtype=torch.float64)
    return pred, gt


def _vis(*shape, seed=0, p=0.3, min_visible=3):
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(*shape, generator=g) > p
    v[..., :min_visible] = True
    return v


def _random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# --- naive references: one sample at a time, visible points picked out by index ------------------


def _naive_c3dpo(pred, gt, vis, flip):
    """C3DPO ``calc_3d_errs``: fix_mean_depth, per-point L2 averaged over visible, min over flip."""
    out = []
    for p, g, v in zip(pred.numpy(), gt.numpy(), vis.numpy()):
        p, g = p[v].copy(), g[v].copy()
        p[:, 2] -= p[:, 2].mean()
        g[:, 2] -= g[:, 2].mean()
        errs = [np.mean([math.dist(a, b) for a, b in zip(p, g)])]
        if flip:
            p[:, 2] *= -1
            errs.append(np.mean([math.dist(a, b) for a, b in zip(p, g)]))
        out.append(min(errs))
    return np.array(out)


def _naive_umeyama(p, g):
    """Similarity alignment of p onto g (VideoPose3D ``p_mpjpe`` style: no reflection)."""
    mp, mg = p.mean(0), g.mean(0)
    pc, gc = p - mp, g - mg
    U, S, Vt = np.linalg.svd(gc.T @ pc)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.diag([1.0, 1.0, d])
    R = U @ D @ Vt
    s = (S * np.diag(D)).sum() / (pc**2).sum()
    return s * pc @ R.T + mg


def _naive_stress(pred, gt, vis):
    out = []
    for p, g, v in zip(pred.numpy(), gt.numpy(), vis.numpy()):
        idx = np.flatnonzero(v)
        terms = [
            abs(math.dist(g[i], g[j]) - math.dist(p[i], p[j]))
            for a, i in enumerate(idx)
            for j in idx[a + 1 :]
        ]
        out.append(np.mean(terms))
    return np.array(out)


# --- MPJPE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
def test_mpjpe_matches_c3dpo_loop(flip):
    pred, gt = _points(12)
    pred[:6, :, 2] *= -1  # half the samples are better after the flip
    vis = _vis(12, 9)
    got = mpjpe(pred, gt, vis=vis, flip_z=flip, reduction="none")
    np.testing.assert_allclose(got.numpy(), _naive_c3dpo(pred, gt, vis, flip), rtol=1e-12)
    assert mpjpe(pred, gt, vis=vis, flip_z=flip).item() == pytest.approx(got.mean().item())


def test_mpjpe_hand_computed():
    gt = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    pred = torch.tensor([[[0.0, 0.0, 5.0], [1.0, 0.0, 5.0]]])  # a pure depth offset
    assert mpjpe(pred, gt).item() == 0.0
    assert mpjpe(pred, gt, center=False).item() == 5.0
    pred = torch.tensor([[[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]]])  # errors 5 and 0
    assert mpjpe(pred, gt).item() == 2.5


def test_flip_z_picks_the_better_sign():
    _, gt = _points(5)
    mirrored = gt * torch.tensor([1.0, 1.0, -1.0])
    assert mpjpe(mirrored, gt, flip_z=True).item() < 1e-12
    assert mpjpe(mirrored, gt).item() > 0.1
    per = mpjpe(torch.cat([mirrored[:2], gt[2:]]), gt, flip_z=True, reduction="none")
    assert per.abs().max().item() < 1e-12


def test_visibility_excludes_points():
    pred, gt = _points(4)
    vis = _vis(4, 9)
    corrupted = pred.clone()
    corrupted[~vis] = math.nan
    for fn in (mpjpe, n_mpjpe, p_mpjpe, stress):
        torch.testing.assert_close(fn(corrupted, gt, vis=vis), fn(pred, gt, vis=vis))
        sub = fn(pred[0, vis[0]], gt[0, vis[0]])
        torch.testing.assert_close(fn(pred, gt, vis=vis, reduction="none")[0], sub)


def test_leading_dims_dtype_and_numpy():
    pred, gt = _points(2, 3)
    vis = _vis(2, 3, 9)
    for fn in (mpjpe, n_mpjpe, p_mpjpe, stress):
        per = fn(pred, gt, vis=vis, reduction="none")
        assert per.shape == (2, 3)
        torch.testing.assert_close(per[1, 2], fn(pred[1, 2], gt[1, 2], vis=vis[1, 2]))
        out32 = fn(pred.float(), gt.float())
        assert out32.dtype == torch.float32 and out32.shape == ()
        assert fn(pred.numpy(), gt.numpy()).item() == pytest.approx(fn(pred, gt).item())


@pytest.mark.parametrize("fn", [mpjpe, n_mpjpe, p_mpjpe, stress])
def test_errors(fn):
    pred, gt = _points(3)
    with pytest.raises(ValueError, match="reduction"):
        fn(pred, gt, reduction="sum")
    with pytest.raises(ValueError, match="pred and gt"):
        fn(pred, gt[:, :5])
    with pytest.raises(ValueError, match="vis"):
        fn(pred, gt, vis=torch.ones(3, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="visible"):
        fn(pred, gt, vis=torch.zeros(3, 9, dtype=torch.bool))


def test_mpjpe_requires_three_coordinates():
    with pytest.raises(ValueError, match=r"\(\.\.\., K, 3\)"):
        mpjpe(torch.zeros(2, 4, 2), torch.zeros(2, 4, 2))


# --- N-MPJPE ------------------------------------------------------------------------------------


def test_n_mpjpe_is_scale_invariant_and_matches_closed_form():
    pred, gt = _points(6)
    torch.testing.assert_close(n_mpjpe(3.7 * pred, gt), n_mpjpe(pred, gt))
    assert n_mpjpe(0.2 * gt, gt).item() < 1e-12
    for p, g in zip(pred.numpy(), gt.numpy()):
        p, g = p.copy(), g.copy()
        p[:, 2] -= p[:, 2].mean()
        g[:, 2] -= g[:, 2].mean()
        s = (p * g).sum() / (p * p).sum()
        ref = np.mean([math.dist(a, b) for a, b in zip(s * p, g)])
        assert n_mpjpe(torch.from_numpy(p), torch.from_numpy(g)).item() == pytest.approx(
            ref, rel=1e-12
        )
    assert (
        n_mpjpe(pred, gt).item() <= mpjpe(pred, gt).item() + 0.05
    )  # rescaling barely matters here


def test_n_mpjpe_zero_prediction_and_flip():
    _, gt = _points(2)
    assert n_mpjpe(torch.zeros_like(gt), gt).item() == pytest.approx(
        mpjpe(torch.zeros_like(gt), gt).item()
    )
    mirrored = 2.0 * gt * torch.tensor([1.0, 1.0, -1.0])
    assert n_mpjpe(mirrored, gt, flip_z=True).item() < 1e-12


# --- P-MPJPE ------------------------------------------------------------------------------------


def test_p_mpjpe_matches_umeyama_loop():
    pred, gt = _points(8)
    ref = [
        np.mean([math.dist(a, b) for a, b in zip(_naive_umeyama(p, g), g)])
        for p, g in zip(pred.numpy(), gt.numpy())
    ]
    np.testing.assert_allclose(p_mpjpe(pred, gt, reduction="none").numpy(), ref, rtol=1e-9)


def test_p_mpjpe_unchanged_under_similarity_transform_of_prediction():
    pred, gt = _points(6)
    R = torch.from_numpy(_random_rotation(3))
    moved = 2.5 * pred @ R.T + torch.tensor([1.0, -4.0, 7.0], dtype=torch.float64)
    torch.testing.assert_close(
        p_mpjpe(moved, gt, reduction="none"), p_mpjpe(pred, gt, reduction="none")
    )


def test_p_mpjpe_flip_equals_allowing_reflections():
    pred, gt = _points(6)
    pred[::2] = pred[::2] * torch.tensor([1.0, -1.0, 1.0])  # reflected predictions
    aligned = procrustes(pred, gt, allow_reflection=True).aligned
    reflect = (aligned - gt).norm(dim=-1).mean(-1)
    torch.testing.assert_close(p_mpjpe(pred, gt, flip_z=True, reduction="none"), reflect)
    assert (p_mpjpe(pred, gt, reduction="none")[::2] > reflect[::2] + 0.1).all()


# --- Stress -------------------------------------------------------------------------------------


def test_stress_matches_c3dpo_loop():
    pred, gt = _points(7)
    vis = _vis(7, 9)
    np.testing.assert_allclose(
        stress(pred, gt, vis=vis, reduction="none").numpy(),
        _naive_stress(pred, gt, vis),
        rtol=1e-12,
    )


def test_stress_hand_computed():
    gt = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    pred = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    # pairs: (0,1) |1 - 3| = 2; (0,2) |2 - 2| = 0; (1,2) |sqrt(5) - sqrt(13)|
    expected = (2.0 + 0.0 + abs(math.sqrt(5) - math.sqrt(13))) / 3
    assert stress(pred, gt).item() == pytest.approx(expected, rel=1e-6)
    assert stress(pred[:2], gt[:2]).item() == pytest.approx(2.0)


def test_stress_invariant_to_rotation_reflection_translation():
    pred, gt = _points(5)
    R = torch.from_numpy(_random_rotation(4))
    reflect = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    for T in (R, reflect, R @ reflect):
        moved = pred @ T.T + torch.tensor([3.0, 0.5, -2.0], dtype=torch.float64)
        torch.testing.assert_close(
            stress(moved, gt, reduction="none"), stress(pred, gt, reduction="none")
        )
    assert stress(gt @ (R @ reflect).T, gt).item() < 1e-12


def test_stress_gradient():
    pred, gt = _points(2, K=5)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: stress(p, gt), (pred,))


# --- mutual coherence ---------------------------------------------------------------------------


def test_mutual_coherence_hand_computed_and_loop():
    assert mutual_coherence(torch.eye(4)).item() == 0.0
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert mutual_coherence(b).item() == pytest.approx(1 / math.sqrt(2))
    assert mutual_coherence(torch.tensor([[1.0, 2.0], [-2.0, -4.0]])).item() == pytest.approx(1.0)
    basis = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flat = basis.flatten(1).numpy()
    ref = max(
        abs(flat[i] @ flat[j]) / (np.linalg.norm(flat[i]) * np.linalg.norm(flat[j]))
        for i in range(5)
        for j in range(5)
        if i != j
    )
    assert mutual_coherence(basis).item() == pytest.approx(ref, rel=1e-12)
    assert mutual_coherence(basis.flatten(1).numpy()).item() == pytest.approx(ref, rel=1e-12)


def test_mutual_coherence_errors():
    with pytest.raises(ValueError, match="n >= 2"):
        mutual_coherence(torch.ones(1, 6))
    with pytest.raises(ValueError, match="zero"):
        mutual_coherence(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
