import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kp3d.data.adapters import detect_format, open_dataset
from kp3d.data.adapters.landmark_csv import detect, open, parse_csv
from kp3d.data.schema import collate
from kp3d.errors import ConfigError, DataError

K = 3
HEADER = [""] + [str(i) for i in range(2 * K)]


def _csv(path: Path, rows: list[list[object]], header: list[str] = HEADER) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def ytfaces(tmp_path: Path, image_writer) -> Path:  # type: ignore[no-untyped-def]
    """The ytfaces68 layout with K=3: training/ fully labelled, test/ partly; a.jpg in both."""
    root = tmp_path / "yt"
    image_writer(root / "training" / "a.jpg", 40, 20, (250, 0, 0))
    image_writer(root / "training" / "b.jpg", 30, 30, (0, 250, 0))
    image_writer(root / "test" / "a.jpg", 20, 40, (0, 0, 250))
    image_writer(root / "test" / "c.jpg", 25, 25)
    image_writer(root / "test" / "d.jpg", 25, 25)
    _csv(
        root / "training_landmarks.csv",
        [
            ["a.jpg", "1.00", "2.00", "39.50", "19.00", "20.25", "10.00"],
            ["b.jpg", 0, 0, 30, 30, 15, 15],
        ],
    )
    _csv(root / "test_landmarks.csv", [["a.jpg", 4, 8, 12, 16, -1, 41]])
    return root


def test_detect(ytfaces: Path, tmp_path: Path) -> None:
    assert detect(ytfaces) and detect(ytfaces / "training_landmarks.csv")
    assert detect_format(ytfaces) == "landmark_csv"
    (tmp_path / "lonely_landmarks.csv").write_text("x\n")
    assert not detect(tmp_path / "lonely_landmarks.csv") and not detect(ytfaces / "training")


def test_all_images_unlabelled_for_unsupervised_training(ytfaces: Path) -> None:
    ds = open(ytfaces, size=16)
    assert len(ds) == 5 and ds.names == [
        "test/a.jpg",
        "test/c.jpg",
        "test/d.jpg",
        "training/a.jpg",
        "training/b.jpg",
    ]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch.image.shape == (5, 3, 16, 16) and batch.kp2d is None and batch.vis is None


def test_training_split_scales_x_by_size_over_w_and_y_by_size_over_h(ytfaces: Path) -> None:
    ds = open(ytfaces, size=16, split="training")
    assert ds.names == ["training/a.jpg", "training/b.jpg"] and ds.num_keypoints == K
    s = ds[0]
    expected = torch.tensor([[1.0, 2.0], [39.5, 19.0], [20.25, 10.0]]) * torch.tensor(
        [16 / 40, 16 / 20]
    )
    torch.testing.assert_close(s.kp2d, expected)
    assert s.vis.dtype == torch.bool and s.vis.all()
    torch.testing.assert_close(
        ds[1].kp2d, torch.tensor([[0.0, 0.0], [30.0, 30.0], [15.0, 15.0]]) * 16 / 30
    )


def test_reused_file_names_are_joined_with_their_folder(ytfaces: Path) -> None:
    train, test = open(ytfaces, size=8, split="training"), open(ytfaces, size=8, split="test")
    assert train[0].name == "training/a.jpg" and test[0].name == "test/a.jpg"
    assert train[0].image[0].mean() > 0.9 and test[0].image[2].mean() > 0.9  # red vs blue image
    # test/a.jpg is 20x40; a point slightly outside the image (-1, 41) is kept as it is.
    torch.testing.assert_close(
        test[0].kp2d,
        torch.tensor(
            [[4 * 8 / 20, 8 * 8 / 40], [12 * 8 / 20, 16 * 8 / 40], [-1 * 8 / 20, 41 * 8 / 40]]
        ),
    )


def test_without_size_coordinates_stay_in_pixels(ytfaces: Path) -> None:
    s = open(ytfaces, split="training")[0]
    assert s.image.shape == (3, 20, 40)
    torch.testing.assert_close(s.kp2d[1], torch.tensor([39.5, 19.0]))


def test_unknown_split_lists_the_valid_ones(ytfaces: Path) -> None:
    with pytest.raises(ConfigError, match="valid splits: test, training"):
        open(ytfaces, split="val")


def test_open_dataset_detects_and_rejects_unknown_options(ytfaces: Path) -> None:
    assert len(open_dataset(ytfaces, split="test")) == 1
    with pytest.raises(ConfigError, match="no option 'crop'.*valid options"):
        open_dataset(ytfaces, crop="bbox")


