from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kp3d.data.adapters import detect_format
from kp3d.data.adapters.celeba import detect, open, parse_list
from kp3d.errors import ConfigError, DataError

LANDMARK_HEADER = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
    "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
)
# name: (W, H, face box x y w h, landmarks x0 y0 ... x4 y4)
WILD = {
    "000001.jpg": (100, 60, (30, 5, 40, 50), (40, 20, 60, 21, 50, 30, 42, 40, 58, 41)),
    "000002.jpg": (
        80,
        120,
        (10, 10, 20, 20),
        (12, 14, 22, 14, 17, 20, 13, 25, 21, 25),
    ),  # face < 30%
    "000003.jpg": (60, 90, (5, 10, 50, 60), (20, 30, 40, 30, 30, 45, 22, 58, 38, 58)),
    "000004.jpg": (90, 60, (20, 10, 45, 40), (30, 20, 50, 20, 40, 30, 32, 40, 48, 40)),
}


def _list(path: Path, header: str, rows: dict[str, tuple], count: int | None = None) -> None:
    lines = [str(len(rows) if count is None else count), header]
    lines += [f"{name}" + "".join(f" {v:>4}" for v in values) for name, values in rows.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def celeba(tmp_path: Path, image_writer) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "celeba"
    for i, (name, (w, h, _, _)) in enumerate(WILD.items()):
        image_writer(root / "img_celeba" / name, w, h, (40 * i, 0, 0))
    _list(
        root / "Anno" / "list_landmarks_celeba.txt",
        LANDMARK_HEADER,
        {n: v[3] for n, v in WILD.items()},
    )
    _list(
        root / "Anno" / "list_bbox_celeba.txt",
        "image_id x_1 y_1 width height",
        {n: v[2] for n, v in WILD.items()},
    )
    (root / "MAFL").mkdir()
    (root / "MAFL" / "training.txt").write_text("000001.jpg\n000002.jpg\n")
    (root / "MAFL" / "testing.txt").write_text("000004.jpg\n")
    return root


def _expected(name: str, size: int, swap: bool = False) -> torch.Tensor:
    w, h, _, lm = WILD[name]
    xy = torch.tensor(lm, dtype=torch.float32).reshape(5, 2)
    return xy * (torch.tensor([size / h, size / w]) if swap else torch.tensor([size / w, size / h]))


def test_detect(celeba: Path) -> None:
    assert detect(celeba) and detect_format(celeba) == "celeba"
    assert not detect(celeba / "img_celeba")


def test_wild_filter_keeps_faces_covering_30_percent(celeba: Path) -> None:
    ds = open(celeba, split="all", size=16)
    assert ds.names == ["000001.jpg", "000003.jpg", "000004.jpg"]
    assert open(celeba, split="all", size=16, min_face_fraction=0.0).names == sorted(WILD)


def test_whole_image_resize_scales_x_by_w_and_y_by_h(celeba: Path) -> None:
    ds = open(celeba, split="all", size=16)
    for i, name in enumerate(ds.names):
        s = ds[i]
        assert s.image.shape == (3, 16, 16) and s.vis.all()
        torch.testing.assert_close(s.kp2d, _expected(name, 16))
    assert ds.keypoint_names == ["lefteye", "righteye", "nose", "leftmouth", "rightmouth"]


def test_autolink_swap_reproduces_its_preprocessing_on_non_square_images(celeba: Path) -> None:
    # AutoLink reads "name width height" rows into (h, w) and sets row = y*S/h, col = x*S/w.
    _list(
        celeba / "list_imsize_celeba.txt",
        "image_id width height",
        {n: v[:2] for n, v in WILD.items()},
    )
    size = 32
    ds = open(celeba, split="all", size=size, autolink_swap=True)
    for i, name in enumerate(ds.names):
        h_autolink, w_autolink = WILD[name][:2]
        lm = np.array(WILD[name][3], dtype=np.float64).reshape(5, 2)
        row = lm[:, 1] * size / h_autolink
        col = lm[:, 0] * size / w_autolink
        torch.testing.assert_close(ds[i].kp2d, torch.from_numpy(np.stack([col, row], 1)).float())
        torch.testing.assert_close(ds[i].kp2d, _expected(name, size, swap=True))
        assert not torch.allclose(ds[i].kp2d, _expected(name, size))  # non-square: it differs


def test_autolink_swap_needs_a_size(celeba: Path) -> None:
    with pytest.raises(ConfigError, match="needs a size"):
        open(celeba, autolink_swap=True)


def test_mafl_splits(celeba: Path) -> None:
    assert open(celeba, size=8).names == [
        "000001.jpg",
        "000003.jpg",
    ]  # default "train": all - MAFL test
    assert open(celeba, split="mafl_train", size=8).names == ["000001.jpg"]  # 000002 filtered
    assert open(celeba, split="mafl_test", size=8).names == ["000004.jpg"]
    (celeba / "MAFL" / "celebA_training.txt").write_text("000003.jpg\n")
    assert open(celeba, size=8).names == ["000003.jpg"]
    with pytest.raises(ConfigError, match="valid splits: train, mafl_train, mafl_test, all"):
        open(celeba, split="val")


def test_image_sizes_come_from_list_imsize_when_present(celeba: Path) -> None:
    sizes = {n: v[:2] for n, v in WILD.items()}
    sizes["000001.jpg"] = (1000, 1000)  # the face box would then cover 0.2 %
    _list(celeba / "list_imsize_celeba.txt", "image_id width height", sizes)
    assert "000001.jpg" not in open(celeba, split="all", size=8).names


def test_aligned_variant(tmp_path: Path, image_writer) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "aligned"
    image_writer(root / "img_align_celeba" / "000001.jpg", 18, 22)
    _list(
        root / "list_landmarks_align_celeba.txt",
        LANDMARK_HEADER,
        {"000001.jpg": (6, 9, 12, 9, 9, 12, 7, 16, 11, 16)},
    )
    ds = open(root, size=11)
    expected = torch.tensor([6, 9, 12, 9, 9, 12, 7, 16, 11, 16], dtype=torch.float32).reshape(
        5, 2
    ) * torch.tensor([11 / 18, 11 / 22])
    torch.testing.assert_close(ds[0].kp2d, expected)
    with pytest.raises(DataError, match="variant 'wild' needs img_celeba"):
        open(root, variant="wild")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda rows: rows.update({"000003.jpg": (1, 2, 3)}),
            r"list_landmarks_celeba.txt, line 5: 4 fields, expected 11",
        ),
        (
            lambda rows: rows.update({"000003.jpg": (1, 2, 3, 4, 5, 6, 7, 8, 9, "?")}),
            r"line 5: 000003.jpg: value 10 is '\?'",
        ),
        (
            lambda rows: rows.update({"000003.jpg": (1, 2, 3, 4, 5, 6, 7, 8, 9, "nan")}),
            r"line 5: 000003.jpg: non-finite",
        ),
        (
            lambda rows: rows.update({"000003.jpg": (1, 2, 3, 4, 5, 6, 7, 8, 9, 900)}),
            r"line 5.*keypoint 4 at \(9, 900\) is far outside the 60x90",
        ),
    ],
)
def test_bad_landmark_rows_name_file_and_line(celeba: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    rows = {n: v[3] for n, v in WILD.items()}
    edit(rows)
    _list(celeba / "Anno" / "list_landmarks_celeba.txt", LANDMARK_HEADER, rows)
    with pytest.raises(DataError, match=message):
        open(celeba, split="all")


def test_count_line_and_missing_images(celeba: Path) -> None:
    _list(
        celeba / "Anno" / "list_landmarks_celeba.txt",
        LANDMARK_HEADER,
        {n: v[3] for n, v in WILD.items()},
        count=5,
    )
    with pytest.raises(
        DataError, match=r"list_landmarks_celeba.txt, line 1: says 5 rows, but the file has 4"
    ):
        open(celeba, split="all")
    _list(
        celeba / "Anno" / "list_landmarks_celeba.txt",
        LANDMARK_HEADER,
        {n: v[3] for n, v in WILD.items()},
    )
    (celeba / "img_celeba" / "000003.jpg").unlink()
    with pytest.raises(DataError, match=r"line 5: image .*000003.jpg does not exist"):
        open(celeba, split="all", min_face_fraction=0.0)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.text(alphabet="0123456789 .-abcjpgn\t", max_size=40), max_size=6))
def test_generated_lists_never_crash_the_parser(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines))
    _, rows, problems = parse_list(path, 4)
    for p in problems:
        assert str(p).startswith(str(path))
    for values, line in rows.values():
        assert values.shape == (4,) and np.isfinite(values).all() and line >= 3
