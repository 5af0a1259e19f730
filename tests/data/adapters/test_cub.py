from pathlib import Path

import numpy as np
import pytest
import torch

from kp3d.data.adapters import detect_format, info
from kp3d.data.adapters.cub import detect, open
from kp3d.data.schema import collate
from kp3d.errors import ConfigError, DataError

PARTS = [
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
]
# image id: (relative path, W, H, class id, is_train, bbox x y w h)
IMAGES = {
    1: (
        "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
        50,
        40,
        1,
        1,
        (10.0, 5.0, 30.0, 20.0),
    ),
    2: (
        "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
        40,
        60,
        2,
        0,
        (4.0, 10.0, 20.0, 40.0),
    ),
}


def _locs(image_id: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(image_id)
    _, w, h, *_ = IMAGES[image_id]
    xy = np.stack([rng.integers(1, w, 15), rng.integers(1, h, 15)], 1).astype(np.float64)
    vis = rng.random(15) > 0.3
    return np.where(vis[:, None], xy, 0.0), vis


def _write(root: Path, image_writer, part_locs: list[str] | None = None) -> None:  # type: ignore[no-untyped-def]
    lines = {
        "images.txt": [],
        "train_test_split.txt": [],
        "bounding_boxes.txt": [],
        "image_class_labels.txt": [],
    }
    locs = []
    for i, (rel, w, h, cls, train, box) in IMAGES.items():
        image_writer(root / "images" / rel, w, h, (100 * i, 0, 0))
        lines["images.txt"].append(f"{i} {rel}")
        lines["train_test_split.txt"].append(f"{i} {train}")
        lines["bounding_boxes.txt"].append(f"{i} " + " ".join(f"{v:.1f}" for v in box))
        lines["image_class_labels.txt"].append(f"{i} {cls}")
        xy, vis = _locs(i)
        locs += [f"{i} {k + 1} {xy[k, 0]:.1f} {xy[k, 1]:.1f} {int(vis[k])}" for k in range(15)]
    for name, content in lines.items():
        (root / name).write_text("\n".join(content) + "\n")
    (root / "parts").mkdir(exist_ok=True)
    (root / "parts" / "parts.txt").write_text(
        "".join(f"{k + 1} {n}\n" for k, n in enumerate(PARTS))
    )
    (root / "parts" / "part_locs.txt").write_text(
        "\n".join(part_locs if part_locs is not None else locs) + "\n"
    )


@pytest.fixture
def cub(tmp_path: Path, image_writer) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "CUB_200_2011"
    _write(root, image_writer)
    return root


def test_detect_the_folder_or_its_parent(cub: Path) -> None:
    assert detect(cub) and detect(cub.parent) and detect_format(cub.parent) == "cub"
    assert not detect(cub / "images")


def test_whole_image_keypoints_visibility_and_category(cub: Path) -> None:
    ds = open(cub, size=20)
    assert ds.names == [IMAGES[1][0], IMAGES[2][0]] and ds.keypoint_names == PARTS
    for n, i in enumerate((1, 2)):
        xy, vis = _locs(i)
        _, w, h, cls, *_ = IMAGES[i]
        s = ds[n]
        assert s.vis.tolist() == vis.tolist() and int(s.category) == cls - 1
        torch.testing.assert_close(s.kp2d, torch.from_numpy(xy * [20 / w, 20 / h]).float())
        assert (s.kp2d[~s.vis] == 0).all()
    assert collate([ds[0], ds[1]]).category.tolist() == [0, 1]


def test_splits(cub: Path) -> None:
    assert open(cub, split="train").names == [IMAGES[1][0]]
    assert open(cub, split="test").names == [IMAGES[2][0]]
    with pytest.raises(ConfigError, match="valid splits: train, test"):
        open(cub, split="val")


def test_bbox_crop_is_a_square_around_the_box(cub: Path) -> None:
    ds = open(cub, size=16, crop="bbox")
    # image 1: box x=10 y=5 w=30 h=20 -> square side 30 centred at (25, 15): x0=10, y0=0
    xy, vis = _locs(1)
    expected = (xy - [10.0, 0.0]) * 16 / 30
    inside = vis & (expected >= 0).all(1) & (expected <= 16).all(1)
    s = ds[0]
    assert s.vis.tolist() == inside.tolist()
    torch.testing.assert_close(s.kp2d[s.vis], torch.from_numpy(expected[inside]).float())
    # image 2: box x=4 y=10 w=20 h=40 -> side 40 centred at (14, 30): x0=-6, outside = background
    img = ds[1].image
    assert img.shape == (3, 16, 16) and img[:, :, 0].min() == 1.0  # white left border
    assert ds[1].image[0, 8, 8] > 0.7  # the red image itself in the middle


@pytest.mark.parametrize(
    "bad, message",
    [
        ("1 1 3.0 4.0", r"part_locs.txt, line 1: 4 fields, expected 5"),
        ("1 1 3.0 4.0 2", r"part_locs.txt, line 1: visible is 2, expected 0 or 1"),
        ("1 1 x 4.0 1", r"part_locs.txt, line 1: .* does not match the columns"),
        ("1 1 nan 4.0 1", r"part_locs.txt, line 1: visible part 1 has non-finite coordinates"),
        ("9 1 3.0 4.0 1", r"part_locs.txt, line 1: unknown image id 9"),
        ("1 1 900.0 4.0 1", r"keypoint 0 at \(900, 4\) is far outside the 50x40 image"),
    ],
)
def test_bad_part_rows_name_file_and_line(
    tmp_path: Path, image_writer, bad: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "CUB_200_2011"
    _write(root, image_writer)
    lines = (root / "parts" / "part_locs.txt").read_text().splitlines()
    (root / "parts" / "part_locs.txt").write_text("\n".join([bad, *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=message):
        open(root)


def test_missing_parts_and_files(cub: Path) -> None:
    lines = (cub / "parts" / "part_locs.txt").read_text().splitlines()
    (cub / "parts" / "part_locs.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="1 images lack some of the 15 parts"):
        open(cub)
    (cub / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match="train_test_split.txt: missing"):
        open(cub)


def test_missing_image_file(cub: Path) -> None:
    (cub / "images" / IMAGES[2][0]).unlink()
    with pytest.raises(
        DataError,
        match=r"images.txt, line 2: image .*Laysan_Albatross_0002_1027.jpg does not exist",
    ):
        open(cub)


def test_info(cub: Path) -> None:
    r = info(cub)
    assert (r.format, r.samples, r.images, r.labelled, r.keypoints) == ("cub", 2, 2, 2, 15)
    assert r.splits == {"train": 1, "test": 1} and r.problems == []
