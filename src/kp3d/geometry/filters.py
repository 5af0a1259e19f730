"""Temporal filters for keypoint tracks.

:class:`OneEuroFilter` is the 1-euro filter of Casiez, Roussel & Vogel, "1€ Filter: A Simple
Speed-based Low-pass Filter for Noisy Input in Interactive Systems" (CHI 2012): an exponential
smoother whose cut-off frequency rises with the signal's speed,
``f_c = min_cutoff + beta |dx/dt|``, so slow motion is smoothed strongly (little jitter) and
fast motion little (little lag). With ``alpha(f_c) = 1 / (1 + 1 / (2 pi f_c dt))``::

    dx_t = alpha(d_cutoff) (x_t - x^_{t-1}) / dt + (1 - alpha(d_cutoff)) dx_{t-1}
    x^_t = alpha(min_cutoff + beta |dx_t|) x_t + (1 - alpha(...)) x^_{t-1}

applied to every coordinate independently.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _alpha(cutoff: Tensor | float, dt: float) -> Tensor | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The 1-euro filter over a stream of equally shaped tensors (e.g. (K, 2) keypoints a frame).

    Args:
        fps: frames per second of the stream (``dt = 1 / fps``).
        min_cutoff: cut-off frequency (Hz) at rest: lower smooths more.
        beta: speed coefficient: higher follows fast motion with less lag (units of
            1 / (coordinate units), so it depends on the coordinates' scale).
        d_cutoff: cut-off frequency (Hz) of the speed estimate.

    Non-finite values (a keypoint missing in a frame) pass through and leave that coordinate's
    state as it was.
    """

    def __init__(
        self, *, fps: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0
    ) -> None:
        if fps <= 0 or min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(
                "OneEuroFilter: need fps, min_cutoff, d_cutoff > 0 and beta >= 0, got "
                f"fps={fps}, min_cutoff={min_cutoff}, d_cutoff={d_cutoff}, beta={beta}"
            )
        self.dt = 1.0 / fps
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: Tensor | None = None
        self.dx: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        """The filtered value of the next sample ``x``."""
        if self.x is None or self.dx is None:
            self.x, self.dx = x.clone(), torch.zeros_like(x)
            return x.clone()
        if x.shape != self.x.shape:
            raise ValueError(
                f"OneEuroFilter: sample shape {tuple(x.shape)} differs from the stream's "
                f"{tuple(self.x.shape)}"
            )
        ok = x.isfinite() & self.x.isfinite()
        dx = (x - self.x) / self.dt
        a_d = _alpha(self.d_cutoff, self.dt)
        dx_hat = a_d * dx + (1 - a_d) * self.dx
        a = _alpha(self.min_cutoff + self.beta * dx_hat.abs(), self.dt)
        x_hat = a * x + (1 - a) * self.x
        # A first finite value after missing ones starts afresh.
        restart = x.isfinite() & ~self.x.isfinite()
        self.x = torch.where(ok, x_hat, torch.where(restart, x, self.x))
        self.dx = torch.where(ok, dx_hat, torch.where(restart, 0.0, self.dx))
        return torch.where(ok, x_hat, x)


def one_euro(
    x: Tensor, *, fps: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0
) -> Tensor:
    """:class:`OneEuroFilter` over a whole track ``x`` (T, ...): the filtered track (T, ...)."""
    f = OneEuroFilter(fps=fps, min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)
    return torch.stack([f(x_t) for x_t in x]) if len(x) else x.clone()
