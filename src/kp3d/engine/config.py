"""The training settings shared by every method (the method's own live in its config class)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kp3d.errors import ConfigError

Schedule = Literal["constant", "cosine", "step"]
DeviceKind = Literal["auto", "cpu", "cuda"]
Clock = Literal["wall", "cpu"]

RESUME_MAY_CHANGE: frozenset[str] = frozenset(
    {
        "steps",
        "minutes",
        "clock",
        "ckpt_every",
        "log_every",
        "workers",
        "device",
        "tensorboard",
        "max_nonfinite",
        "max_rollbacks",
    }
)
"""TrainConfig fields that ``--resume`` may change (a longer budget, another device, ...); any
other difference from the stored run is an error, because it would silently mix two runs."""


@dataclass(frozen=True)
class TrainConfig:
    """How a method is trained: budget, optimiser, schedule, precision, checkpoints, logging."""

    steps: int | None = 5000
    """Optimiser steps to train for; none = no step limit (then minutes must be set)."""
    minutes: float | None = None
    """Wall-clock training budget in minutes; none = no limit. With both steps and minutes,
    training stops at whichever comes first; the schedule then follows the larger fraction
    used. Time-limited runs are not bitwise reproducible."""
    clock: Clock = "wall"
    """What minutes measures: wall-clock time, or the CPU time of the training process (all
    its threads; rank 0's in a multi-process run), which other jobs on a shared machine do not
    eat into. A 2-thread run spends about 2 CPU minutes per wall minute."""
    batch_size: int = 32
    """Samples per step on each device; the global batch is batch_size x number of devices."""
    lr: float = 1e-3
    """Peak learning rate of AdamW (for the global batch; not rescaled with the device count)."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay, applied to weight matrices and convolution kernels only
    (never to biases, norms or other 1-D parameters)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's moment decay rates."""
    schedule: Schedule = "cosine"
    """Learning rate after the warm-up: constant; cosine decay to min_lr_ratio x lr; or step,
    multiplied by step_gamma at each of step_milestones."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up from lr / warmup_steps to lr."""
    min_lr_ratio: float = 0.05
    """Final learning rate of the cosine schedule, as a fraction of lr."""
    step_milestones: tuple[float, ...] = (0.6, 0.85)
    """Fractions of the budget at which the step schedule multiplies the learning rate by
    step_gamma."""
    step_gamma: float = 0.1
    """Factor of the step schedule at each milestone."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping."""
    bf16: bool = True
    """bf16 autocast where the device computes bf16 natively (CPUs with AVX512-BF16 or AMX,
    CUDA GPUs of compute capability 8.0 or newer); elsewhere it would be slower than float32
    and is skipped with a log line."""
    channels_last: bool = True
    """Keep 4-D image tensors and convolution weights in channels-last memory order (faster
    convolutions on CPU and on tensor-core GPUs)."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights (e.g. 0.999); the average is the
    saved model. 0 = off."""
    ckpt_every: int = 500
    """Write a checkpoint every this many steps (and always at the end)."""
    log_every: int = 25
    """Write averaged metrics to metrics.jsonl every this many steps."""
    seed: int = 0
    """Seed of every random stream: weights, data order and the method's own randomness."""
    workers: int = 0
    """DataLoader worker processes (0 = load in the training process)."""
    device: DeviceKind = "auto"
    """Where to train: auto (CUDA when available), cpu or cuda."""
    max_nonfinite: int = 5
    """Consecutive non-finite steps (each skipped) after which training rolls back to the last
    checkpoint with a lowered learning rate."""
    rollback_lr_factor: float = 0.5
    """Factor applied to the learning rate at each roll-back."""
    max_rollbacks: int = 3
    """Roll-backs allowed before training stops with an error."""
    tensorboard: bool = False
    """Also write TensorBoard event files to RUN/tensorboard (needs the tensorboard package)."""

    def __post_init__(self) -> None:
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        check(
            self.steps is None or self.steps >= 1, f"steps must be >= 1 or none, got {self.steps}"
        )
        check(
            self.minutes is None or self.minutes > 0,
            f"minutes must be > 0 or none, got {self.minutes}",
        )
        check(
            self.steps is not None or self.minutes is not None,
            "set steps, minutes or both (both are none)",
        )
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(all(0 <= b < 1 for b in self.betas), f"betas must lie in [0, 1), got {self.betas}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(
            0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}"
        )
        ms = self.step_milestones
        check(
            all(0 < m < 1 for m in ms) and list(ms) == sorted(set(ms)),
            f"step_milestones must be increasing fractions in (0, 1), got {ms}",
        )
        check(0 < self.step_gamma <= 1, f"step_gamma must lie in (0, 1], got {self.step_gamma}")
        check(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        check(0 <= self.ema < 1, f"ema must lie in [0, 1) (0 = off), got {self.ema}")
        check(self.ckpt_every >= 1, f"ckpt_every must be >= 1, got {self.ckpt_every}")
        check(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        check(0 <= self.seed < 2**32, f"seed must lie in [0, 2^32), got {self.seed}")
        check(self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        check(self.max_nonfinite >= 1, f"max_nonfinite must be >= 1, got {self.max_nonfinite}")
        check(
            0 < self.rollback_lr_factor < 1,
            f"rollback_lr_factor must lie in (0, 1), got {self.rollback_lr_factor}",
        )
        check(self.max_rollbacks >= 0, f"max_rollbacks must be >= 0, got {self.max_rollbacks}")


def budget_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Training values as given, with ``steps`` set to None when ``minutes`` comes without it:
    a time budget alone means no step limit (otherwise :class:`TrainConfig`'s default step
    count would end the run first, unseen)."""
    out = dict(values)
    if "minutes" in out and "steps" not in out:
        out["steps"] = None
    return out


def lr_factor(config: TrainConfig, step: int, progress: float) -> float:
    """Learning rate of ``step`` as a fraction of ``config.lr`` (warm-up times schedule).

    Args:
        config: the schedule settings.
        step: 0-based index of the step about to run.
        progress: fraction of the post-warm-up budget used, in [0, 1] (see :func:`progress`).
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
    p = min(max(progress, 0.0), 1.0)
    if config.schedule == "constant":
        decay = 1.0
    elif config.schedule == "cosine":
        decay = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    else:
        decay = config.step_gamma ** sum(p >= m for m in config.step_milestones)
    return warm * decay


def progress(config: TrainConfig, step: int, elapsed_s: float) -> float:
    """Fraction of the budget used after the warm-up: the larger of the step and time fractions."""
    fractions = [0.0]
    if config.steps is not None:
        span = max(config.steps - config.warmup_steps, 1)
        fractions.append((step - config.warmup_steps) / span)
    if config.minutes is not None:
        fractions.append(elapsed_s / (60.0 * config.minutes))
    return min(max(max(fractions), 0.0), 1.0)
