import math

import numpy as np
import pytest
import torch

from kp3d.metrics import (
    INTER_OCULAR_68,
    INTER_PUPIL_MAFL5,
    fit_linear_regression,
    mafl5_from_ibug68,
    nme_2d,
    nme_3d,
    pixel_to_unit,
)


def _data(n_fit=60, n_test=25, K=6, L=5, D=2, seed=0, noise=0.02):
    """Keypoints in [0, 1] and landmarks that depend on them nonlinearly, plus noise."""
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(n_fit + n_test, K, D, generator=g, dtype=torch.float64) * 0.6 + 0.2
    mix = torch.randn(K * D, L * D, generator=g, dtype=torch.float64) / K
    flat = kp.flatten(1)
    lm = (flat @ mix + 0.3 * (flat**2) @ mix.abs()).reshape(-1, L, D)
    lm = lm + noise * torch.randn(lm.shape, generator=g, dtype=torch.float64)
    return kp[:n_fit], lm[:n_fit], kp[n_fit:], lm[n_fit:]


def _naive_autolink(fk, fl, tk, tl, pair):
    """AutoLink ``regress_kp`` (celeba_wild.py): normal equations, loops for the error."""
    fk, fl, tk, tl = (t.numpy().astype(np.float64) for t in (fk, fl, tk, tl))
    X, Y = fk.reshape(len(fk), -1), fl.reshape(len(fl), -1)
    beta = np.linalg.inv(X.T @ X) @ X.T @ Y
    pred = (tk.reshape(len(tk), -1) @ beta).reshape(tl.shape)
    total = 0.0
    for n in range(len(tl)):
        d = math.dist(tl[n, pair[0]], tl[n, pair[1]])
        for j in range(tl.shape[1]):
            total += math.dist(pred[n, j], tl[n, j]) / d
    return total / (tl.shape[0] * tl.shape[1])


def _naive_cub(fk, fl, fv, tk, tl, tv):
    """AutoLink ``datasets/cub.py``: per landmark a regression on the images where it is visible."""
    fk, fl, tk, tl = (t.numpy().astype(np.float64) for t in (fk, fl, tk, tl))
    fv, tv = fv.numpy(), tv.numpy()
    total, count = 0.0, 0
    for j in range(fl.shape[1]):
        X = fk[fv[:, j]].reshape(fv[:, j].sum(), -1)
        beta = np.linalg.inv(X.T @ X) @ X.T @ fl[fv[:, j], j]
        for n in range(len(tk)):
            if tv[n, j]:
                total += math.dist(tk[n].reshape(-1) @ beta, tl[n, j])
                count += 1
    return total / count


def test_matches_autolink_normal_equations_and_loops():
    fk, fl, tk, tl = _data()
    res = nme_2d(fk, fl, tk, tl, (0, 1))
    assert res.nme.shape == () and res.per_image.shape == (25,) and res.errors.shape == (25, 5)
    assert res.pred.shape == (25, 5, 2) and res.weights.shape == (12, 10)
    assert res.nme.item() == pytest.approx(_naive_autolink(fk, fl, tk, tl, (0, 1)), rel=1e-10)
    assert res.nme.item() > 0.01  # the data are not linear: a test that could fail
    torch.testing.assert_close(res.per_image.mean(), res.nme)
    torch.testing.assert_close(res.pred.flatten(1), tk.flatten(1) @ res.weights)


def test_hand_computed_example():
    # Two fit images pin the map to diag(2, 3); the test prediction (2, 3) misses (2, 4) by 1.
    fit_kp = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    fit_lm = torch.tensor([[[2.0, 0.0]], [[0.0, 3.0]]])
    res = nme_2d(fit_kp, fit_lm, torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[2.0, 4.0]]]), 2.0)
    torch.testing.assert_close(res.weights, torch.diag(torch.tensor([2.0, 3.0])))
    torch.testing.assert_close(res.pred, torch.tensor([[[2.0, 3.0]]]))
    assert res.nme.item() == pytest.approx(0.5)


