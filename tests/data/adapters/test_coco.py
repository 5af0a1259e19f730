import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kp3d.data.adapters import detect_format, info
from kp3d.data.adapters.coco import detect, open, parse
from kp3d.errors import ConfigError, DataError

KP_NAMES = ["nose", "left_eye", "right_eye"]


def _annotation(
    ann_id: int, image_id: int, bbox: list[float], keypoints: list[float], iscrowd: int = 0
) -> dict[str, Any]:
    """A person annotation; ``num_keypoints`` counts the labelled (v > 0) ones, as COCO does."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": iscrowd,
        "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0),
        "bbox": bbox,
        "keypoints": keypoints,
    }


def _coco() -> dict[str, Any]:
    return {
        "info": {"description": "fixture"},
        "images": [
            {"id": 7, "file_name": "000000000007.jpg", "width": 40, "height": 20},
            {"id": 9, "file_name": "000000000009.jpg", "width": 30, "height": 30},
        ],
        "annotations": [
            _annotation(100, 7, [4.0, 2.0, 10.0, 16.0], [5, 6, 2, 10, 4, 1, 0, 0, 0]),
            _annotation(101, 7, [20.0, 0.0, 16.0, 8.0], [22, 3, 2, 30, 4, 2, 34, 7.5, 2]),
            _annotation(102, 9, [0.0, 0.0, 30.0, 30.0], [15, 15, 2, 0, 0, 0, 0, 0, 0]),
            _annotation(103, 9, [0, 0, 5, 5], [0, 0, 0, 0, 0, 0, 0, 0, 0], iscrowd=1),
        ],
        "categories": [
            {
                "id": 1,
                "name": "person",
                "supercategory": "person",
                "keypoints": KP_NAMES,
                "skeleton": [[1, 2], [1, 3]],
            }
        ],
    }


@pytest.fixture
def coco(tmp_path: Path, image_writer) -> Path:  # type: ignore[no-untyped-def]
    """COCO's own layout: annotations/person_keypoints_val2017.json and val2017/."""
    root = tmp_path / "coco"
    image_writer(root / "val2017" / "000000000007.jpg", 40, 20, (200, 0, 0))
    image_writer(root / "val2017" / "000000000009.jpg", 30, 30, (0, 200, 0))
    (root / "annotations").mkdir()
    _save(root, _coco())
    return root


def _save(root: Path, data: dict[str, Any]) -> Path:
    path = root / "annotations" / "person_keypoints_val2017.json"
    path.write_text(json.dumps(data))
    return path


def test_detect(coco: Path) -> None:
    assert detect(coco) and detect(coco / "annotations" / "person_keypoints_val2017.json")
    assert detect_format(coco) == "coco"
    (coco / "other.json").write_text('{"images": [], "annotations": [], "categories": []}')
    assert not detect(coco / "other.json")


