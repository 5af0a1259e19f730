"""The Python API: kp3d.load(run).predict(...) on every kind of image input, and its documented
example run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kp3d
import kp3d.api
from kp3d.cli import main
from kp3d.errors import UserError

W, H = 48, 40


@pytest.fixture(scope="module")
def setup(tiny_run: Path) -> tuple[Path, Path]:
    root = tiny_run
    photos = []
    for i, path in enumerate(sorted((root / "train" / "images").glob("*.png"))[:3]):
        (root / "api_photos").mkdir(exist_ok=True)
        photo = root / "api_photos" / f"photo{i}.png"
        Image.open(path).convert("RGB").resize((W, H), Image.Resampling.BICUBIC).save(photo)
        photos.append(photo)
    return root / "run", photos


def test_the_documented_example_runs(setup: tuple[Path, list[Path]]) -> None:
    run, photos = setup
    example = re.search(r"Example.*?::\n\n(.*?)\n\n[A-Z]", kp3d.api.__doc__, re.DOTALL)
    assert example is not None
    code = "\n".join(line[4:] for line in example.group(1).splitlines())
    code = code.replace('"runs/c"', repr(str(run)))
    code = code.replace('"a.jpg"', repr(str(photos[0]))).replace('"b.jpg"', repr(str(photos[1])))
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the documented example, run as written
    pred = scope["pred"]
    assert isinstance(pred, kp3d.Prediction)
    assert pred.kp2d.shape == (2, 4, 2) and pred.kp3d_image.shape == (2, 4, 3)


def test_predict_equals_infer_and_takes_every_image_type(
    setup: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    run, photos = setup
    predictor = kp3d.load(run)
    assert predictor.method == "autolink3d" and predictor.image_size == 32
    assert predictor.artifacts["skeleton"].shape == (4, 4)
    by_path = predictor.predict([str(p) for p in photos], batch_size=2)
    out = tmp_path / "kp.npz"
    folder = photos[0].parent
    assert main(["infer", "--run", str(run), "--input", str(folder), "--out", str(out)]) == 0
    with np.load(out) as f:
        names = list(f["names"])
        want = np.stack([f["kp2d"][names.index(p.name)] for p in photos])
    np.testing.assert_allclose(by_path.kp2d.numpy(), want, atol=1e-4)
    # Every pixel field is in the photo's own pixels: x within W, y within H.
    assert by_path.kp2d[..., 0].max() <= W and by_path.kp2d[..., 1].max() <= H

    pil = [Image.open(p) for p in photos]
    arrays = [np.asarray(im) for im in pil]
    floats = [a.astype(np.float32) / 255 for a in arrays]
    tensors = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in floats])
    for inputs in (pil, arrays, floats):
        np.testing.assert_allclose(predictor.predict(inputs).kp2d, by_path.kp2d, atol=1e-4)
    # Tensors are resized by torch (antialiased bilinear), not PIL: close, not equal.
    np.testing.assert_allclose(predictor.predict(tensors).kp2d, by_path.kp2d, atol=0.5)
    one = predictor.predict(str(photos[0]))
    np.testing.assert_allclose(one.kp2d, by_path.kp2d[:1], atol=1e-4)


def test_bad_inputs(setup: tuple[Path, list[Path]], tmp_path: Path) -> None:
    run, _ = setup
    predictor = kp3d.load(run)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        predictor.predict(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor.predict([np.zeros((8, 8))])
    with pytest.raises(UserError, match="not a kp3d run folder"):
        kp3d.load(tmp_path)


def test_keypoint_inputs_mark_non_finite_points_hidden() -> None:
    from kp3d.data.inputs import KEYPOINTS

    kp = np.array([[1.0, 2.0], [np.nan, 3.0], [4.0, 5.0]])
    batch, sizes = KEYPOINTS.samples(kp, size=None)
    assert sizes is None and batch.kp2d.shape == (1, 3, 2)
    assert batch.vis.tolist() == [[True, False, True]] and batch.kp2d.isfinite().all()
    with pytest.raises(ValueError, match="keypoints must be"):
        KEYPOINTS.samples(np.zeros((2, 3, 3)), size=None)


def test_a_lifter_fit_run_predicts_from_python_and_the_cli(tmp_path: Path) -> None:
    # lifter-fit refines each rotation by gradient steps at prediction: no inference mode.
    gen = np.random.default_rng(0)
    kp2d = gen.normal(size=(64, 6, 2)).astype(np.float32)
    np.savez(tmp_path / "kp.npz", kp2d=kp2d)
    run = tmp_path / "run"
    argv = ["train", "--method", "lifter-fit", "--data", str(tmp_path / "kp.npz")]
    assert main([*argv, "--out", str(run), "--steps", "2", "--batch-size", "16"]) == 0
    pred = kp3d.load(run).predict(kp2d[:5])
    assert pred.kp3d.shape == (5, 6, 3)
    np.testing.assert_allclose(pred.kp3d[..., :2], kp2d[:5], atol=1e-4)
    out = tmp_path / "lifted.npz"
    assert (
        main(["infer", "--run", str(run), "--input", str(tmp_path / "kp.npz"), "--out", str(out)])
        == 0
    )
    with np.load(out) as f:
        np.testing.assert_allclose(f["kp3d"][:5], pred.kp3d.numpy(), atol=1e-5)
