"""kp3d infer on a video (frames streamed, per-frame results, 1-euro smoothing, overlay video)
and with the ONNX backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kp3d.cli import main
from kp3d.data.images import load_image
from kp3d.data.schema import Sample
from kp3d.data.video import VideoWriter, probe, read_frames
from kp3d.engine import load_run

pytest.importorskip("av")
W, H = 48, 40


@pytest.fixture(scope="module")
def setup(tiny_run: Path) -> tuple[Path, Path]:
    root = tiny_run
    clip = root / "clip.mp4"
    images = sorted((root / "train" / "images").glob("*.png"))
    with VideoWriter(clip, fps=12, size=(W, H)) as out:
        for path in images:
            image, _ = load_image(path, size=None)
            frame = torch.nn.functional.interpolate(image[None], size=(H, W), mode="bilinear")[0]
            out.write((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return root / "run", clip


def _infer(run: Path, source: Path, out: Path, *flags: str) -> list[str]:
    """The arguments of ``kp3d infer --run RUN --input SOURCE --out OUT FLAGS``."""
    return ["infer", "--run", str(run), "--input", str(source), "--out", str(out), *flags]


def test_every_frame_gets_keypoints_in_its_own_pixels(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    run, clip = setup
    out = tmp_path / "kp.npz"
    assert main(_infer(run, clip, out, "--batch-size", "5", "--overlay")) == 0
    with np.load(out) as f:
        assert f["kp2d"].shape == (16, 4, 2) and f["kp3d_image"].shape == (16, 4, 3)
        assert f["names"][0] == "frame_000000" and (np.diff(f["time_s"]) > 0).all()
        assert (f["image_size"] == [W, H]).all()
        kp2d = f["kp2d"]
    # The same as the model on each decoded frame, mapped from 32 px to W x H.
    model = load_run(run).model
    images = torch.stack([fr.image for fr in read_frames(clip, size=32)])
    with torch.no_grad():
        want = model.predict(Sample(image=images)).kp2d * torch.tensor([W / 32, H / 32])
    np.testing.assert_allclose(kp2d, want.numpy(), atol=1e-4)
    video = out.with_name("kp_overlay.mp4")
    assert probe(video).size == (W, H) and len(list(read_frames(video, size=8))) == 16


def test_smoothing_calms_the_tracks(setup: tuple[Path, Path], tmp_path: Path) -> None:
    run, clip = setup
    raw, smooth = tmp_path / "raw.npz", tmp_path / "smooth.npz"
    assert main(_infer(run, clip, raw)) == 0
    assert main(_infer(run, clip, smooth, "--smooth", "0.5")) == 0
    with np.load(raw) as a, np.load(smooth) as b:
        jitter = [np.abs(np.diff(x["kp2d"], axis=0)).sum() for x in (a, b)]
        np.testing.assert_array_equal(a["kp2d"][0], b["kp2d"][0])  # the filter starts at frame 0
    assert jitter[1] < 0.8 * jitter[0]


def test_onnx_backend_gives_the_torch_keypoints(setup: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    run, _ = setup
    images = run.parent / "train" / "images"
    a, b = tmp_path / "torch.npz", tmp_path / "onnx.npz"
    assert main(_infer(run, images, a)) == 0
    assert main(_infer(run, images, b, "--backend", "onnx")) == 0
    assert (run / "model.onnx").is_file()
    with np.load(a) as x, np.load(b) as y:
        np.testing.assert_allclose(x["kp2d"], y["kp2d"], atol=1e-3)
        np.testing.assert_allclose(x["kp3d_image"], y["kp3d_image"], atol=1e-3)
