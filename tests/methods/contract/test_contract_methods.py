"""The method contract's done-criterion: a multi-view method and a dense-depth method, defined
only here, go train -> evaluate -> infer -> report through the CLI; nothing in kp3d.commands or
kp3d.engine names them or their kind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import kp3d.methods
from kp3d.cli import main

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setitem(kp3d.methods.REGISTRY, "mv-test", "contract_methods:SPEC_MULTIVIEW")
    monkeypatch.setitem(kp3d.methods.REGISTRY, "depth-test", "contract_methods:SPEC_DEPTH")


def _synth(out: Path, n: int, seed: int, *flags: str) -> Path:
    synth = ["synth", "creature", "--n", str(n), "--size", "32", "--seed", str(seed)]
    assert main([*synth, "--out", str(out), *flags]) == 0
    return out


def _train(method: str, data: Path, out: Path) -> Path:
    options = ["--steps", "3", "--log-every", "1"]
    assert (
        main(["train", "--method", method, "--data", str(data), "--out", str(out), *options]) == 0
    )
    return out


def _report(run: Path, data: Path) -> str:
    out = run / "report.html"
    assert (
        main(
            ["report", "--run", str(run), "--data", str(data), "--out", str(out), "--samples", "2"]
        )
        == 0
    )
    return out.read_text()


def test_a_multiview_method_goes_through_every_command(registered: None, tmp_path: Path) -> None:
    train = _synth(tmp_path / "train", 6, 0, "--views", "2")
    test = _synth(tmp_path / "test", 4, 1, "--views", "2")
    run = _train("mv-test", train, tmp_path / "run")

    evaluate = ["evaluate", "--run", str(run), "--data", str(test), "--fit", str(train)]
    assert main([*evaluate, "--probe", "linear"]) == 0
    doc = json.loads((run / "eval.json").read_text())
    assert list(doc["results"]) == ["multiview_3d", "pose_probe"] and doc["skipped"] == {}
    probe = doc["results"]["pose_probe"]
    assert probe["frame"] == "world" and set(probe["probe"]) == {"linear"}
    assert np.isfinite(probe["probe"]["linear"]["100%"]["p_mpjpe"])
    r = doc["results"]["multiview_3d"]
    assert r["counts"] == {"fit": 6, "test": 4, "keypoints": 4, "landmarks": 16}
    assert np.isfinite(r["nme3d"]["value"]) and r["nme3d"]["value"] > 0

    out = tmp_path / "mv.npz"
    assert main(["infer", "--run", str(run), "--input", str(test), "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["names"].tolist() == ["000000", "000001", "000002", "000003"]
        assert z["kp3d"].shape == (4, 4, 3) and z["kp2d"].shape == (4, 2, 4, 2)
        assert "image_size" not in z.files  # dataset inputs keep the frame of the data

    page = _report(run, test)
    assert page.count("data:image/png;base64,") == 4  # both views of each sample
    assert 'kp3dViewer(document.getElementById("s1")' in page


def test_a_dense_depth_method_goes_through_every_command(registered: None, tmp_path: Path) -> None:
    train = _synth(tmp_path / "train", 8, 0)
    test = _synth(tmp_path / "test", 4, 1)
    run = _train("depth-test", train, tmp_path / "run")

    assert main(["evaluate", "--run", str(run), "--data", str(test), "--fit", str(train)]) == 0
    doc = json.loads((run / "eval.json").read_text())
    assert list(doc["results"]) == ["surface_depth"]
    r = doc["results"]["surface_depth"]
    assert r["counts"] == {"fit": 8, "test": 4, "scored": 4}
    for key in ("side", "mad_deg", "side_null_baseline", "side_average_baseline"):
        assert np.isfinite(r[key]["value"]) and r[key]["value"] >= 0

    out = tmp_path / "depth.npz"
    assert (
        main(
            [
                "infer",
                "--run",
                str(run),
                "--input",
                str(test / "images"),
                "--out",
                str(out),
                "--overlay",
                str(tmp_path / "overlays"),
            ]
        )
        == 0
    )
    with np.load(out) as z:
        assert z["depth"].shape == (4, 1, 32, 32) and (z["depth"] > 0).all()
        assert z["image_size"].tolist() == [[32, 32]] * 4
    assert not (tmp_path / "overlays").exists()  # no keypoints to draw

    page = _report(run, test)
    assert page.count("data:image/png;base64,") == 4  # each sample's image and its depth


def test_commands_and_engine_never_name_a_method_or_ask_its_kind() -> None:
    found = subprocess.run(
        [
            "git",
            "grep",
            "-n",
            "-e",
            "spec.data",
            "-e",
            "mv-test",
            "-e",
            "depth-test",
            "--",
            "src/kp3d/commands",
            "src/kp3d/engine",
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
    )
    if found.returncode not in (0, 1):
        pytest.skip("not a git checkout")
    assert found.stdout == ""
