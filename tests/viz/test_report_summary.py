from typing import Any

import pytest

from kp3d.viz.report import (
    FLAT_TRACKS,
    FOLLOWS_NOTHING,
    ONE_POSE_DEG,
    SAME_DEPTH,
    _evaluation_section,
    recovery_summary,
)


def results(**values: float) -> dict[str, Any]:
    """An evaluation ``results`` object with one keypoint-discovery group."""
    group: dict[str, Any] = {"counts": {"fit": 10, "test": 5}}
    group.update({k: {"value": v, "protocol": "p"} for k, v in values.items()})
    return {"keypoint_discovery": group, "artifacts": {"mutual_coherence": {"value": 0.1}}}


def test_flat_keypoints_and_a_depth_that_adds_nothing() -> None:
    # The creature demo's failure: tracks far below the ground truth's, depth = mean depth.
    out = recovery_summary(
        results(
            tracks_sv3=0.007,
            tracks_sv3_gt=0.36,
            nme3d=0.2846,
            nme3d_depth=0.2846,
            nme3d_flat_baseline=0.2865,
            rotation_spread_deg=0.35,
        )
    )
    text = " ".join(out)
    assert "move as one flat template" in text and f"{0.007 / 0.36:.2f}" in text
    assert "adds nothing over the mean depth" in text
    assert "28.46%" in text and "28.65%" in text
    assert "nearly the same rotation" in text


def test_keypoints_with_depth_that_beats_the_mean_depth() -> None:
    out = recovery_summary(
        results(
            tracks_sv3=0.3,
            tracks_sv3_gt=0.4,
            nme3d=0.06,
            nme3d_depth=0.06,
            nme3d_flat_baseline=0.1,
            rotation_spread_deg=25.0,
        )
    )
    text = " ".join(out)
    assert "needs a third dimension: 0.75 of the ground truth's" in text
    assert "40% less 3D error than the mean depth" in text
    assert "0.60 times the mean-depth baseline" in text
    assert "turns with the images" in text


@pytest.mark.parametrize(
    "ratio,word",
    [(1 + 2 * SAME_DEPTH, "worse"), (1.0, "adds nothing"), (1 - 2 * SAME_DEPTH, "recovers")],
)
def test_depth_sentence_follows_the_ratio(ratio: float, word: str) -> None:
    (sentence,) = recovery_summary(results(nme3d_depth=0.1 * ratio, nme3d_flat_baseline=0.1))
    assert word in sentence


def test_thresholds_separate_the_cases() -> None:
    below = recovery_summary(results(tracks_sv3=0.99 * FLAT_TRACKS, tracks_sv3_gt=1.0))
    above = recovery_summary(results(tracks_sv3=1.01 * FLAT_TRACKS, tracks_sv3_gt=1.0))
    assert "flat template" in below[0] and "needs a third dimension" in above[0]
    still = recovery_summary(results(rotation_spread_deg=0.99 * ONE_POSE_DEG))
    turns = recovery_summary(results(rotation_spread_deg=1.01 * ONE_POSE_DEG))
    assert "same rotation" in still[0] and "turns" in turns[0]


@pytest.mark.parametrize("name", ["nme", "nme5", "nme68"])
def test_keypoints_that_follow_nothing_silence_the_3d_sentences(name: str) -> None:
    # An untrained run: 3D numbers that would read as a success are noise there.
    three_d = {"tracks_sv3": 0.3, "tracks_sv3_gt": 0.4, "nme3d_depth": 0.06}
    three_d |= {"nme3d_flat_baseline": 0.1, "rotation_spread_deg": 25.0}
    layout = f"{name}_mean_layout_baseline"
    above, below = FOLLOWS_NOTHING + 0.01, FOLLOWS_NOTHING - 0.01
    (untrained,) = recovery_summary(results(**{name: above, layout: 1.0}, **three_d))
    assert "do not follow the object yet" in untrained and f"{above:.2%}" in untrained
    trained = recovery_summary(results(**{name: below, layout: 1.0}, **three_d))
    assert len(trained) == 3 and "recovers part of the true depth" in " ".join(trained)


def test_missing_or_unusable_numbers_give_no_sentence() -> None:
    assert recovery_summary({}) == []
    assert recovery_summary(results(nme=0.1)) == []
    assert recovery_summary(results(tracks_sv3=0.1)) == []  # no ground-truth reference
    assert recovery_summary(results(tracks_sv3=0.1, tracks_sv3_gt=0.0)) == []
    assert recovery_summary(results(nme3d_depth=float("nan"), nme3d_flat_baseline=0.1)) == []


def test_the_evaluation_section_shows_the_sentences() -> None:
    doc = {"results": results(nme3d_depth=0.1, nme3d_flat_baseline=0.1), "fit": "a", "test": "b"}
    page = _evaluation_section(doc)
    assert "In plain words" in page and "adds nothing over the mean depth" in page
    assert "nme3d_depth" in page  # the table is still there
    assert "In plain words" not in _evaluation_section({"results": results(nme=0.1)})
