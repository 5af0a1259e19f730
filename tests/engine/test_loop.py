import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from dummy_method import TinyImages

from kp3d.data.schema import Sample
from kp3d.engine import TrainConfig, load_run, read_metrics, train
from kp3d.engine import loop as engine_loop
from kp3d.engine.loop import bf16_native, optimizer_groups
from kp3d.errors import ConfigError, DataError, UserError
from kp3d.methods import MethodModel
from kp3d.methods.configure import keypoints_from_data


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


class CrashingImages(TinyImages):
    """Raises (like a killed process would stop) at the ``crash_at``-th sample read."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.reads, self.crash_at = 0, crash_at

    def __getitem__(self, i: int) -> Sample:
        self.reads += 1
        if self.reads == self.crash_at:
            raise RuntimeError("simulated crash")
        return super().__getitem__(i)


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl")]


def test_same_seed_same_result_different_seed_differs(tmp_path: Path, dummy: str) -> None:
    a = train(dummy, TinyImages(), tmp_path / "a")
    b = train(dummy, TinyImages(), tmp_path / "b")
    c = train(dummy, TinyImages(), tmp_path / "c", train_config={"seed": 1})
    _assert_bitwise_equal(_params(a.model), _params(b.model))
    assert not torch.equal(a.model.head.weight, c.model.head.weight)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert a.steps == 12 and a.skipped_steps == 0 and a.final_loss is not None


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path, dummy: str) -> None:
    whole = train(dummy, TinyImages(), tmp_path / "whole")
    # batch_size 4: the 27th read is in step 7, after the checkpoint at step 4 (ckpt_every 4).
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(dummy, CrashingImages(crash_at=27), tmp_path / "run")
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000004"]
    assert not (tmp_path / "run" / "result.json").exists()
    resumed = train(dummy, TinyImages(), tmp_path / "run", resume=True)
    assert resumed.steps == 12
    _assert_bitwise_equal(_params(whole.model), _params(resumed.model))
    # The metrics read like one run: rows logged after the checkpoint were redone, not repeated.
    assert _losses(tmp_path / "run") == _losses(tmp_path / "whole")


def test_resume_can_extend_the_budget_and_keeps_the_ema(tmp_path: Path, dummy: str) -> None:
    settings = {"schedule": "constant", "ema": 0.9, "steps": 12}
    whole = train(dummy, TinyImages(), tmp_path / "whole", train_config=settings)
    train(dummy, TinyImages(), tmp_path / "run", train_config={**settings, "steps": 7})
    longer = train(dummy, TinyImages(), tmp_path / "run", train_config={"steps": 12}, resume=True)
    _assert_bitwise_equal(_params(whole.model), _params(longer.model))
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["train"]["steps"] == 12
    # The saved model is the EMA, not the raw weights.
    raw = load_run(tmp_path / "run").model
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000012" / "model.safetensors"
    from safetensors.torch import load_file

    assert not torch.equal(load_file(ckpt)["head.weight"], raw.head.weight)
    _assert_bitwise_equal(_params(raw), _params(longer.model))


def test_resuming_a_finished_run_does_nothing(tmp_path: Path, dummy: str) -> None:
    first = train(dummy, TinyImages(), tmp_path / "run")
    again = train(dummy, TinyImages(), tmp_path / "run", resume=True)
    assert again.steps == first.steps and again.images_per_s == 0.0
    _assert_bitwise_equal(_params(first.model), _params(again.model))


def test_resume_of_a_new_folder_starts_it(tmp_path: Path, dummy: str) -> None:
    assert train(dummy, TinyImages(), tmp_path / "new", resume=True).steps == 12


def test_refuses_to_overwrite_a_run(tmp_path: Path, dummy: str) -> None:
    train(dummy, TinyImages(), tmp_path / "run", train_config={"steps": 1})
    with pytest.raises(UserError, match="already holds a run.*--resume"):
        train(dummy, TinyImages(), tmp_path / "run")


def test_resume_errors(tmp_path: Path, dummy: str) -> None:
    run = tmp_path / "run"
    train(dummy, TinyImages(), run, train_config={"steps": 2})
    with pytest.raises(
        UserError, match=r"config.json: this run was trained with method 'dummy', not 'dummy_other'"
    ):
        train("dummy_other", TinyImages(), run, resume=True)
    with pytest.raises(
        UserError, match=r"cannot resume with different settings \(lr 0.01 -> 0.5\)"
    ):
        train(dummy, TinyImages(), run, train_config={"lr": 0.5}, resume=True)
    with pytest.raises(UserError, match=r"hidden 6 -> 5"):
        train(dummy, TinyImages(), run, method_config={"hidden": 5}, resume=True)


def test_invalid_settings_fail_before_anything_is_written(tmp_path: Path, dummy: str) -> None:
    with pytest.raises(ConfigError, match="k must be >= 2"):
        train(dummy, TinyImages(), tmp_path / "a", method_config={"k": 1})
    with pytest.raises(ConfigError, match="unknown key lr.*valid keys"):
        train(dummy, TinyImages(), tmp_path / "a", method_config={"lr": 1.0})
    with pytest.raises(ConfigError, match="schedule"):
        train(dummy, TinyImages(), tmp_path / "a", train_config={"schedule": "linear"})
    with pytest.raises(ConfigError, match="unknown method 'nope'.*dummy"):
        train("nope", TinyImages(), tmp_path / "a")
    with pytest.raises(DataError, match="empty"):
        train(dummy, TinyImages(n=0), tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_a_non_finite_step_is_skipped(tmp_path: Path, dummy: str) -> None:
    r = train(dummy, TinyImages(), tmp_path / "run", method_config={"nan_calls": (3,)})
    assert (r.skipped_steps, r.rollbacks, r.steps) == (1, 0, 12)
    assert all(torch.isfinite(p).all() for p in r.model.parameters())
    events = read_metrics(tmp_path / "run" / "events.jsonl")
    assert events == [{"step": 3, "event": "nonfinite", "consecutive": 1}]


def test_repeated_non_finite_steps_roll_back_with_a_lower_lr(tmp_path: Path, dummy: str) -> None:
    r = train(
        dummy,
        TinyImages(),
        tmp_path / "run",
        method_config={"nan_calls": (5, 6)},
        train_config={"max_nonfinite": 2, "schedule": "constant", "warmup_steps": 0},
    )
    assert (r.skipped_steps, r.rollbacks, r.steps) == (2, 1, 12)
    rollback = [
        e for e in read_metrics(tmp_path / "run" / "events.jsonl") if e["event"] == "rollback"
    ]
    assert rollback == [
        {"step": 4, "event": "rollback", "from_step": 7, "lr_scale": 0.5, "rollbacks": 1}
    ]
    lrs = [row["lr"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert lrs[0] == 0.01 and lrs[-1] == 0.005
    assert all(torch.isfinite(p).all() for p in r.model.parameters())


def test_training_that_keeps_diverging_stops_with_an_error(tmp_path: Path, dummy: str) -> None:
    with pytest.raises(UserError, match="training diverged.*after 1 roll-back"):
        train(
            dummy,
            TinyImages(),
            tmp_path / "run",
            method_config={"nan_calls": tuple(range(3, 99))},
            train_config={"max_nonfinite": 2, "max_rollbacks": 1},
        )
    # Skipped steps do not touch the weights, so the checkpoint at step 4 is still a good one.
    kept = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert kept == ["step-00000004"]
    assert all(torch.isfinite(p).all() for p in load_run(tmp_path / "run").model.parameters())


def test_bf16_autocast_and_channels_last_reach_the_model(
    tmp_path: Path, dummy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_loop, "bf16_native", lambda device: True)
    train(dummy, TinyImages(), tmp_path / "on", train_config={"bf16": True, "steps": 2})
    row = read_metrics(tmp_path / "on" / "metrics.jsonl")[-1]
    assert row["autocast"] == 1.0 and row["channels_last"] == 1.0
    train(dummy, TinyImages(), tmp_path / "off", train_config={"steps": 2, "channels_last": False})
    row = read_metrics(tmp_path / "off" / "metrics.jsonl")[-1]
    assert row["autocast"] == 0.0 and row["channels_last"] == 0.0


def test_bf16_native_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(bf16_native(torch.device("cpu")), bool)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert bf16_native(torch.device("cpu"))


def test_minutes_budget_stops_training(tmp_path: Path, dummy: str) -> None:
    r = train(dummy, TinyImages(), tmp_path / "run", train_config={"steps": None, "minutes": 0.003})
    assert r.steps >= 1 and r.elapsed_s > 0.1
    assert json.loads((tmp_path / "run" / "result.json").read_text())["finished"] is True


def test_run_folder_contents(tmp_path: Path, dummy: str) -> None:
    r = train(dummy, TinyImages(), tmp_path / "run", data_info={"path": "/data/x", "size": 8})
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.json",
        "events.jsonl",
        "metrics.jsonl",
        "model.safetensors",
        "result.json",
    ]
    doc = json.loads((run / "config.json").read_text())
    assert doc["method"] == "dummy" and doc["train"]["seed"] == 0 and doc["train"]["lr"] == 0.01
    assert doc["data"] == {"path": "/data/x", "size": 8, "n_samples": 10}
    assert {"kp3d_version", "git_revision", "torch_version", "created"} <= set(doc["provenance"])
    rows = read_metrics(run / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(2, 13, 2))
    assert {"loss", "mse", "grad_norm", "lr", "images_per_s", "elapsed_s", "skipped"} <= set(
        rows[0]
    )
    loaded = load_run(run)
    assert loaded.method_name == "dummy" and loaded.train_config.steps == 12
    assert not loaded.model.training
    batch = Sample(image=TinyImages().images[:3])
    # Equal up to float rounding: the trained model runs its convolutions channels-last.
    torch.testing.assert_close(loaded.model.predict(batch).kp2d, r.model.predict(batch).kp2d)


def test_a_complete_train_config_is_taken_as_is(tmp_path: Path, dummy: str) -> None:
    train(dummy, TinyImages(), tmp_path / "run", train_config=TrainConfig(steps=3, batch_size=2))
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["train"]["lr"] == TrainConfig().lr and doc["train"]["batch_size"] == 2


def test_weight_decay_spares_vectors() -> None:
    model = MethodModel()
    model.net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2)
    )
    decay, no_decay = optimizer_groups(model, 0.1)
    assert all(p.ndim >= 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0


def test_fill_from_data_sets_the_number_of_keypoints() -> None:
    @dataclass(frozen=True)
    class Lifting:
        n_keypoints: int = 0

    assert keypoints_from_data(Lifting(), TinyImages(k=5)).n_keypoints == 5
    assert keypoints_from_data(Lifting(3), TinyImages(k=5)).n_keypoints == 3

    class NoKeypoints(TinyImages):
        def __getitem__(self, i: int) -> Sample:
            return Sample(image=self.images[i])

    with pytest.raises(DataError, match="no 2D keypoints"):
        keypoints_from_data(Lifting(), NoKeypoints())


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_a_time_budget_is_measured_on_the_chosen_clock(
    tmp_path: Path, dummy: str, clock: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fake CPU clock that runs 20 s per reading (other code reads it too): a 1-minute CPU
    # budget ends within a few steps, while the same budget on the (real) wall clock lets all 12 steps run.
    ticks = iter(range(0, 10**6, 20))
    monkeypatch.setattr(engine_loop.time, "process_time", lambda: float(next(ticks)))
    done = train(
        dummy,
        TinyImages(),
        tmp_path / "run",
        train_config={"steps": 12, "minutes": 1.0, "clock": clock},
    )
    if clock == "wall":
        assert done.steps == 12
    else:
        assert 1 <= done.steps < 12


def test_the_models_diagnosis_is_logged_and_stored_once_at_the_end(
    tmp_path: Path, dummy: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from dummy_method import DummyModel

    from kp3d.methods import Diagnosis

    seen: list[tuple[int, bool, list[str]]] = []

    def diagnose(self: DummyModel, batch: Sample) -> Diagnosis:
        seen.append((len(batch.image), self.training, list(batch.name)))
        return Diagnosis({"depth": 0.01, "near_flat": True}, ["dummy: the result is flat"])

    monkeypatch.setattr(DummyModel, "diagnose", diagnose)
    monkeypatch.setattr(DummyModel, "diagnose_samples", 4)
    with caplog.at_level("WARNING", logger="kp3d.engine"):
        r = train(dummy, TinyImages(), tmp_path / "run")
    # Once, in eval mode, on 4 of the 10 training samples spread over the set; then training
    # mode is back (the returned model is put in eval mode by train itself).
    assert len(seen) == 1 and seen[0][:2] == (4, False)
    assert seen[0][2] == [TinyImages()[i].name for i in (0, 2, 5, 7)]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["diagnostics"] == {"depth": 0.01, "near_flat": True}
    assert result["warnings"] == ["dummy: the result is flat"]
    assert "dummy: the result is flat" in caplog.text
    assert r.steps == 12


def test_no_diagnosis_without_diagnose_samples(
    tmp_path: Path, dummy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dummy_method import DummyModel

    def diagnose(self: DummyModel, batch: Sample) -> None:
        raise AssertionError("diagnose called")

    monkeypatch.setattr(DummyModel, "diagnose", diagnose)
    train(dummy, TinyImages(), tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["diagnostics"] == {} and result["warnings"] == []
