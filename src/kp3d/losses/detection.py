"""Losses of a DETR-style keypoint detector (Carion et al., ECCV 2020; Can et al.'s image branch).

A detector with one query per keypoint of every category (``K = sum_z k_z``) predicts for each
query a location ``p_q`` (in unit image coordinates ``u / W``, ``v / H``) and a visibility
logit ``l_q``, and from one more query the category. A sample of category ``z`` is scored only
on its category's keypoints, the subset ``zeta_z`` (``subset`` (B, K) below): every other query
contributes neither value nor gradient to any loss.

- ``L_l`` (:func:`location_loss`): mean L1 distance ``|p_q - y_t|_1`` over the visible keypoints
  ``t`` and the queries ``q`` assigned to them;
- ``L_k`` (:func:`visibility_loss`): mean binary cross-entropy of ``l_q`` over ``zeta_z``, the
  target being whether ``q``'s keypoint is visible (with Hungarian matching: whether ``q`` is
  matched to a visible keypoint);
- ``L_b`` (:func:`category_loss`): cross-entropy of the category logits.

Assignment (:func:`match_queries`): ``identity`` ties query ``k`` to keypoint ``k``;
``hungarian`` is DETR's set matching inside each sample's ``zeta_z``: the minimum-cost one-to-one
assignment (:func:`hungarian_match`) of visible keypoints to the category's queries with the
cost ``w_l |p_q - y_t|_1 - w_k sigmoid(l_q)``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from kp3d.geometry.keypoints import check_shape, masked_mean

MatchingKind = Literal["identity", "hungarian"]


def hungarian_match(cost: Tensor, rows: Tensor | None = None, cols: Tensor | None = None) -> Tensor:
    """Minimum-cost one-to-one assignment per sample (Kuhn-Munkres, via scipy).

    Args:
        cost: (B, Q, T) cost of assigning row (query) q to column (target) t.
        rows: (B, Q) bool, the rows that may be assigned; None = all.
        cols: (B, T) bool, the columns to assign; None = all. Each sample needs at least as
            many rows as columns.

    Returns:
        (B, T) int64: the row assigned to each column, -1 for columns left out.

    Raises:
        ValueError: a sample with more columns than rows.
    """
    check_shape(cost, "B Q T", name="hungarian_match: cost")
    B, Q, T = cost.shape
    rows = torch.ones(B, Q, dtype=torch.bool) if rows is None else rows.cpu().bool()
    cols = torch.ones(B, T, dtype=torch.bool) if cols is None else cols.cpu().bool()
    c = cost.detach().double().cpu()
    out = torch.full((B, T), -1, dtype=torch.long)
    for b in range(B):
        r, t = rows[b].nonzero().squeeze(1), cols[b].nonzero().squeeze(1)
        if len(t) == 0:
            continue
        if len(t) > len(r):
            raise ValueError(
                f"hungarian_match: sample {b} has {len(t)} targets but {len(r)} queries"
            )
        ri, ci = linear_sum_assignment(c[b][r][:, t].numpy())
        out[b, t[torch.as_tensor(ci)]] = r[torch.as_tensor(ri)]
    return out.to(cost.device)


class Assignment(NamedTuple):
    """Queries and targets paired for the detection losses."""

    target: Tensor
    """(B, K) index of the keypoint each query is scored against (any value where unused)."""
    matched: Tensor
    """(B, K) bool: the query is assigned to a visible keypoint of the sample's category."""


def match_queries(
    location: Tensor,
    logit: Tensor,
    kp2d: Tensor,
    vis: Tensor,
    subset: Tensor,
    *,
    kind: MatchingKind,
    location_weight: float = 1.0,
    visibility_weight: float = 1.0,
) -> Assignment:
    """Pair the detector's queries with the ground-truth keypoints (module doc).

    Args:
        location: (B, K, 2) predicted locations, unit coordinates.
        logit: (B, K) visibility logits.
        kp2d: (B, K, 2) ground truth, unit coordinates; vis: (B, K) its visibility.
        subset: (B, K) bool, each sample's category keypoints ``zeta_z``.
        kind: ``identity`` or ``hungarian``.
        location_weight, visibility_weight: weights of the matching cost's two terms.
    """
    visible = vis.bool() & subset.bool()
    B, K = visible.shape
    if kind == "identity":
        target = torch.arange(K, device=kp2d.device).expand(B, K)
        return Assignment(target, visible)
    if kind != "hungarian":
        raise ValueError(f"unknown matching {kind!r}; valid: identity, hungarian")
    cost = location_weight * (location[:, :, None] - kp2d[:, None]).abs().sum(-1)
    cost = cost - visibility_weight * logit.sigmoid()[..., None]
    query_of = hungarian_match(cost, subset, visible)  # (B, K): query of each visible target
    target = torch.zeros(B, K, dtype=torch.long, device=kp2d.device)
    matched = torch.zeros(B, K, dtype=torch.bool, device=kp2d.device)
    b, t = (query_of >= 0).nonzero(as_tuple=True)
    q = query_of[b, t]
    target[b, q] = t
    matched[b, q] = True
    return Assignment(target, matched)


def location_loss(location: Tensor, kp2d: Tensor, assignment: Assignment) -> Tensor:
    """``L_l``: per sample, the mean L1 distance of the matched queries' locations (B, K, 2) to
    their keypoints in ``kp2d`` (B, K, 2); then the mean over samples (0 for a sample without
    a visible keypoint)."""
    target = kp2d.gather(1, assignment.target[..., None].expand_as(location))
    dist = torch.where(assignment.matched[..., None], location - target, 0.0).abs().sum(-1)
    return masked_mean(dist, assignment.matched.to(dist.dtype), dim=-1).mean()


def visibility_loss(logit: Tensor, assignment: Assignment, subset: Tensor) -> Tensor:
    """``L_k``: per sample, the mean binary cross-entropy of the logits (B, K) over its
    category's queries ``subset`` (B, K), target ``assignment.matched``; then the mean over
    samples."""
    bce = F.binary_cross_entropy_with_logits(
        logit, assignment.matched.to(logit.dtype), reduction="none"
    )
    w = subset.to(logit.dtype)
    return masked_mean(torch.where(subset.bool(), bce, 0.0), w, dim=-1).mean()


def category_loss(logits: Tensor, category: Tensor) -> Tensor:
    """``L_b``: the mean cross-entropy of category logits (B, Z) against labels (B,)."""
    return F.cross_entropy(logits, category.long())


__all__ = [
    "Assignment",
    "MatchingKind",
    "category_loss",
    "hungarian_match",
    "location_loss",
    "match_queries",
    "visibility_loss",
]
