from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kp3d import cli


def _image(path: Path, w: int = 12, h: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    for split in ("training", "test"):
        _image(root / split / "a.jpg")
        _image(root / split / "b.jpg")
    (root / "training_landmarks.csv").write_text(",0,1,2,3\na.jpg,1,2,3,4\nb.jpg,5,6,7,8\n")
    (root / "test_landmarks.csv").write_text(",0,1,2,3\na.jpg,1,2,3,4\n")
    return root


def test_info_on_a_clean_dataset(faces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["data", "info", str(faces)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "landmark_csv",
        "samples    4",
        "images     4",
        "labelled   3",
        "keypoints  2",
        "test: 1, training: 2",
        "none",
    ):
        assert expected in out


def test_info_lists_problems_and_exits_1(faces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (faces / "test" / "b.jpg").write_bytes(b"")
    (faces / "training_landmarks.csv").write_text(",0,1,2,3\na.jpg,1,2,3\nb.jpg,5,6,7,8\n")
    assert cli.main(["data", "info", str(faces)]) == 1
    out = capsys.readouterr().out
    assert "training_landmarks.csv, line 2: 4 columns, expected 5" in out
    assert "b.jpg: empty file (0 bytes)" in out and "1 unreadable images" in out


def test_header_check_misses_truncation_decode_finds_it(
    faces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(faces / "test" / "b.jpg")
    data = (faces / "test" / "b.jpg").read_bytes()
    (faces / "test" / "b.jpg").write_bytes(data[: len(data) // 2])  # headers intact, scan cut
    assert cli.main(["data", "info", str(faces), "--check", "header"]) == 0
    assert cli.main(["data", "info", str(faces)]) == 1
    assert "corrupt or truncated" in capsys.readouterr().out


def test_split_format_and_options(faces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["data", "info", str(faces), "--split", "training", "--check", "none"]) == 0
    assert "samples    2 (split training)" in capsys.readouterr().out
    assert cli.main(["data", "info", str(faces), "--format", "image_folder"]) == 0
    assert "image_folder" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], "nope: no such file or folder"),
        (["{faces}", "-o", "crop=bbox"], "no option 'crop'"),
        (["{faces}", "-o", "split=test"], "use --split"),
        (["{faces}", "--split", "val"], "valid splits: test, training"),
        (["{faces}", "--format", "zzz"], "valid formats"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [
        a.format(faces=faces) if "{" in a else (str(tmp_path / a) if a == "nope" else a)
        for a in argv
    ]
    assert cli.main(["data", "info", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_unrecognised_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.txt").write_text("x")
    assert cli.main(["data", "info", str(tmp_path)]) == 2
    assert "not recognised as any dataset format" in capsys.readouterr().err
