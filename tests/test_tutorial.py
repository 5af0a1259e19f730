"""docs/tutorial.md, run as written on a tiny folder of photos (training cut to two steps)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kp3d.cli import main

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
# The only changes to the page's commands: a tiny model and a two-step budget.
BUDGET = {
    "--k 16 --minutes 30 --clock cpu": (
        "--k 4 --size 32 --steps 2 --batch-size 4 --perceptual none --w-pixel 1"
    ),
}

pytest.importorskip("av")
pytest.importorskip("onnxruntime")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", TUTORIAL.read_text(encoding="utf-8"), re.DOTALL)


def test_the_tutorial_runs_end_to_end(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kp3d.data.video import VideoWriter

    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    sources = sorted((tiny_run / "train" / "images").glob("*.png"))
    for i, src in enumerate(sources):
        name = {0: "a.jpg", 1: "b.jpg"}.get(i, f"photo{i:02d}.jpg")
        Image.open(src).convert("RGB").resize((40, 48)).save(photos / name, quality=95)
    with VideoWriter(tmp_path / "clip.mp4", fps=10, size=(40, 48)) as video:
        for src in sources[:6]:
            video.write(np.asarray(Image.open(src).convert("RGB").resize((40, 48))))

    text = TUTORIAL.read_text(encoding="utf-8")
    for original in BUDGET:
        assert original in text, f"the tutorial no longer says {original!r}: update BUDGET"
    commands = [
        line.split("#")[0].strip()
        for block in _blocks("bash")
        for line in block.splitlines()
        if line.startswith("kp3d ")
    ]
    assert len(commands) >= 7
    for command in commands:
        for original, tiny in BUDGET.items():
            command = command.replace(original, tiny)
        assert main(shlex.split(command)[1:]) == 0, command

    for path in (
        "keypoints.npz",
        "clip.npz",
        "clip_overlay.mp4",
        "report.html",
        "keypoints_onnx.npz",
        "runs/mine/model.onnx",
    ):
        assert (tmp_path / path).is_file(), path
    assert len(list((tmp_path / "overlays").glob("*.png"))) == len(sources)
    with np.load(tmp_path / "keypoints.npz") as f:
        assert f["kp2d"].shape == (len(sources), 4, 2)
        assert (f["kp2d"][..., 0] <= 40).all() and (f["kp2d"][..., 1] <= 48).all()

    (python,) = _blocks("python")
    exec(python, {})  # noqa: S102 - the page's example, run as written