def test_zero_when_keypoints_are_a_linear_function_of_landmarks():
    g = torch.Generator().manual_seed(1)
    lm = torch.rand(80, 5, 2, generator=g, dtype=torch.float64)
    mix = torch.randn(10, 16, generator=g, dtype=torch.float64)  # 2L -> 2K, full row rank
    kp = (lm.flatten(1) @ mix).reshape(80, 8, 2)
    res = nme_2d(kp[:50], lm[:50], kp[50:], lm[50:], INTER_PUPIL_MAFL5)
    assert res.nme.item() < 1e-9


def test_unchanged_when_keypoints_are_permuted():
    fk, fl, tk, tl = _data(seed=2)
    perm = torch.randperm(fk.shape[1], generator=torch.Generator().manual_seed(0))
    a = nme_2d(fk, fl, tk, tl, (0, 1))
    b = nme_2d(fk[:, perm], fl, tk[:, perm], tl, (0, 1))
    torch.testing.assert_close(a.per_image, b.per_image)


def test_unchanged_when_landmarks_are_scaled_uniformly():
    fk, fl, tk, tl = _data(seed=3)
    a = nme_2d(fk, fl, tk, tl, (0, 1))
    b = nme_2d(fk, 64.0 * fl, tk, 64.0 * tl, (0, 1))
    torch.testing.assert_close(a.per_image, b.per_image)


def test_normaliser_forms_agree():
    fk, fl, tk, tl = _data(seed=4)
    dist = (tl[:, 0] - tl[:, 1]).norm(dim=-1)
    pair = nme_2d(fk, fl, tk, tl, (0, 1))
    torch.testing.assert_close(nme_2d(fk, fl, tk, tl, dist).per_image, pair.per_image)
    unnormalised = nme_2d(fk, fl, tk, tl, 1.0)
    torch.testing.assert_close(unnormalised.errors / dist[:, None], pair.errors)


def test_bbox_normaliser_is_sqrt_of_gt_box_area():
    fk, fl, tk, tl = _data(seed=5)
    res = nme_2d(fk, fl, tk, tl, "bbox")
    raw = nme_2d(fk, fl, tk, tl, 1.0)
    for n in range(3):
        xs, ys = tl[n, :, 0].tolist(), tl[n, :, 1].tolist()
        box = math.sqrt((max(xs) - min(xs)) * (max(ys) - min(ys)))
        assert res.per_image[n].item() == pytest.approx(raw.per_image[n].item() / box, rel=1e-12)


def test_visibility_matches_autolink_cub_loop_and_ignores_hidden_values():
    fk, fl, tk, tl = _data(n_fit=80, n_test=30, seed=6)
    g = torch.Generator().manual_seed(7)
    fv = torch.rand(fl.shape[:2], generator=g) > 0.3
    tv = torch.rand(tl.shape[:2], generator=g) > 0.3
    res = nme_2d(fk, fl, tk, tl, 1.0, fit_vis=fv, test_vis=tv)
    assert res.nme.item() == pytest.approx(_naive_cub(fk, fl, fv, tk, tl, tv), rel=1e-10)
    assert torch.isnan(res.errors[~tv]).all() and not torch.isnan(res.errors[tv]).any()
    # Hidden landmarks are dropped, not zero-filled: garbage there changes nothing.
    fl_bad, tl_bad = fl.clone(), tl.clone()
    fl_bad[~fv], tl_bad[~tv] = math.nan, 1e6
    bad = nme_2d(fk, fl_bad, tk, tl_bad, 1.0, fit_vis=fv, test_vis=tv)
    torch.testing.assert_close(bad.nme, res.nme)
    torch.testing.assert_close(bad.per_image, res.per_image, equal_nan=True)


