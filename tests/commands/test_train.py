import json
from pathlib import Path
from typing import Any

import pytest

import kp3d.commands.train as train_command
import kp3d.engine.request as train_request
import kp3d.methods
from kp3d.cli import main

ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Register the engine tests' dummy methods; datasets are TinyImages. Returns the requests
    for which data were opened."""
    monkeypatch.syspath_prepend(str(ENGINE_TESTS))
    for name, attr in (("dummy", "SPEC"), ("dummy_other", "SPEC_OTHER"), ("clash", "SPEC_CLASH")):
        monkeypatch.setitem(kp3d.methods.REGISTRY, name, f"dummy_method:{attr}")
    from dummy_method import TinyImages

    requests: list[train_request.TrainRequest] = []

    def open_data(request: train_request.TrainRequest) -> TinyImages:
        requests.append(request)
        return TinyImages(size=request.data.size or 8, k=getattr(request.method_config, "k", 4))

    monkeypatch.setattr(train_request, "open_training_data", open_data)
    return requests


def _train(out: Path | str, *flags: str, method: str = "dummy") -> list[str]:
    """The arguments of ``kp3d train --method METHOD --data d --out OUT FLAGS``."""
    return ["train", "--method", method, "--data", "d", "--out", str(out), *flags]


def _stored(run: Path) -> dict[str, Any]:
    return json.loads((run / "config.json").read_text())


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_lists_the_methods_settings_with_its_defaults(
    opened: list, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(["train", "--method", "dummy", "--out", "x", "--help"], capsys)
    assert (
        "dummy settings" in text
        and "--hidden INT" in text
        and "Channels of the convolution." in text
    )
    assert "--nan-calls" in text
    assert "--hidden-" not in text and "--k K" in text and "(default: 4)" in text
    # TrainConfig flags show the method's train_defaults.
    assert "training settings (defaults for dummy)" in text
    assert "--batch-size INT" in text and "number of devices. (default: 4)" in text


def test_help_without_a_method_lists_methods_and_training_settings(
    opened: list, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(["train", "--help"], capsys)
    assert "dummy" in text and "--lr FLOAT" in text and "--hidden" not in text


def test_unknown_method_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--method", "nope", "--out", "x"])
    assert e.value.code == 2
    assert "unknown method 'nope'; valid methods: autolink3d" in capsys.readouterr().err


def test_method_settings_named_like_training_settings_get_a_prefix(
    opened: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--model.lr FLOAT" in _help(["train", "--method", "clash", "--out", "x", "-h"], capsys)
    argv = _train(
        tmp_path / "r", "--steps", "1", "--model.lr", "0.25", "--lr", "0.01", method="clash"
    )
    assert main(argv) == 0
    stored = _stored(tmp_path / "r")
    assert stored["model"]["lr"] == 0.25 and stored["train"]["lr"] == 0.01


def test_train_then_resume_with_a_longer_budget(opened: list, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(_train(run, "--steps", "3", "--hidden", "5", "--size", "12")) == 0
    stored = _stored(run)
    assert stored["model"]["hidden"] == 5 and stored["model"]["size"] == 12
    assert stored["data"]["size"] == 12 and opened[-1].data.size == 12
    # Method, data and settings come from the run.
    assert main(["train", "--out", str(run), "--resume", "--steps", "5"]) == 0
    assert json.loads((run / "result.json").read_text())["steps"] == 5
    assert opened[-1].data.size == 12 and opened[-1].method == "dummy"


def test_k_sets_the_methods_keypoint_count(opened: list, tmp_path: Path) -> None:
    assert main(_train(tmp_path / "r", "--steps", "1", "--k", "3")) == 0
    assert _stored(tmp_path / "r")["model"]["k"] == 3


def test_resume_with_a_changed_setting_is_an_error(
    opened: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(tmp_path / "run")
    assert main(_train(run, "--steps", "1")) == 0
    assert main(["train", "--out", run, "--resume", "--hidden", "3"]) == 2
    err = capsys.readouterr().err
    assert "config.json: cannot resume with different settings (hidden 6 -> 3)" in err
    assert "Traceback" not in err
    assert main(["train", "--method", "dummy_other", "--data", "d", "--out", run, "--resume"]) == 2
    assert "trained with method 'dummy', not 'dummy_other'" in capsys.readouterr().err


def test_config_file_sits_between_defaults_and_flags(opened: list, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'method = "dummy"\ndata = "d"\n[model]\nhidden = 5\nnoise = 0.0\n'
        "[train]\nlr = 0.05\nsteps = 2\nbatch-size = 2\n"
    )
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--lr", "0.02"]) == 0
    stored = _stored(tmp_path / "r")
    assert (stored["model"]["hidden"], stored["model"]["noise"]) == (5, 0.0)
    assert (stored["train"]["lr"], stored["train"]["steps"], stored["train"]["batch_size"]) == (
        0.02,
        2,
        2,
    )
    assert stored["train"]["warmup_steps"] == 2  # the method's train_defaults still apply


def test_a_runs_config_json_reproduces_it(opened: list, tmp_path: Path) -> None:
    assert main(_train(tmp_path / "a", "--steps", "2", "--hidden", "4", "--seed", "3")) == 0
    assert (
        main(
            ["train", "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b")]
        )
        == 0
    )
    a, b = _stored(tmp_path / "a"), _stored(tmp_path / "b")
    assert a["model"] == b["model"] and a["train"] == b["train"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'method = "dummy"\nsteps = 3\n',
            r"unknown key\(s\) 'steps'; valid keys: method, data, model, train",
        ),
        (
            'method = "dummy"\n[model]\nhiden = 3\n',
            r"unknown key hiden for DummyConfig \(did you mean 'hidden'\?\)",
        ),
        ('method = "dummy"\n[train]\nlr = "fast"\n', r"lr: expected float, got 'fast'"),
        ('method = "dummy"\n[train]\nschedule = "cosin"\n', r"did you mean 'cosine'"),
        ('method = "dummy"\nmodel = 3\n', r"'model' must be a table"),
        ("[model]\nhidden = 3\n", r"no method: pass --method"),
    ],
)
def test_config_file_errors_name_the_file(
    opened: list, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["train", "--config", str(cfg), "--data", "d", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    import re

    assert re.search(message, err), err
    assert opened == [] and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--k", "1"], "--k: at least 2 keypoints are needed"),
        (["--size", "6"], "size must be divisible by 4, got 6"),
        (["--size", "0"], "--size: must be a positive"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
        (["--no-3d"], "method 'dummy' has no 2D-only variant"),
    ],
)
def test_impossible_values_fail_before_the_data_is_opened(
    opened: list, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    argv = _train(tmp_path / "r", *flags)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert opened == [] and not (tmp_path / "r").exists()


def test_no_3d_trains_the_2d_registry_entry(
    opened: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(kp3d.methods.REGISTRY, "autolink3d", "dummy_method:SPEC_WITH_2D")
    monkeypatch.setitem(kp3d.methods.REGISTRY, "autolink", "dummy_method:SPEC_OTHER")
    assert main(_train(tmp_path / "r", "--no-3d", "--steps", "1", method="autolink3d")) == 0
    assert _stored(tmp_path / "r")["method"] == "autolink"


def test_a_time_budget_alone_lifts_the_step_limit(opened: list, tmp_path: Path) -> None:
    from kp3d.cli import build_parser

    base = _train(tmp_path / "r")
    for extra in (["--minutes", "0.5"], ["--minutes", "0.5", "--steps", "none"]):
        argv = [*base, *extra]
        request = train_command.resolve_request(build_parser("train", argv).parse_args(argv))
        assert (request.train_config.minutes, request.train_config.steps) == (0.5, None)


def test_method_from_argv(tmp_path: Path) -> None:
    f = train_command.method_from_argv
    assert f(["--method", "a"]) == "a" and f(["--method=b"]) == "b" and f([]) is None
    assert f(["--method", "autolink3d", "--no-3d"]) == "autolink"
    cfg = tmp_path / "c.toml"
    cfg.write_text('method = "c3dpo"\n')
    assert (
        f(["--config", str(cfg)]) == "c3dpo" and f(["--method", "a", "--config", str(cfg)]) == "a"
    )
    assert f(["--config", str(tmp_path / "missing.toml")]) is None  # reported by the full parse


def _multicategory_npz(path: Path, categories: int = 3) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    n, k = 12, 5
    np.savez(
        path,
        kp2d=rng.normal(size=(n, k, 2)).astype(np.float32),
        category=np.arange(n) % categories,
    )
    return path


def _lifter_argv(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--method",
        "lifter",
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--width",
        "8",
        "--n-basis",
        "2",
        *extra,
    ]


def test_lifter_n_categories_comes_from_the_data(tmp_path: Path) -> None:
    data = _multicategory_npz(tmp_path / "kp.npz", categories=3)
    assert main(_lifter_argv(data, tmp_path / "run")) == 0
    assert _stored(tmp_path / "run")["model"]["n_categories"] == 3
    # Resuming keeps the stored value; an explicit larger value is kept as well.
    assert main([*_lifter_argv(data, tmp_path / "run"), "--resume", "--steps", "2"]) == 0
    assert main(_lifter_argv(data, tmp_path / "big", "--n-categories", "5")) == 0
    assert _stored(tmp_path / "big")["model"]["n_categories"] == 5


def test_lifter_n_categories_below_the_datas_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _multicategory_npz(tmp_path / "kp.npz", categories=3)
    assert main(_lifter_argv(data, tmp_path / "run", "--n-categories", "2")) == 2
    err = capsys.readouterr().err
    assert "n_categories = 2, but the data" in err and "has 3 categories" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "config.json").exists()


def test_data_num_categories_without_the_attribute() -> None:
    import torch

    from kp3d.data.schema import Sample

    labelled = [Sample(kp2d=torch.zeros(3, 2), category=torch.tensor(c)) for c in (0, 4, 1)]
    from kp3d.methods.configure import data_num_categories

    assert data_num_categories(labelled) == 5
    assert data_num_categories([Sample(kp2d=torch.zeros(3, 2))]) is None
