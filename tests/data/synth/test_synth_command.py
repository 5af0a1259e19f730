import json
from pathlib import Path

import pytest
import torch

from kp3d import cli
from kp3d.data.adapters import open_dataset
from kp3d.data.synth import generate


def _synth(category: str, n: int, out: Path, *flags: str) -> list[str]:
    """The arguments of ``kp3d synth CATEGORY --n N --size 32 FLAGS --out OUT``."""
    return ["synth", category, "--n", str(n), "--size", "32", *flags, "--out", str(out)]


def test_synth_writes_a_readable_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert cli.main(_synth("creature", 3, out, "--seed", "2")) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n"] == 3 and meta["seed"] == 2 and meta["size"] == 32
    assert "wrote 3 creature" in capsys.readouterr().err


def test_head_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "head"
    assert cli.main(_synth("head", 3, out, "--seed", "4")) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["category"] == "head" and len(meta["keypoint_names"]) == 20
    ref = generate("head", 3, size=32, seed=4)
    got = list(open_dataset(out))
    assert all(torch.equal(x.kp3d, y.kp3d) and torch.equal(x.vis, y.vis) for x, y in zip(got, ref))


def test_articulation_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "wild"
    assert cli.main(_synth("creature", 4, out, "--seed", "1", "--articulation", "0.6")) == 0
    assert json.loads((out / "meta.json").read_text())["options"]["articulation"] == 0.6
    ref = generate("creature", 4, size=32, seed=1, articulation=0.6)
    assert all(torch.equal(x.kp3d, y.kp3d) for x, y in zip(open_dataset(out), ref))


def test_azimuth_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "front"
    assert cli.main(_synth("quadruped", 3, out, "--seed", "1", "--azimuth", "-90", "90")) == 0
    assert json.loads((out / "meta.json").read_text())["options"]["azimuth"] == [-90.0, 90.0]
    ref = generate("quadruped", 3, size=32, seed=1, azimuth=(-90, 90))
    assert all(torch.equal(x.kp3d, y.kp3d) for x, y in zip(open_dataset(out), ref))
    default = tmp_path / "around"
    assert cli.main(_synth("quadruped", 1, default)) == 0
    assert json.loads((default / "meta.json").read_text())["options"]["azimuth"] == [0.0, 360.0]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["synth", "face", "--n", "2"], "--sfm-dir"),
        (["synth", "creature", "--n", "2", "--size", "300"], "32..256"),
        (["synth", "creature", "--n", "2", "--views", "3", "--pairs"], "views must be 1 or 2"),
        (["synth", "creature", "--n", "2", "--workers", "0"], "workers"),
        (
            ["synth", "creature", "--n", "2", "--articulation", "1.5"],
            "articulation must be in [0, 1]",
        ),
        (["synth", "face", "--n", "2", "--articulation", "0.5"], "face has no joints"),
        (["synth", "head", "--n", "2", "--articulation", "0.5"], "head has no joints"),
        (["synth", "creature", "--n", "2", "--azimuth", "90", "-90"], "azimuth must be (lo, hi)"),
        (
            ["synth", "face", "--n", "2", "--azimuth", "-90", "90"],
            "face draws its own head rotation",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli.main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert cli.main(_synth("creature", 1, tmp_path / "x")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "x" / "keep.txt").exists()