def test_all_visible_mask_equals_no_mask():
    fk, fl, tk, tl = _data(seed=8)
    a = nme_2d(fk, fl, tk, tl, (0, 1))
    ones = torch.ones(tl.shape[:2], dtype=torch.bool)
    b = nme_2d(fk, fl, tk, tl, (0, 1), fit_vis=ones[:1].expand(60, -1), test_vis=ones)
    torch.testing.assert_close(a.nme, b.nme)
    torch.testing.assert_close(a.weights, b.weights)


def test_dtype_device_and_numpy_inputs():
    fk, fl, tk, tl = _data(seed=9)
    res32 = nme_2d(*(t.float() for t in (fk, fl, tk, tl)), (0, 1))
    assert res32.nme.dtype == torch.float32 and res32.weights.dtype == torch.float32
    res_np = nme_2d(*(t.numpy() for t in (fk, fl, tk, tl)), (0, 1))
    assert res_np.nme.item() == pytest.approx(nme_2d(fk, fl, tk, tl, (0, 1)).nme.item())


def test_ridge_shrinks_towards_zero():
    fk, fl, tk, tl = _data(seed=10)
    w0 = nme_2d(fk, fl, tk, tl, (0, 1)).weights
    w1 = nme_2d(fk, fl, tk, tl, (0, 1), ridge=1.0).weights
    assert w1.norm() < w0.norm()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"normaliser": (0, 9)}, "out of range"),
        ({"normaliser": (0.0, 1.0)}, "two ints"),
        ({"normaliser": "iod"}, "bbox"),
        ({"normaliser": torch.zeros(25)}, "positive"),
        ({"normaliser": torch.ones(3)}, r"\(25,\)"),
        (
            {
                "normaliser": (0, 1),
                "test_vis": torch.ones(25, 5, dtype=torch.bool).index_fill(
                    1, torch.tensor([1]), False
                ),
            },
            "visible",
        ),
        (
            {
                "normaliser": 1.0,
                "fit_vis": torch.ones(60, 5, dtype=torch.bool).index_fill(
                    1, torch.tensor([3]), False
                ),
            },
            "never observed",
        ),
        ({"normaliser": 1.0, "test_vis": torch.ones(25, 4, dtype=torch.bool)}, "test_vis"),
        ({"normaliser": 1.0, "test_vis": torch.full((25, 5), 2)}, "0 and 1"),
    ],
)
def test_errors(kwargs, match):
    fk, fl, tk, tl = _data()
    with pytest.raises(ValueError, match=match):
        nme_2d(fk, fl, tk, tl, **kwargs)


def test_shape_errors():
    fk, fl, tk, tl = _data()
    with pytest.raises(ValueError, match="same K"):
        nme_2d(fk, fl, tk[:, :3], tl, 1.0)
    with pytest.raises(ValueError, match="same images"):
        nme_2d(fk, fl[:10], tk, tl, 1.0)
    with pytest.raises(ValueError, match=r"\(N, n_points, 2\)"):
        nme_2d(fk, fl, tk, tl[..., :1], 1.0)
    with pytest.raises(TypeError):
        nme_2d(fk.tolist(), fl, tk, tl, 1.0)


def test_mafl5_from_ibug68_by_hand():
    lm = torch.arange(68 * 2, dtype=torch.float64).reshape(68, 2)
    out = mafl5_from_ibug68(lm[None])
    assert out.shape == (1, 5, 2)
    expected = torch.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    torch.testing.assert_close(out[0], expected)
    assert mafl5_from_ibug68(torch.zeros(2, 3, 68, 3)).shape == (2, 3, 5, 3)
    with pytest.raises(ValueError, match="68"):
        mafl5_from_ibug68(torch.zeros(5, 2))


def test_inter_ocular_68_is_outer_eye_corners():
    assert INTER_OCULAR_68 == (36, 45) and INTER_PUPIL_MAFL5 == (0, 1)


