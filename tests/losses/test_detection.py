"""Detection losses and matching of the DETR-style keypoint detector (lifter-e2e)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from kp3d.losses.detection import (
    Assignment,
    category_loss,
    hungarian_match,
    location_loss,
    match_queries,
    visibility_loss,
)


def _brute_force(cost: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> float:
    """The least total cost over every injective map from the columns to the rows."""
    r, c = rows.nonzero().squeeze(1).tolist(), cols.nonzero().squeeze(1).tolist()
    return min(
        sum(float(cost[q, t]) for q, t in zip(perm, c, strict=True))
        for perm in itertools.permutations(r, len(c))
    )


@pytest.mark.parametrize("seed", range(8))
def test_hungarian_matches_brute_force(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    B, Q, T = 3, 5, 4
    cost = torch.rand(B, Q, T, generator=g, dtype=torch.float64)
    rows = torch.rand(B, Q, generator=g) > 0.2
    cols = torch.rand(B, T, generator=g) > 0.3
    for b in range(B):  # each sample needs at least as many rows as columns
        while cols[b].sum() > rows[b].sum():
            cols[b, cols[b].nonzero()[0]] = False
    out = hungarian_match(cost, rows, cols)
    assert out.shape == (B, T) and out.dtype == torch.long
    for b in range(B):
        assert bool((out[b][~cols[b]] == -1).all())
        chosen = out[b][cols[b]]
        assert len(set(chosen.tolist())) == len(chosen)  # one-to-one
        assert bool(rows[b][chosen].all())  # only allowed rows
        total = sum(float(cost[b, q, t]) for t, q in enumerate(out[b].tolist()) if q >= 0)
        assert total == pytest.approx(_brute_force(cost[b], rows[b], cols[b]), abs=1e-12)


def test_hungarian_rectangular_without_masks_and_errors() -> None:
    cost = torch.tensor([[[5.0, 1.0], [1.0, 5.0], [3.0, 3.0]]])  # 3 queries, 2 targets
    assert hungarian_match(cost).tolist() == [[1, 0]]
    with pytest.raises(ValueError, match="targets but"):
        hungarian_match(torch.rand(1, 2, 3))
    with pytest.raises(ValueError, match="cost"):
        hungarian_match(torch.rand(2, 3))


def _setup(seed: int = 0, B: int = 4, K: int = 6):
    g = torch.Generator().manual_seed(seed)
    kp2d = torch.rand(B, K, 2, generator=g)
    vis = torch.rand(B, K, generator=g) > 0.3
    subset = torch.zeros(B, K, dtype=torch.bool)
    subset[:2, :4] = True  # category 0 owns keypoints 0..3
    subset[2:, 3:] = True  # category 1 owns 3..5
    return kp2d, vis, subset, g


def test_identity_matching_pairs_query_k_with_keypoint_k() -> None:
    kp2d, vis, subset, _g = _setup()
    a = match_queries(kp2d, torch.zeros(4, 6), kp2d, vis, subset, kind="identity")
    assert a.target.tolist() == [list(range(6))] * 4
    assert torch.equal(a.matched, vis & subset)
    with pytest.raises(ValueError, match="matching"):
        match_queries(kp2d, torch.zeros(4, 6), kp2d, vis, subset, kind="nope")  # type: ignore[arg-type]


def test_hungarian_matching_undoes_a_permutation_inside_the_subset() -> None:
    kp2d, _, subset, _g = _setup()
    vis = subset.clone()  # all category keypoints visible
    perm = torch.tensor([1, 0, 2, 3, 5, 4])  # swaps inside category 0 (0, 1) and 1 (4, 5)
    location = kp2d[:, perm]
    a = match_queries(location, torch.zeros(4, 6), kp2d, vis, subset, kind="hungarian")
    assert torch.equal(a.matched, subset)
    for b in range(2):
        assert a.target[b, :4].tolist() == perm[:4].tolist()
        assert a.target[b + 2, 3:].tolist() == perm[3:].tolist()
    assert location_loss(location, kp2d, a).item() == pytest.approx(0.0, abs=1e-7)
    identity = match_queries(location, torch.zeros(4, 6), kp2d, vis, subset, kind="identity")
    assert location_loss(location, kp2d, identity).item() > 0.01


def test_location_loss_against_a_loop() -> None:
    kp2d, vis, subset, g = _setup(1)
    location = torch.rand(4, 6, 2, generator=g)
    a = match_queries(location, torch.zeros(4, 6), kp2d, vis, subset, kind="identity")
    per = []
    for b in range(4):
        d = [(location[b, k] - kp2d[b, k]).abs().sum() for k in range(6) if a.matched[b, k]]
        per.append(torch.stack(d).mean() if d else torch.tensor(0.0))
    assert location_loss(location, kp2d, a).item() == pytest.approx(torch.stack(per).mean().item())


def test_visibility_loss_against_a_loop_and_masked_outside_the_subset() -> None:
    _kp2d, vis, subset, g = _setup(2)
    logit = torch.randn(4, 6, generator=g, requires_grad=True)
    a = Assignment(torch.arange(6).expand(4, 6), vis & subset)
    loss = visibility_loss(logit, a, subset)
    per = []
    for b in range(4):
        terms = [
            -math.log(torch.sigmoid(logit[b, k] if a.matched[b, k] else -logit[b, k]).item())
            for k in range(6)
            if subset[b, k]
        ]
        per.append(sum(terms) / len(terms))
    assert loss.item() == pytest.approx(sum(per) / 4, rel=1e-6)
    loss.backward()
    assert bool((logit.grad[~subset] == 0).all()) and bool((logit.grad[subset] != 0).all())


def test_location_loss_has_no_gradient_outside_the_matched_points() -> None:
    kp2d, vis, subset, g = _setup(3)
    location = torch.rand(4, 6, 2, generator=g, requires_grad=True)
    a = match_queries(location, torch.zeros(4, 6), kp2d, vis, subset, kind="identity")
    location_loss(location, kp2d, a).backward()
    assert bool((location.grad[~a.matched] == 0).all())


def test_category_loss_is_the_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    ref = -(F.log_softmax(logits, -1)[torch.arange(2), labels]).mean()
    assert category_loss(logits, labels).item() == pytest.approx(ref.item())