@pytest.mark.parametrize(
    "row, message",
    [
        (["b.jpg", 1, 2, 3, 4, 5], r"training_landmarks.csv, line 3: 6 columns, expected 7"),
        (["b.jpg", 1, 2, 3, 4, 5, 6, 7], r"line 3: 8 columns, expected 7"),
        (["b.jpg", 1, 2, "x", 4, 5, 6], r"line 3: b.jpg: value 3 is 'x', not a number"),
        (["b.jpg", 1, 2, "nan", 4, 5, 6], r"line 3: b.jpg: landmark 1 has only one coordinate"),
        (["b.jpg", 1, 2, "inf", 4, 5, 6], r"line 3: b.jpg: landmark 1 has an infinite x"),
        (["missing.jpg", 1, 2, 3, 4, 5, 6], r"line 3: image .*missing.jpg does not exist"),
        (["a.jpg", 1, 2, 3, 4, 5, 6], r"line 3: a.jpg is listed twice \(first on line 2\)"),
        (["", 1, 2, 3, 4, 5, 6], r"line 3: empty file name"),
        (
            ["b.jpg", 1, 2, 3, 4, 500, 6],
            r"line 3: keypoint 2 at \(500, 6\) is far outside the 30x30 image",
        ),
    ],
)
def test_bad_rows_are_errors_naming_file_and_line(
    ytfaces: Path, row: list[object], message: str
) -> None:
    _csv(ytfaces / "training_landmarks.csv", [["a.jpg", 1, 2, 3, 4, 5, 6], row])
    with pytest.raises(DataError, match=message):
        open(ytfaces, split="training")


def test_missing_landmarks_are_hidden_and_unlabelled_rows_left_out(
    ytfaces: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _csv(
        ytfaces / "training_landmarks.csv",
        [["a.jpg", 1, 2, "", "", 5, 6], ["b.jpg", "nan", "nan", "", "", "", ""]],
    )
    with caplog.at_level(logging.WARNING, logger="kp3d.data"):
        ds = open(ytfaces, split="training", cache=False)
    assert ds.names == ["training/a.jpg"]
    assert ds[0].vis.tolist() == [True, False, True] and ds[0].kp2d.isfinite().all()
    assert any("1 of 2 rows have no landmarks" in r.getMessage() for r in caplog.records)


def test_a_bad_csv_blocks_the_unlabelled_view_too_with_a_hint(ytfaces: Path) -> None:
    _csv(ytfaces / "test_landmarks.csv", [["a.jpg", 1]])
    with pytest.raises(DataError, match="test_landmarks.csv, line 2.*format='image_folder'"):
        open(ytfaces)
    assert len(open_dataset(ytfaces, format="image_folder")) == 5


def test_bad_header(ytfaces: Path) -> None:
    _csv(ytfaces / "test_landmarks.csv", [], header=["", "0", "1", "2"])
    with pytest.raises(DataError, match=r"test_landmarks.csv, line 1: header has 4 columns"):
        open(ytfaces, split="test")


def test_unreadable_image_is_skipped_with_a_warning(
    ytfaces: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (ytfaces / "training" / "b.jpg").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="kp3d.data"):
        ds = open(ytfaces, size=8, split="training")
    assert ds.names == ["training/a.jpg"]
    assert any("b.jpg: not an image" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="strict"):
        open(ytfaces, size=8, split="training", strict=True)


_cell = st.one_of(
    st.text(alphabet='0123456789.-eE naNif,"x', max_size=6),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-100, 100).map(str),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(_cell, min_size=0, max_size=9), max_size=4),
    names=st.lists(st.sampled_from(["a.jpg", "b.jpg", "zz.jpg", ""]), min_size=4, max_size=4),
)
def test_generated_malformed_rows_give_data_errors_only(
    ytfaces: Path, rows: list[list[str]], names: list[str]
) -> None:
    _csv(ytfaces / "training_landmarks.csv", [[n, *r] for n, r in zip(names, rows)])
    entries, problems = parse_csv(ytfaces / "training_landmarks.csv", ytfaces / "training")
    for p in problems:
        assert "training_landmarks.csv" in str(p) and p.line is not None
    for e in entries:
        assert e.kp2d.shape == (K, 2) and np.isfinite(e.kp2d).all()
    try:
        ds = open(ytfaces, split="training", cache=False)
    except DataError as e:
        assert "training_landmarks.csv" in str(e)
    else:
        assert not problems and len(ds) == len(entries)
