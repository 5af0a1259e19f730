import math

import pytest
import torch

from kp3d.geometry.filters import OneEuroFilter, one_euro


def naive_one_euro(xs: list[float], fps: float, min_cutoff: float, beta: float, d_cutoff: float):
    """The paper's pseudo-code, one scalar at a time."""

    def alpha(cutoff: float) -> float:
        te = 1.0 / fps
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    out, x_prev, dx_prev = [], None, 0.0
    for x in xs:
        if x_prev is None:
            x_prev = x
            out.append(x)
            continue
        dx = (x - x_prev) * fps
        edx = alpha(d_cutoff) * dx + (1 - alpha(d_cutoff)) * dx_prev
        cutoff = min_cutoff + beta * abs(edx)
        a = alpha(cutoff)
        x_hat = a * x + (1 - a) * x_prev
        out.append(x_hat)
        x_prev, dx_prev = x_hat, edx
    return out


def test_matches_the_papers_pseudo_code_per_coordinate() -> None:
    g = torch.Generator().manual_seed(0)
    track = torch.cumsum(torch.randn(50, 3, 2, generator=g, dtype=torch.float64), 0)
    got = one_euro(track, fps=30, min_cutoff=0.7, beta=0.05, d_cutoff=1.2)
    assert got.shape == track.shape
    for k in range(3):
        for c in range(2):
            want = naive_one_euro(track[:, k, c].tolist(), 30, 0.7, 0.05, 1.2)
            torch.testing.assert_close(got[:, k, c], torch.tensor(want, dtype=torch.float64))


def test_jitter_shrinks_and_a_constant_passes_unchanged() -> None:
    g = torch.Generator().manual_seed(1)
    noisy = 5.0 + 0.5 * torch.randn(200, 4, 2, generator=g)
    smooth = one_euro(noisy, fps=30, min_cutoff=0.5)
    assert smooth[50:].std() < 0.4 * noisy[50:].std()
    const = torch.full((10, 2), 3.0)
    torch.testing.assert_close(one_euro(const, fps=25), const)


def test_a_larger_beta_lags_less_on_fast_motion() -> None:
    ramp = torch.arange(60.0)[:, None] * 10
    lag_slow = (ramp - one_euro(ramp, fps=30, beta=0.0)).abs()[-1]
    lag_fast = (ramp - one_euro(ramp, fps=30, beta=0.1)).abs()[-1]
    assert lag_fast < 0.5 * lag_slow


def test_missing_values_pass_through_and_restart() -> None:
    x = torch.tensor([[0.0], [1.0], [float("nan")], [10.0]])
    y = one_euro(x, fps=10)
    assert y[2].isnan().all() and 1.0 < y[3] < 10.0  # the state before the gap is kept
    y = one_euro(torch.tensor([float("nan"), 5.0, 5.0]), fps=10)
    assert y[0].isnan() and y[1] == 5.0 and y[2] == 5.0  # no state yet: starts afresh


def test_errors() -> None:
    with pytest.raises(ValueError, match="fps"):
        OneEuroFilter(fps=0)
    f = OneEuroFilter(fps=10)
    f(torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        f(torch.zeros(3))
