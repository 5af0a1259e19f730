"""The engine's use of the model hooks: param_groups, on_step, losses/loss_weights."""

import json
from pathlib import Path

import pytest
import torch
from dummy_method import DummyConfig, DummyModel, TinyImages

from kp3d.data.schema import collate
from kp3d.engine import read_metrics, train
from kp3d.engine.loop import optimizer_groups, regroup_optimizer_state
from kp3d.engine.run import STATE_FILE, checkpoints
from kp3d.methods import MethodModel, ParamGroup, default_param_groups

CONSTANT = {"warmup_steps": 0, "schedule": "constant", "grad_clip": 0.0, "lr": 1e-2}


def test_optimizer_groups_follow_the_model_and_check_it() -> None:
    model = DummyModel(DummyConfig(head_lr_scale=3.0))
    groups = optimizer_groups(model, 0.1)
    assert [g["name"] for g in groups] == ["decay", "no_decay", "head_bias"]
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 3.0]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0, 0.0]
    # Within groups, parameters keep the order of model.parameters().
    order = {id(p): i for i, p in enumerate(model.parameters())}
    for g in groups:
        assert [order[id(p)] for p in g["params"]] == sorted(order[id(p)] for p in g["params"])

    class Missing(DummyModel):
        def param_groups(self) -> list[ParamGroup]:
            return default_param_groups(self, exclude=(self.head.bias,))

    with pytest.raises(ValueError, match="in no param group: head.bias"):
        optimizer_groups(Missing(DummyConfig()), 0.0)

    class Twice(DummyModel):
        def param_groups(self) -> list[ParamGroup]:
            return [*default_param_groups(self), ParamGroup("again", (self.head.bias,))]

    with pytest.raises(ValueError, match="in groups 'no_decay' and 'again'"):
        optimizer_groups(Twice(DummyConfig()), 0.0)


def test_a_groups_lr_scale_multiplies_its_learning_rate(tmp_path: Path, dummy: str) -> None:
    """Adam's first step moves every parameter with a gradient by lr (g / |g|): by 3 lr in a
    group of scale 3."""
    config = {"dropout": 0.0, "noise": 0.0}
    runs = {}
    for scale in (1.0, 3.0):
        run = tmp_path / f"s{scale}"
        train(
            dummy,
            TinyImages(),
            run,
            method_config={**config, "head_lr_scale": scale},
            train_config={**CONSTANT, "steps": 1},
        )
        runs[scale] = run
    torch.manual_seed(0)  # the engine's seed_everything(0) before building
    start = DummyModel(DummyConfig(**config))
    from safetensors.torch import load_file

    for scale, run in runs.items():
        w = load_file(run / "model.safetensors")
        step_bias = (w["head.bias"] - start.head.bias.detach()).abs()
        step_weight = (w["head.weight"] - start.head.weight.detach()).abs()
        torch.testing.assert_close(step_bias, torch.full_like(step_bias, 1e-2 * scale))
        torch.testing.assert_close(step_weight.max(), torch.tensor(1e-2))


def test_on_step_runs_before_every_step_also_after_a_resume(tmp_path: Path, dummy: str) -> None:
    settings = {"method_config": {"freeze_bn_at": 5}}
    # A constant schedule: the first part of the split run has a shorter budget.
    train_cfg = {"log_every": 1, "ckpt_every": 3, "schedule": "constant", "warmup_steps": 0}
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(dummy, TinyImages(), whole, **settings, train_config={**train_cfg, "steps": 8})
    train(dummy, TinyImages(), split, **settings, train_config={**train_cfg, "steps": 6})
    train(dummy, TinyImages(), split, resume=True, train_config={"steps": 8})
    for run in (whole, split):
        rows = read_metrics(run / "metrics.jsonl")
        # Row of step s logs step s - 1: statistics frozen from step 5 on.
        assert [r["bn_training"] for r in rows] == [1.0] * 5 + [0.0] * 3
    assert (whole / "model.safetensors").read_bytes() == (split / "model.safetensors").read_bytes()


def test_the_loss_is_the_weighted_sum_of_the_named_losses() -> None:
    class Two(MethodModel):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor(2.0))

        def losses(self, batch, step):  # type: ignore[no-untyped-def]
            from kp3d.methods import LossOutput

            return LossOutput({"a": self.p, "b": self.p.square()}, {"extra": torch.tensor(7.0)})

        def loss_weights(self) -> dict[str, float]:
            return {"b": 0.5}

    out = Two().training_step(None, 0)  # type: ignore[arg-type]
    assert out.loss.item() == 2.0 + 0.5 * 4.0 and out.loss.dtype == torch.float32
    assert {k: v.item() for k, v in out.logs.items()} == {"a": 2.0, "b": 4.0, "extra": 7.0}


def test_a_format_1_optimizer_state_is_regrouped() -> None:
    torch.manual_seed(0)
    model = DummyModel(DummyConfig(head_lr_scale=3.0, dropout=0.0))
    old_groups = default_param_groups(model)
    old = torch.optim.AdamW([{"params": list(g.params)} for g in old_groups], lr=1e-2)
    batch = TinyImages()

    model.training_step(collate([batch[i] for i in range(4)]), 0).loss.backward()
    old.step()
    new = torch.optim.AdamW(optimizer_groups(model, 0.0), lr=1e-2)
    new.load_state_dict(regroup_optimizer_state(old.state_dict(), old_groups, new))
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(new.state[p][key], old.state[p][key])
    with pytest.raises(ValueError, match="do not fit"):
        regroup_optimizer_state(old.state_dict(), old_groups[:1], new)


def test_a_format_1_checkpoint_resumes_exactly(tmp_path: Path, dummy: str) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    constant = {"schedule": "constant", "warmup_steps": 0}
    train(dummy, TinyImages(), whole, train_config={**constant, "steps": 8})
    train(dummy, TinyImages(), split, train_config={**constant, "steps": 4})
    # What a format-1 run left: no group layout in the state, format_version 1.
    (_, folder), *_ = checkpoints(split)
    state = torch.load(folder / STATE_FILE, weights_only=True)
    del state["param_groups"]
    torch.save(state, folder / STATE_FILE)
    doc = json.loads((split / "config.json").read_text())
    (split / "config.json").write_text(json.dumps({**doc, "format_version": 1}))
    train(dummy, TinyImages(), split, resume=True, train_config={"steps": 8})
    assert (whole / "model.safetensors").read_bytes() == (split / "model.safetensors").read_bytes()
    assert json.loads((split / "config.json").read_text())["format_version"] == 2
