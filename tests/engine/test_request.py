"""One resolution of a training request: kp3d.engine.request."""

from pathlib import Path

import pytest
from dummy_method import DummyConfig, TinyImages

from kp3d.engine import TrainConfig, train
from kp3d.engine.request import Flags, requested_method, resolve_request
from kp3d.errors import ConfigError


def test_defaults_then_file_then_flags(tmp_path: Path, dummy: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'method = "dummy"\n[data]\npath = "d"\nformat = "npz"\n'
        "[model]\nhidden = 5\nnoise = 0.5\n[train]\nlr = 0.05\nseed = 4\n"
    )
    request = resolve_request(
        Flags(out=tmp_path / "r", config=cfg, model={"noise": 0.25}, train={"lr": 0.02}, k=3)
    )
    assert request.method == "dummy" and isinstance(request.method_config, DummyConfig)
    m, t = request.method_config, request.train_config
    assert (m.hidden, m.noise, m.k, m.size) == (5, 0.25, 3, DummyConfig().size)
    assert (t.lr, t.seed, t.warmup_steps) == (0.02, 4, 2)  # warmup: the spec's train_defaults
    assert isinstance(t, TrainConfig)
    assert request.data.path == Path("d") and request.data.format == "npz"
    assert request.data.size == DummyConfig().size  # the method's image size
    assert not request.resume and request.stored is None


def test_resume_keeps_the_stored_run_and_takes_budget_flags(tmp_path: Path, dummy: str) -> None:
    run = tmp_path / "run"
    train(
        dummy,
        TinyImages(),
        run,
        method_config={"hidden": 3},
        train_config={"steps": 2, "seed": 5},
        data_info={"path": "/data/x", "size": 8, "format": "npz"},
    )
    request = resolve_request(Flags(out=run, resume=True, train={"steps": 4}))
    assert request.method == "dummy" and request.stored is not None
    assert request.method_config.hidden == 3 and request.train_config.seed == 5
    assert request.train_config.steps == 4
    assert (str(request.data.path), request.data.size, request.data.format) == (
        "/data/x",
        8,
        "npz",
    )
    # Resuming a folder without a run starts it.
    assert (
        resolve_request(
            Flags(out=tmp_path / "new", resume=True, method="dummy", data=Path("d"))
        ).stored
        is None
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({}, "no method: pass --method NAME"),
        ({"method": "dummy"}, "no data: pass --data DIR"),
        ({"method": "nope", "data": Path("d")}, "unknown method 'nope'"),
        ({"method": "dummy", "data": Path("d"), "k": 1}, "--k: at least 2 keypoints"),
        ({"method": "dummy", "data": Path("d"), "no_3d": True}, "has no 2D-only variant"),
        ({"method": "dummy", "data": Path("d"), "model": {"size": 6}}, "divisible by 4"),
        ({"method": "dummy", "data": Path("d"), "train": {"lr": -1.0}}, "lr must be > 0"),
    ],
)
def test_errors(tmp_path: Path, dummy: str, flags: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_request(Flags(out=tmp_path / "r", **flags))
    assert not (tmp_path / "r").exists()


def test_a_time_budget_alone_lifts_the_step_limit(tmp_path: Path, dummy: str) -> None:
    r = resolve_request(Flags(out=tmp_path, method="dummy", data=Path("d"), train={"minutes": 1.0}))
    assert (r.train_config.minutes, r.train_config.steps) == (1.0, None)


def test_requested_method_for_the_parser(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('method = "lifter"\n')
    ask = {"config": None, "resume": False, "out": None, "no_3d": False}
    assert requested_method(**{**ask, "method": "c3dpo"}) == "c3dpo"
    assert requested_method(**{**ask, "method": None, "config": cfg}) == "lifter"
    assert requested_method(**{**ask, "method": "autolink3d", "no_3d": True}) == "autolink"
    bad = tmp_path / "bad.toml"
    bad.write_text("method = [")
    assert requested_method(**{**ask, "method": None, "config": bad}) is None
