"""mask_iou against a naive loop, and the foreground_mask protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kp3d.data.schema import Sample
from kp3d.evaluation import Collected, evaluate_foreground_mask, evaluate_protocols
from kp3d.methods.prediction import Prediction
from kp3d.metrics import mask_iou


def _naive_iou(p: np.ndarray, g: np.ndarray) -> float:
    inter = union = 0
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            a, b = p[i, j] > 0.5, g[i, j] > 0.5
            inter += a and b
            union += a or b
    return 1.0 if union == 0 else inter / union


def test_mask_iou_against_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 2, 5, 7, generator=g, dtype=torch.float64)
    gt = (torch.rand(3, 2, 5, 7, generator=g) > 0.6).double()
    per_map = mask_iou(pred, gt, reduction="none")
    assert per_map.shape == (3, 2) and per_map.dtype == torch.float64
    for i in range(3):
        for v in range(2):
            assert float(per_map[i, v]) == pytest.approx(
                _naive_iou(pred[i, v].numpy(), gt[i, v].numpy())
            )
    assert float(mask_iou(pred, gt)) == pytest.approx(float(per_map.mean()))
    assert float(mask_iou(pred.numpy(), gt.numpy())) == pytest.approx(float(per_map.mean()))


def test_mask_iou_edge_cases_and_errors() -> None:
    gt = torch.zeros(1, 4, 4)
    gt[0, :2] = 1
    assert float(mask_iou(gt, gt)) == 1.0
    assert float(mask_iou(1 - gt, gt)) == 0.0
    assert float(mask_iou(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))) == 1.0  # both empty
    assert float(mask_iou(torch.ones(1, 4, 4), gt)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one shape"):
        mask_iou(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="reduction"):
        mask_iou(gt, gt, reduction="sum")  # type: ignore[arg-type]


def test_the_foreground_mask_protocol_scores_per_view_masks_of_multiview_sets() -> None:
    g = torch.Generator().manual_seed(1)
    gt = (torch.rand(4, 3, 1, 6, 6, generator=g) > 0.5).float()
    extr = torch.zeros(4, 3, 3, 4)
    test = Collected(Prediction(mask=gt.clone()), Sample(mask=gt, extrinsics=extr), (6, 6))
    out = evaluate_foreground_mask(test, test)
    assert out["mask_iou"]["value"] == 1.0
    assert out["counts"] == {"test": 4, "masks": 12}
    assert out["mask_iou_full_baseline"]["value"] == pytest.approx(float(gt.mean((2, 3, 4)).mean()))
    done = evaluate_protocols(["foreground_mask"], test, test)
    assert set(done.results) == {"foreground_mask"}
    single = Collected(Prediction(mask=gt[:, 0]), Sample(mask=gt[:, 0]), (6, 6))
    assert evaluate_protocols(["foreground_mask"], single, single).skipped == {
        "foreground_mask": "the test set is single-view"
    }
    no_mask = Collected(Prediction(mask=gt), Sample(extrinsics=extr), (6, 6))
    assert evaluate_protocols(["foreground_mask"], no_mask, no_mask).skipped == {
        "foreground_mask": "the test set has no foreground masks (mask)"
    }
