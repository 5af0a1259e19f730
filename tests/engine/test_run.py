import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from dummy_method import TinyImages

from kp3d.engine import load_run, train
from kp3d.engine.run import (
    capture_rng,
    checkpoints,
    load_checkpoint,
    load_weights,
    read_run_config,
    restore_rng,
    save_checkpoint,
)
from kp3d.errors import ConfigError, UserError


@pytest.fixture
def run(tmp_path: Path, dummy: str) -> Path:
    train(dummy, TinyImages(), tmp_path / "run", train_config={"steps": 2})
    return tmp_path / "run"


def _edit_config(run: Path, change) -> None:
    doc = json.loads((run / "config.json").read_text())
    change(doc)
    (run / "config.json").write_text(json.dumps(doc))


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"config.json: no such file; .* is not a kp3d run folder"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text('{"a": 1}')
    with pytest.raises(UserError, match="not a kp3d run config"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(UserError, match="unreadable run config"):
        load_run(tmp_path)


def test_config_from_a_newer_layout(run: Path) -> None:
    _edit_config(run, lambda d: d.update(format_version=99))
    with pytest.raises(UserError, match=r"config.json: run format version 99 .*upgrade kp3d"):
        read_run_config(run)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        pytest.param(
            lambda d: d["model"].update(new_setting=1),
            ConfigError,
            r"config.json: unknown key new_setting .*written by kp3d",
            id="settings this version does not know",
        ),
        pytest.param(
            lambda d: d.update(method="gone"),
            ConfigError,
            "unknown method 'gone'",
            id="an unknown method",
        ),
        pytest.param(
            lambda d: d["model"].update(hidden=5),
            UserError,
            r"model.safetensors: the weights do not fit the configured model",
            id="weights of another architecture",
        ),
    ],
)
def test_a_config_that_does_not_fit_names_the_file(
    run: Path, change: Callable[[dict], None], error: type[Exception], message: str
) -> None:
    _edit_config(run, change)
    with pytest.raises(error, match=message):
        load_run(run)


def test_truncated_weights(run: Path) -> None:
    path = run / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(UserError, match=r"model.safetensors: truncated or corrupt weights file"):
        load_run(run)
    path.unlink()
    with pytest.raises(UserError, match="no such file"):
        load_run(run)


def test_resume_from_a_damaged_checkpoint_names_the_file(run: Path, dummy: str) -> None:
    state = checkpoints(run)[-1][1] / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(UserError, match=r"state.pt: truncated or corrupt training state"):
        train(dummy, TinyImages(), run, train_config={"steps": 4}, resume=True)


def test_checkpoints_keep_only_the_newest(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    for step in (0, 5, 10):
        save_checkpoint(tmp_path, step, model, {"step": step})
    assert [(s, p.name) for s, p in checkpoints(tmp_path)] == [(10, "step-00000010")]
    other = torch.nn.Linear(2, 2)
    assert load_checkpoint(checkpoints(tmp_path)[0][1], other, device=torch.device("cpu")) == {
        "step": 10
    }
    assert torch.equal(other.weight, model.weight)


def test_random_streams_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # a cached Gaussian is part of numpy's state
    cpu = torch.device("cpu")
    save_checkpoint(tmp_path, 1, torch.nn.Linear(1, 1), {"rng": capture_rng(cpu)})
    expected = (torch.rand(3), np.random.normal(size=3), random.random())
    state = load_checkpoint(checkpoints(tmp_path)[0][1], torch.nn.Linear(1, 1), device=cpu)
    torch.manual_seed(0)
    np.random.seed(0)
    restore_rng(state["rng"], cpu)
    got = (torch.rand(3), np.random.normal(size=3), random.random())
    assert (
        torch.equal(got[0], expected[0])
        and np.array_equal(got[1], expected[1])
        and got[2] == expected[2]
    )


def test_weights_with_other_names_list_the_missing_and_unexpected_ones(tmp_path: Path) -> None:
    import safetensors.torch

    path = tmp_path / "model.safetensors"
    safetensors.torch.save_model(torch.nn.Linear(2, 2), str(path))
    with pytest.raises(
        UserError,
        match=r"model.safetensors: .*\(missing 0.bias, 0.weight; unexpected bias, weight\)",
    ):
        load_weights(path, torch.nn.Sequential(torch.nn.Linear(2, 2)))
