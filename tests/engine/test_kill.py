"""The real thing: SIGKILL a training process at a random moment, resume, compare."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dummy_method import TinyImages
from safetensors.torch import load_file

import kp3d.engine.request as train_request
from kp3d.cli import main
from kp3d.engine import read_metrics, train
from kp3d.engine.run import checkpoints

ENTRY = Path(__file__).resolve().parent / "train_entry.py"
SETTINGS = ["--steps", "120", "--ckpt-every", "5"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_at_a_random_moment_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, dummy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    command = [sys.executable, str(ENTRY), "--out", str(run), *SETTINGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any(step > 0 for step, _ in checkpoints(run)):
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.005)
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
