import dataclasses
import math

import pytest

from kp3d.config import config_from_dict, field_docs
from kp3d.engine.config import RESUME_MAY_CHANGE, TrainConfig, lr_factor, progress
from kp3d.errors import ConfigError


def test_every_field_is_documented() -> None:
    docs = field_docs(TrainConfig)
    assert all(docs[f.name] for f in dataclasses.fields(TrainConfig))
    assert RESUME_MAY_CHANGE <= set(docs)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"minutes": 0.0}, "minutes must be > 0"),
        ({"steps": None}, "set steps, minutes or both"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
        ({"step_milestones": (0.8, 0.5)}, "increasing"),
        ({"step_gamma": 0.0}, "step_gamma"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"ema": 1.0}, "ema"),
        ({"ckpt_every": 0}, "ckpt_every"),
        ({"seed": -1}, "seed"),
        ({"rollback_lr_factor": 1.0}, "rollback_lr_factor"),
    ],
)
def test_invalid_values_are_config_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


def test_schedule_choices_are_listed() -> None:
    with pytest.raises(ConfigError, match="'constant', 'cosine', 'step'"):
        config_from_dict(TrainConfig, {"schedule": "linear"}, source="x")


def test_warmup_is_linear_then_schedule() -> None:
    cfg = TrainConfig(steps=110, warmup_steps=10, schedule="constant")
    assert [lr_factor(cfg, s, 0.0) for s in (0, 4, 9, 50)] == [0.1, 0.5, 1.0, 1.0]


def test_cosine_matches_closed_form() -> None:
    cfg = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    for step in (10, 35, 60, 85, 110):
        p = progress(cfg, step, 0.0)
        assert p == pytest.approx((step - 10) / 100)
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))
        assert lr_factor(cfg, step, p) == pytest.approx(expected)
    assert lr_factor(cfg, 110, 1.0) == pytest.approx(0.1)


def test_step_schedule_multiplies_at_milestones() -> None:
    cfg = TrainConfig(schedule="step", warmup_steps=0, step_milestones=(0.5, 0.75), step_gamma=0.1)
    assert [lr_factor(cfg, 0, p) for p in (0.0, 0.49, 0.5, 0.8)] == pytest.approx([1, 1, 0.1, 0.01])


def test_progress_takes_the_larger_of_steps_and_time() -> None:
    cfg = TrainConfig(steps=100, minutes=1.0, warmup_steps=0)
    assert progress(cfg, 10, 30.0) == pytest.approx(0.5)
    assert progress(cfg, 80, 30.0) == pytest.approx(0.8)
    assert progress(TrainConfig(steps=None, minutes=2.0), 10**6, 600.0) == 1.0


def test_a_time_budget_alone_means_no_step_limit_in_the_api_as_on_the_command_line() -> None:
    from kp3d.engine.config import budget_values
    from kp3d.engine.run import resolve_train_config
    from kp3d.methods import get_method

    assert budget_values({"minutes": 2.0}) == {"minutes": 2.0, "steps": None}
    assert budget_values({"minutes": 2.0, "steps": 7}) == {"minutes": 2.0, "steps": 7}
    assert budget_values({"lr": 1e-3}) == {"lr": 1e-3}
    spec = get_method("lifter-e2e")
    cfg = resolve_train_config(spec, {"minutes": 2.0}, source="api")
    assert (cfg.minutes, cfg.steps) == (2.0, None)
    cfg = resolve_train_config(spec, {"lr": 1e-3}, source="api")  # no time budget: the default
    assert (cfg.minutes, cfg.steps) == (None, TrainConfig().steps)
