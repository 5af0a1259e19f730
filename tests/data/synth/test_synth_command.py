import json
from pathlib import Path

import pytest
import torch

from kp3d import cli
from kp3d.commands import synth as command
from kp3d.data.adapters import open_dataset
from kp3d.data.synth import APPEARANCES, generate


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
        (
            ["synth", "creature", "--n", "2", "--appearance", "shifted"],
            "appearance applies to the face category only; creature has a single appearance",
        ),
        (["synth", "head", "--n", "2", "--appearance", "default"], "head has a single appearance"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli.main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_appearance_round_trip(tmp_path: Path, tiny_sfm) -> None:
    assert command.APPEARANCES == APPEARANCES  # the flag's choices, kept without torch
    out, sfm = tmp_path / "odd", str(tiny_sfm.folder)
    flags = ("--seed", "3", "--sfm-dir", sfm, "--appearance", "shifted")
    assert cli.main(_synth("face", 3, out, *flags)) == 0
    assert json.loads((out / "meta.json").read_text())["options"]["appearance"] == "shifted"
    ref = generate("face", 3, size=32, seed=3, sfm_dir=sfm, appearance="shifted")
    got = list(open_dataset(out))
    assert all(torch.equal(x.kp3d, y.kp3d) for x, y in zip(got, ref))
    assert all((x.image - y.image).abs().max() <= 0.5 / 255 + 1e-6 for x, y in zip(got, ref))
    # Without the flag: the default look, recorded as used.
    default = tmp_path / "usual"
    assert cli.main(_synth("face", 3, default, "--seed", "3", "--sfm-dir", sfm)) == 0
    assert json.loads((default / "meta.json").read_text())["options"]["appearance"] == "default"
    assert not torch.equal(open_dataset(default)[0].image, got[0].image)


def test_unknown_appearance_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_sfm
) -> None:
    argv = _synth("face", 2, tmp_path / "x", "--sfm-dir", str(tiny_sfm.folder))
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--appearance", "shifte"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "error:" in x]
    assert "--appearance: invalid choice: 'shifte'" in line and "did you mean shifted?" in line
    assert "default" in line and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert cli.main(_synth("creature", 1, tmp_path / "x")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "x" / "keep.txt").exists()