def test_one_sample_per_instance_whole_image(coco: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kp3d.data"):
        ds = open(coco, size=10)
    assert "several instances" in caplog.text
    assert ds.names == ["000000000007.jpg#100", "000000000007.jpg#101", "000000000009.jpg"]
    assert ds.keypoint_names == KP_NAMES
    s = ds[0]
    # v=2 and v=1 are labelled (vis True); v=0 is absent with coordinates 0.
    assert s.vis.tolist() == [True, True, False]
    torch.testing.assert_close(
        s.kp2d, torch.tensor([[5 * 10 / 40, 6 * 10 / 20], [10 * 10 / 40, 4 * 10 / 20], [0.0, 0.0]])
    )
    torch.testing.assert_close(ds[2].kp2d[0], torch.tensor([5.0, 5.0]))
    assert s.image[0].mean() > 0.7


def test_bbox_crop(coco: Path) -> None:
    ds = open(coco, size=8, crop="bbox")
    # annotation 101: box x=20 y=0 w=16 h=8 -> square side 16 centred (28, 4): x0=20, y0=-4
    s = ds[1]
    expected = (
        (torch.tensor([[22.0, 3.0], [30.0, 4.0], [34.0, 7.5]]) - torch.tensor([20.0, -4.0]))
        * 8
        / 16
    )
    torch.testing.assert_close(s.kp2d, expected)
    assert s.vis.all()


def test_min_keypoints_and_split_and_category(coco: Path) -> None:
    assert len(open(coco, min_keypoints=2)) == 2
    assert len(open(coco, split="val2017")) == 3
    with pytest.raises(ConfigError, match="valid splits: val2017"):
        open(coco, split="train2017")
    data = _coco()
    data["categories"].append({"id": 2, "name": "dog", "keypoints": ["a", "b"]})
    data["annotations"].append(
        {
            "id": 200,
            "image_id": 9,
            "category_id": 2,
            "keypoints": [1, 1, 2, 2, 2, 2],
            "bbox": [0, 0, 3, 3],
        }
    )
    _save(coco, data)
    with pytest.raises(
        ConfigError, match=r"several keypoint categories.*person \(id 1\), dog \(id 2\)"
    ):
        open(coco)
    ds = open(coco, category="dog")
    assert ds.names == ["000000000009.jpg"] and ds.num_keypoints == 2


def test_images_folder_option(tmp_path: Path, coco: Path) -> None:
    moved = tmp_path / "elsewhere"
    (coco / "val2017").rename(moved)
    with pytest.raises(DataError, match="cannot find the image '000000000007.jpg'.*pass images="):
        open(coco)
    assert len(open(coco, images=moved)) == 3


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["annotations"][1].update(keypoints=[1, 2, 2]),
            r"annotations\[1\] \(id 101\): 'keypoints' has 3 values, expected 9",
        ),
        (
            lambda d: d["annotations"][1].update(keypoints=[1, 2, 3] * 3),
            r"annotations\[1\] \(id 101\): visibility flags must be 0, 1 or 2, got \[3.0\]",
        ),
        (
            lambda d: d["annotations"][1].update(keypoints=[1, "a", 2] * 3),
            r"annotations\[1\] \(id 101\): 'keypoints' holds values that are not numbers",
        ),
        (
            lambda d: d["annotations"][1].update(image_id=55),
            r"annotations\[1\] \(id 101\): unknown image_id 55",
        ),
        (
            lambda d: d["images"][1].update(file_name="gone.jpg"),
            r"annotations\[2\] \(id 102\): image .*gone.jpg does not exist",
        ),
        (
            lambda d: d["annotations"][1].update(keypoints=[400, 2, 2] * 3),
            r"keypoint 0 at \(400, 2\) is far outside the 40x20 image",
        ),
        (
            lambda d: d.pop("categories"),
            "expected an object with lists 'images', 'annotations', 'categories'",
        ),
    ],
)
def test_bad_annotations_name_file_and_annotation(coco: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _coco()
    edit(data)
    _save(coco, data)
    with pytest.raises(DataError, match=message):
        open(coco / "annotations" / "person_keypoints_val2017.json", size=8)


def test_nan_keypoint_is_an_error(coco: Path) -> None:
    path = coco / "annotations" / "person_keypoints_val2017.json"
    path.write_text(path.read_text().replace("[22, 3, 2,", "[NaN, 3, 2,"))
    with pytest.raises(
        DataError, match=r"id 101\): a labelled keypoint has non-finite coordinates"
    ):
        open(coco)


def test_invalid_json_names_the_line(coco: Path) -> None:
    path = coco / "annotations" / "person_keypoints_val2017.json"
    path.write_text('{"images": [],\n "annotations": [,\n "categories": [{"keypoints": [1]}]}')
    with pytest.raises(DataError, match=r"person_keypoints_val2017.json, line 2: not valid JSON"):
        open(path)


def test_info(coco: Path) -> None:
    r = info(coco)
    assert (r.format, r.samples, r.images, r.labelled, r.keypoints) == ("coco", 3, 2, 3, 3)
    assert r.problems == [] and any("several instances" in n for n in r.notes)


_value = st.one_of(
    st.integers(-5, 50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=2),
    st.none(),
    st.booleans(),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keypoints=st.one_of(st.lists(_value, max_size=12), _value),
    image_id=st.sampled_from([7, 9, 11, "7", None]),
    bbox=st.one_of(st.lists(_value, max_size=5), _value),
)
def test_generated_annotations_give_data_errors_only(
    coco: Path, keypoints: Any, image_id: Any, bbox: Any
) -> None:
    data = _coco()
    data["annotations"] = [
        {"id": 1, "image_id": image_id, "category_id": 1, "keypoints": keypoints, "bbox": bbox}
    ]
    path = _save(coco, data)
    entries, problems, _, _ = parse(path, crop="bbox")
    for p in problems:
        assert "person_keypoints_val2017.json" in str(p)
    try:
        ds = open(coco, crop="bbox", cache=False)
    except DataError as e:
        assert "person_keypoints_val2017.json" in str(e)
    else:
        assert len(ds) == len(entries) == 1 and not problems
