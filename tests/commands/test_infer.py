import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kp3d.methods
from kp3d.cli import main
from kp3d.data.images import load_image
from kp3d.data.schema import Sample
from kp3d.engine import load_run, train

ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"
SIZES = [(20, 14), (9, 9), (31, 8), (12, 40), (8, 8)]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(ENGINE_TESTS))
    monkeypatch.setitem(kp3d.methods.REGISTRY, "dummy", "dummy_method:SPEC")
    from dummy_method import TinyImages

    train("dummy", TinyImages(), tmp_path / "run", train_config={"steps": 2}, data_info={"size": 8})
    return tmp_path / "run"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Five readable images (one in a sub-folder, one a JPEG) and one that is not an image."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(SIZES):
        pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        name = f"sub/im{i}.png" if i == 1 else f"im{i}.jpg" if i == 2 else f"im{i}.png"
        Image.fromarray(pixels).save(folder / name)
    (folder / "broken.png").write_bytes(b"not an image at all")
    return folder


def _infer(run: Path, images: Path, out: Path, *flags: str) -> int:
    return main(
        [
            "infer",
            "--run",
            str(run),
            "--input",
            str(images),
            "--out",
            str(out),
            "--batch-size",
            "2",
            *flags,
        ]
    )


def test_npz_has_every_prediction_in_original_pixels(
    run: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "res.npz"
    assert _infer(run, images, out) == 0
    z = np.load(out)
    names = ["im0.png", "im2.jpg", "im3.png", "im4.png", "sub/im1.png"]
    assert z["names"].tolist() == names
    assert z["skipped_names"].tolist() == ["broken.png"]
    assert (
        z["kp2d"].shape == (5, 4, 2)
        and z["kp3d"].shape == (5, 4, 3)
        and z["skeleton"].shape == (4, 4)
    )
    model = load_run(run).model
    for i, name in enumerate(names):
        image, (w, h) = load_image(images / name, size=8)
        assert z["image_size"][i].tolist() == [w, h]
        expected = model.predict(Sample(image=image[None])).kp2d[0].numpy() * np.array(
            [w / 8, h / 8]
        )
        np.testing.assert_allclose(z["kp2d"][i], expected, rtol=1e-5, atol=1e-5)
        # Every pixel-frame field is in the original pixels: the image-frame 3D keypoints'
        # x, y agree with the 2D keypoints after the rescale.
        np.testing.assert_allclose(z["kp3d_image"][i][:, :2], z["kp2d"][i], rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "res.npz.parts").exists()


def test_json_output_and_overlays(run: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    assert _infer(run, images, out, "--overlay") == 0
    doc = json.loads(out.read_text())
    assert doc["method"] == "dummy" and len(doc["skeleton"]) == 4
    first = doc["images"][0]
    assert first["name"] == "im0.png" and (first["width"], first["height"]) == SIZES[0]
    assert np.asarray(first["kp2d"]).shape == (4, 2)
    assert doc["skipped"][0]["name"] == "broken.png" and "broken.png" in doc["skipped"][0]["error"]
    overlays = sorted(
        p.relative_to(tmp_path / "res_overlay").as_posix()
        for p in (tmp_path / "res_overlay").rglob("*.png")
    )
    assert overlays == ["im0.png", "im2.jpg.png", "im3.png", "im4.png", "sub/im1.png"]
    assert Image.open(tmp_path / "res_overlay" / "im3.png").size == SIZES[3]


def test_a_crash_loses_at_most_the_batch_in_flight_and_a_rerun_resumes(
    run: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dummy_method import DummyModel

    assert _infer(run, images, tmp_path / "whole.npz") == 0
    seen: list[int] = []
    original = DummyModel.predict

    def crashing(self, batch: Sample):  # type: ignore[no-untyped-def]
        if len(seen) == 2:
            raise RuntimeError("killed")
        seen.append(len(batch.image))
        return original(self, batch)

    monkeypatch.setattr(DummyModel, "predict", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        _infer(run, images, tmp_path / "res.npz")
    assert len(list((tmp_path / "res.npz.parts").glob("part-*.npz"))) == 2
    assert not (tmp_path / "res.npz").exists()

    seen.clear()
    monkeypatch.setattr(
        DummyModel,
        "predict",
        lambda self, batch: (seen.append(len(batch.image)), original(self, batch))[1],
    )
    assert _infer(run, images, tmp_path / "res.npz") == 0
    # 6 files, 2 per batch: batches 1-2 were done (4 files, one unreadable); 2 images were left.
    assert sum(seen) == 2
    a, b = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "res.npz")
    assert a.files == b.files
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key


def test_parts_of_another_job_are_not_mixed_in(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = tmp_path / "res.npz.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"run": "elsewhere"}')
    assert _infer(run, images, tmp_path / "res.npz") == 2
    assert "holds partial results of another inference" in capsys.readouterr().err


def test_errors(
    run: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _infer(run, images, tmp_path / "res.csv") == 2
    assert "must end in .npz or .json" in capsys.readouterr().err
    assert _infer(run, images, tmp_path / "res.npz", "--strict") == 2
    assert "broken.png" in capsys.readouterr().err
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert _infer(run, video, tmp_path / "v.npz") == 2
    assert "clip.mp4: not a readable video" in capsys.readouterr().err
    assert _infer(tmp_path / "nowhere", images, tmp_path / "x.npz") == 2
    assert "not a kp3d run folder" in capsys.readouterr().err
    done = tmp_path / "done.npz"
    assert _infer(run, images, done) == 0
    assert _infer(run, images, done) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _infer(run, images, done, "--overwrite") == 0


def test_a_single_image(run: Path, images: Path, tmp_path: Path) -> None:
    assert _infer(run, images / "im3.png", tmp_path / "one.npz") == 0
    z = np.load(tmp_path / "one.npz")
    assert z["names"].tolist() == ["im3.png"] and torch.from_numpy(z["kp2d"]).isfinite().all()


def test_overlays_go_to_the_folder_given(run: Path, images: Path, tmp_path: Path) -> None:
    # The README's form: --overlay overlays/
    assert _infer(run, images, tmp_path / "res.npz", "--overlay", str(tmp_path / "drawn")) == 0
    assert len(list((tmp_path / "drawn").rglob("*.png"))) == 5
    assert not (tmp_path / "res_overlay").exists()


def test_a_lifter_lifts_the_keypoints_of_a_file(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    kp2d = torch.rand(24, 6, 2, generator=g) * 64
    np.savez(tmp_path / "train.npz", kp2d=kp2d[:16].numpy())
    np.savez(tmp_path / "new.npz", kp2d=kp2d[16:].numpy())
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--method",
                "c3dpo",
                "--data",
                str(tmp_path / "train.npz"),
                "--out",
                str(run),
                "--steps",
                "1",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    out = tmp_path / "lifted.npz"
    assert (
        main(["infer", "--run", str(run), "--input", str(tmp_path / "new.npz"), "--out", str(out)])
        == 0
    )
    z = np.load(out)
    assert z["names"].tolist() == [f"{i:06d}" for i in range(8)]
    assert z["kp3d"].shape == (8, 6, 3) and "image_size" not in z.files
    # A lifter keeps the input x, y: the keypoints' own frame, not rescaled.
    np.testing.assert_allclose(z["kp3d"][..., :2], kp2d[16:].numpy(), rtol=1e-5, atol=1e-4)
    assert z["shape_basis"].ndim == 3  # the learned artifacts come along