def test_pixel_to_unit():
    pts = torch.tensor([[0.0, 0.0], [192.0, 96.0], [96.0, 48.0]])
    torch.testing.assert_close(
        pixel_to_unit(pts, (96, 192)), torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    )
    with pytest.raises(ValueError):
        pixel_to_unit(torch.zeros(3, 3), (4, 4))
    with pytest.raises(ValueError):
        pixel_to_unit(pts, (0, 4))


def test_fit_linear_regression_against_numpy_and_closed_form_ridge():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.randn(40, 4, generator=g, dtype=torch.float64)
    w = fit_linear_regression(x, y)
    torch.testing.assert_close(
        w, torch.from_numpy(np.linalg.lstsq(x.numpy(), y.numpy(), rcond=None)[0])
    )
    w_ridge = fit_linear_regression(x, y, ridge=2.5)
    torch.testing.assert_close(
        w_ridge, torch.linalg.solve(x.T @ x + 2.5 * torch.eye(6, dtype=x.dtype), x.T @ y)
    )
    mask = torch.rand(40, 4, generator=g) > 0.4
    w_mask = fit_linear_regression(x, y, mask=mask)
    for q in range(4):
        torch.testing.assert_close(
            w_mask[:, q], torch.linalg.lstsq(x[mask[:, q]], y[mask[:, q], q : q + 1]).solution[:, 0]
        )
    # Rank deficient (fewer rows than columns): the minimum-norm solution, as numpy.
    w_min = fit_linear_regression(x[:3], y[:3])
    torch.testing.assert_close(
        w_min, torch.from_numpy(np.linalg.lstsq(x[:3].numpy(), y[:3].numpy(), rcond=None)[0])
    )
    with pytest.raises(ValueError, match="ridge"):
        fit_linear_regression(x, y, ridge=-1.0)


def _naive_nme_3d(fk, fl, tk, tl):
    """3D protocol: z centred per image, least squares, GT 2D box normaliser; loops.

    Centred keypoint depths sum to zero, so X is rank deficient by one and the normal equations
    are singular: the pseudo-inverse gives the (unique) predictions.
    """
    fk, fl, tk, tl = (t.numpy().astype(np.float64) for t in (fk, fl, tk, tl))
    for a in (fk, fl, tk, tl):
        for n in range(len(a)):
            a[n, :, 2] -= a[n, :, 2].mean()
    X, Y = fk.reshape(len(fk), -1), fl.reshape(len(fl), -1)
    beta = np.linalg.pinv(X) @ Y
    pred = (tk.reshape(len(tk), -1) @ beta).reshape(tl.shape)
    per_image = []
    for n in range(len(tl)):
        box = math.sqrt(
            (tl[n, :, 0].max() - tl[n, :, 0].min()) * (tl[n, :, 1].max() - tl[n, :, 1].min())
        )
        per_image.append(
            sum(math.dist(pred[n, j], tl[n, j]) for j in range(tl.shape[1])) / tl.shape[1] / box
        )
    return sum(per_image) / len(per_image)


def test_nme_3d_matches_loop_reference():
    fk, fl, tk, tl = _data(D=3, seed=12)
    res = nme_3d(fk, fl, tk, tl)
    assert res.weights.shape == (18, 15) and res.pred.shape == (25, 5, 3)
    assert res.nme.item() == pytest.approx(_naive_nme_3d(fk, fl, tk, tl), rel=1e-10)


def test_nme_3d_ignores_per_image_depth_offsets():
    fk, fl, tk, tl = _data(D=3, seed=13)
    g = torch.Generator().manual_seed(0)

    def shift(x):
        return x + torch.cat(
            [torch.zeros(len(x), 1, 2), 5 * torch.randn(len(x), 1, 1, generator=g)], -1
        )

    a = nme_3d(fk, fl, tk, tl)
    b = nme_3d(shift(fk), shift(fl), shift(tk), shift(tl))
    torch.testing.assert_close(a.per_image, b.per_image)


