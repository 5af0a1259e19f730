"""The real thing: SIGKILL a training process at a random moment, resume, compare."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from dummy_method import TinyImages
from safetensors.torch import load_file

import kp3d.engine.request as train_request
from kp3d.cli import main
from kp3d.engine import read_metrics, train
from kp3d.engine.run import checkpoints

ENTRY = Path(__file__).resolve().parent / "train_entry.py"
SETTINGS = ["--steps", "120", "--ckpt-every", "5"]


def _start_until_a_checkpoint(command: list[str], run: Path, **pipes: Any) -> subprocess.Popen[str]:
    """Start ``command`` (a training, text output sent to ``pipes``) and return once it has
    checkpointed a step after 0; fails the test if it exits first or takes over 300 s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, text=True, **pipes)
    deadline = time.monotonic() + 300
    while not any(step > 0 for step, _ in checkpoints(run)):
        if proc.poll() is not None:
            log = proc.stdout if proc.stdout is not None else proc.stderr
            pytest.fail(f"training exited early: {log.read() if log is not None else ''}")
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.005)
    return proc


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_at_a_random_moment_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, dummy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    command = [sys.executable, str(ENTRY), "--out", str(run), *SETTINGS]
    proc = _start_until_a_checkpoint(
        command, run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    delay = random.SystemRandom().uniform(0.0, 0.4)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "result.json").exists(), (
        f"finished before the kill ({delay:.3f} s): test too short"
    )
    killed_at = checkpoints(run)[-1][0]

    # Resume in this process (a second interpreter would double the test's time), through the
    # same command line.
    monkeypatch.setattr(train_request, "open_training_data", lambda request: TinyImages())
    assert (
        main(
            [
                "train",
                "--method",
                dummy,
                "--data",
                "unused",
                "--out",
                str(run),
                *SETTINGS,
                "--resume",
            ]
        )
        == 0
    )
    reference = tmp_path / "reference"
    train(dummy, TinyImages(), reference, train_config={"steps": 120, "ckpt_every": 5})

    resumed, whole = (
        load_file(run / "model.safetensors"),
        load_file(reference / "model.safetensors"),
    )
    assert resumed.keys() == whole.keys()
    for key in whole:
        assert (resumed[key] == whole[key]).all(), (
            f"{key} differs (killed after step {killed_at}, {delay:.3f} s)"
        )
    losses = [
        [(r["step"], r["loss"]) for r in read_metrics(d / "metrics.jsonl")]
        for d in (run, reference)
    ]
    assert losses[0] == losses[1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_checkpoints_the_last_step_and_says_how_to_resume(
    tmp_path: Path, dummy: str, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals
) -> None:
    run = tmp_path / "run"
    command = [sys.executable, str(ENTRY), "--out", str(run), *SETTINGS, "--log-every", "7"]
    proc = _start_until_a_checkpoint(command, run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert f"kp3d train --out {run} --resume" in output.replace("\n", "")
    stopped = checkpoints(run)[-1][0]
    assert not (run / "result.json").exists() and 0 < stopped < 120
    # The last step is logged and checkpointed, though it is not a multiple of log_every.
    assert read_metrics(run / "metrics.jsonl")[-1]["step"] == stopped

    monkeypatch.setattr(train_request, "open_training_data", lambda request: TinyImages())
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--resume",
                "--data",
                "unused",
                "--method",
                dummy,
                *SETTINGS,
            ]
        )
        == 0
    )
    reference = tmp_path / "reference"
    train(dummy, TinyImages(), reference, train_config={"steps": 120, "ckpt_every": 5})
    resumed = load_file(run / "model.safetensors")
    whole = load_file(reference / "model.safetensors")
    for key in whole:
        assert torch.equal(resumed[key], whole[key]), key


def test_a_run_shorter_than_the_log_interval_logs_its_last_step(tmp_path: Path, dummy: str) -> None:
    train(dummy, TinyImages(), tmp_path / "r", train_config={"steps": 3, "log_every": 50})
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [3] and rows[0]["loss"] is not None