def test_nme_3d_zero_for_exact_linear_keypoints():
    # Depth centring is linear too: centred landmarks stay linear in the centred keypoints.
    g = torch.Generator().manual_seed(14)
    lm = torch.rand(90, 4, 3, generator=g, dtype=torch.float64)
    kp = (lm.flatten(1) @ torch.randn(12, 18, generator=g, dtype=torch.float64)).reshape(90, 6, 3)
    assert nme_3d(kp[:60], lm[:60], kp[60:], lm[60:]).nme.item() < 1e-9


# ----------------------------------------------------------------- left/right mirror protocol

MIRROR = (0, 2, 1, 4, 3)
"""Landmark 0 central, (1, 2) and (3, 4) left/right pairs."""


def _naive_autolink_h36m(fk, fl, tk, tl, perm, norm):
    """AutoLink ``regress_kp`` + ``test_epoch_end`` of ``datasets/h36m.py``: least squares
    (the pseudo-inverse: AutoLink's normal equations where X^T X is invertible), swap rounds
    until at most ten images change, 3-sigma outliers out, one test round."""
    fk, fl, tk, tl = (t.numpy().astype(np.float64).copy() for t in (fk, fl, tk, tl))
    n, L, D = fl.shape
    X, Y = fk.reshape(n, -1), fl.reshape(n, -1)

    def dist(pred, y, m):
        return np.linalg.norm((pred - y).reshape(m, L, D), axis=2).mean(axis=1)

    def swap(y, m):
        return y.reshape(m, L, D)[:, list(perm)].reshape(m, L * D)

    while True:
        beta = np.linalg.pinv(X) @ Y
        pred = X @ beta
        d, ds = dist(pred, Y, n), dist(pred, swap(Y, n), n)
        should = d > ds
        if should.sum() > 10:
            Y[should] = swap(Y, n)[should]
        else:
            break
    chosen = d < d.mean() + 3 * d.std(ddof=1)
    beta = np.linalg.pinv(X[chosen]) @ Y[chosen]
    m = len(tk)
    Xt, Yt = tk.reshape(m, -1), tl.reshape(m, -1)
    pred = Xt @ beta
    while True:
        d, ds = dist(pred, Yt, m), dist(pred, swap(Yt, m), m)
        should = d > ds
        if should.sum() > 10:
            Yt[should] = swap(Yt, m)[should]
        else:
            break
    return float((d / norm).mean())


def _mirrored_data(seed=0, n_fit=200, n_test=80, every=4):
    """Keypoints that follow the image side: the ground truth of every ``every``-th image is
    labelled the other way round (a left landmark where the keypoints put a right one)."""
    fk, fl, tk, tl = _data(n_fit=n_fit, n_test=n_test, seed=seed, noise=0.01)
    fl, tl = fl.clone(), tl.clone()
    fl[::every], tl[::every] = fl[::every][:, list(MIRROR)], tl[::every][:, list(MIRROR)]
    return fk, fl, tk, tl


def test_mirror_protocol_matches_autolink_h36m_code():
    fk, fl, tk, tl = _mirrored_data()
    res = nme_2d(fk, fl, tk, tl, 1.0, mirror=MIRROR)
    expected = _naive_autolink_h36m(fk, fl, tk, tl, MIRROR, 1.0)
    assert res.nme.item() == pytest.approx(expected, rel=1e-9)
    plain = nme_2d(fk, fl, tk, tl, 1.0)
    assert res.nme.item() < 0.5 * plain.nme.item()  # the swaps were what the plain fit missed
    # Which test images it scored against the mirror labelling: the ones relabelled above.
    flipped = torch.zeros(len(tk), dtype=torch.bool)
    flipped[::4] = True
    assert res.mirrored is not None and plain.mirrored is None
    agree = (res.mirrored == flipped).double().mean().item()
    assert agree > 0.9 or agree < 0.1  # the protocol may pick either labelling as "unswapped"


def test_mirror_protocol_in_3d_swaps_whole_landmarks():
    fk, fl, tk, tl = _data(D=3, n_fit=200, n_test=80, noise=0.01)
    fl, tl = fl.clone(), tl.clone()
    fl[::4], tl[::4] = fl[::4][:, list(MIRROR)], tl[::4][:, list(MIRROR)]
    centre = lambda t: torch.cat([t[..., :2], t[..., 2:] - t[..., 2:].mean(1, keepdim=True)], -1)
    res = nme_3d(fk, fl, tk, tl, 1.0, mirror=MIRROR)
    expected = _naive_autolink_h36m(centre(fk), centre(fl), centre(tk), centre(tl), MIRROR, 1.0)
    assert res.nme.item() == pytest.approx(expected, rel=1e-9)
    assert res.nme.item() < 0.5 * nme_3d(fk, fl, tk, tl, 1.0).nme.item()


def test_mirror_protocol_leaves_ten_or_fewer_test_changes_alone():
    fk, fl, tk, tl = _data(n_fit=200, n_test=80, noise=0.01)
    tl = tl.clone()
    tl[:8] = tl[:8][:, list(MIRROR)]
    res = nme_2d(fk, fl, tk, tl, 1.0, mirror=MIRROR)
    assert not res.mirrored.any()
    assert res.nme.item() == pytest.approx(_naive_autolink_h36m(fk, fl, tk, tl, MIRROR, 1.0))
    tl[8:12] = tl[8:12][:, list(MIRROR)]  # now twelve images fit better mirrored
    res = nme_2d(fk, fl, tk, tl, 1.0, mirror=MIRROR)
    assert res.mirrored[:12].all() and not res.mirrored[12:].any()


def test_mirror_protocol_with_visibility_mirrors_the_mask_too():
    fk, fl, tk, tl = _mirrored_data()
    tv = torch.ones(tl.shape[:2], dtype=torch.bool)
    tv[::2, 3] = False  # on relabelled images and on others
    tl = tl.clone()
    tl[~tv] = 100.0  # hidden landmarks hold garbage, which must never be scored
    res = nme_2d(fk, fl, tk, tl, 1.0, test_vis=tv, mirror=MIRROR)
    assert res.mirrored.any() and res.nme.item() < 0.5
    hidden, m = res.errors.isnan(), res.mirrored
    # An image scored against its mirror labelling has landmark 3's hidden slot moved to 4.
    assert torch.equal(hidden[m][:, 4], ~tv[m][:, 3])
    assert torch.equal(hidden[~m][:, 3], ~tv[~m][:, 3])


def test_mirror_argument_errors():
    fk, fl, tk, tl = _data()
    with pytest.raises(ValueError, match="5 landmark indices"):
        nme_2d(fk, fl, tk, tl, 1.0, mirror=(0, 2, 1))
    with pytest.raises(ValueError, match=r"mirror\[mirror\[i\]\] == i"):
        nme_2d(fk, fl, tk, tl, 1.0, mirror=(1, 2, 0, 4, 3))


def test_mirror_permutation_from_names():
    from kp3d.metrics import mirror_permutation

    names = [
        "pelvis",
        "left_knee",
        "right_knee",
        "Left Eye",
        "right eye",
        "tail-left",
        "tail-right",
    ]
    assert mirror_permutation(names) == (0, 2, 1, 4, 3, 6, 5)
    assert mirror_permutation(["head", "tail", "leftover"]) is None  # "leftover" is not a side
    with pytest.raises(ValueError, match="'left_knee' has no counterpart 'right_knee'"):
        mirror_permutation(["left_knee", "left_ankle", "right_ankle"])
    with pytest.raises(ValueError, match="duplicate"):
        mirror_permutation(["left_knee", "Left_Knee", "right_knee"])
