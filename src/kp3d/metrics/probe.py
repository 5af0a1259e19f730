"""Multi-view evaluation: the pose probe, multi-view consistency and relative-pose error.

Pose probe (Rhodin et al., ECCV 2018; Honari & Fua, 2022): a method's 3D keypoints are frozen
and a small regressor learns the ground-truth joints from them on a share of the labelled
training moments; its error on held-out moments measures how much pose the keypoints carry,
on one scale for every method. Two probes: a linear map (solved in closed form: the minimum-norm
least-squares solution, which a linear layer trained by gradient descent from zero converges to) and an MLP with two hidden layers
(2048 units, ReLU, dropout 0.5; Adam for a stated budget). Inputs are the keypoints centred on
their mean, flattened; targets the joints relative to the root joint; both standardised with the
statistics of the training share. Errors (MPJPE, N-MPJPE, P-MPJPE of :mod:`kp3d.metrics.pose3d`,
without depth centring or mirroring: the joints are root-relative) are in the data's units.

Multi-view consistency: a single-view method's camera-frame keypoints of each view, mapped to
the world with the known cameras, should coincide; their spread across views is reported.

Relative pose (Suwajanakorn et al., NeurIPS 2018): R-hat by orthogonal Procrustes between two
views' centred 3D keypoints against the true relative rotation ``R_b R_a^T``: mean and median
angle (degrees) and the share of pairs under 15 and 30 degrees.

Baselines on the same split: the probe on the ground-truth 2D joints of one view lifted flat
(z = 0), and on the ground-truth 2D joints of all views (occluded ones included: they are exact
projections) triangulated (DLT), an upper bound.

:func:`evaluate_multiview` runs all of them and returns a JSON-ready dict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from kp3d.geometry import (
    geodesic_distance,
    invert_extrinsics,
    procrustes,
    projection_matrix,
    transform_points,
    triangulate_dlt,
)
from kp3d.metrics.pose3d import mpjpe, n_mpjpe, p_mpjpe

ProbeKind = Literal["linear", "mlp"]


@dataclass(frozen=True)
class ProbeConfig:
    """The probe's budget, the one source of its defaults.

    Attributes:
        fractions: shares of the training moments the probes are fitted on (at least
            ``min_train`` moments each).
        hidden: width of the MLP's two hidden layers.
        dropout: dropout probability after each hidden layer.
        steps: Adam steps of the MLP.
        batch: MLP minibatch size (capped at the number of training moments).
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        ridge: the linear probe's ridge, relative to the mean squared column norm of its
            design matrix; 0: the minimum-norm least-squares solution (which overfits badly
            when the moments number about as many as the features).
        root: index of the root joint the targets are relative to.
        seed: seed of the subsets, the MLP's initialisation, minibatches and dropout.
        min_train: smallest training share, in moments.
        kinds: the probes to fit (``linear`` costs milliseconds, ``mlp`` most of the time).
    """

    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    hidden: int = 2048
    dropout: float = 0.5
    steps: int = 200
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    ridge: float = 1e-3
    root: int = 0
    seed: int = 0
    min_train: int = 2
    kinds: tuple[ProbeKind, ...] = ("linear", "mlp")

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"ProbeConfig: fractions must be in (0, 1], got {self.fractions}")
        if self.hidden < 1 or self.steps < 0 or self.batch < 1 or self.min_train < 1:
            raise ValueError("ProbeConfig: hidden, batch and min_train must be >= 1, steps >= 0")
        if not self.kinds or any(k not in ("linear", "mlp") for k in self.kinds):
            raise ValueError(f"ProbeConfig: kinds must be linear and/or mlp, got {self.kinds}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"ProbeConfig: dropout must be in [0, 1), got {self.dropout}")


class Probe(NamedTuple):
    """A fitted probe: ``predict(keypoints (N, K, 3)) -> (N, J, 3)`` root-relative joints."""

    kind: ProbeKind
    weights: tuple[Tensor, ...]
    """linear: (W (D + 1, J * 3),); mlp: (W1, b1, W2, b2, W3, b3)."""
    x_mean: Tensor
    x_std: Tensor
    y_mean: Tensor
    y_std: Tensor

    def predict(self, keypoints: Tensor) -> Tensor:
        x = (probe_inputs(keypoints) - self.x_mean) / self.x_std
        if self.kind == "linear":
            y = _with_bias(x) @ self.weights[0]
        else:
            y = _mlp(x, self.weights, dropout=0.0, generator=None)
        return (y * self.y_std + self.y_mean).unflatten(-1, (-1, 3))


def _check_points(name: str, x: Tensor, what: str = "keypoints") -> None:
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name}: {what} must be (N, K, 3), got {tuple(x.shape)}")


def probe_inputs(keypoints: Tensor) -> Tensor:
    """Keypoints (N, K, 3) centred on their mean and flattened: (N, K * 3)."""
    return (keypoints - keypoints.mean(-2, keepdim=True)).flatten(-2)


def root_relative(joints: Tensor, root: int = 0) -> Tensor:
    """Joints (N, J, 3) minus the root joint."""
    return joints - joints[..., root : root + 1, :]


def _with_bias(x: Tensor) -> Tensor:
    return torch.cat((x, torch.ones_like(x[..., :1])), -1)


def _standardise(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False) if len(x) > 1 else torch.zeros_like(mean)
    # Constant features (e.g. the root of root-relative targets) keep unit scale.
    return mean, torch.where(std > 1e-12, std, torch.ones_like(std))


def _mlp(
    x: Tensor, w: Sequence[Tensor], *, dropout: float, generator: torch.Generator | None
) -> Tensor:
    h = x
    for i in range(0, len(w) - 2, 2):
        h = torch.relu(h @ w[i] + w[i + 1])
        if dropout > 0:
            # Drawn on the CPU generator, so the masks do not depend on the device.
            keep = (torch.rand(h.shape, generator=generator) >= dropout).to(h.device)
            h = h * keep / (1 - dropout)
    return h @ w[-2] + w[-1]


def fit_probe(
    keypoints: Tensor,
    joints: Tensor,
    *,
    kind: ProbeKind,
    config: ProbeConfig = ProbeConfig(),
    generator: torch.Generator | None = None,
) -> Probe:
    """Fit a probe from keypoints (N, K, 3) to the root-relative ground-truth joints (N, J, 3).

    ``linear`` solves ``min ||[x 1] W - y||^2 + ridge ||W||^2`` in closed form (float64,
    minimum-norm when rank deficient);
    ``mlp`` trains the two-hidden-layer network with Adam for ``config.steps`` steps, all
    randomness (initialisation ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` as torch.nn.Linear,
    minibatches, dropout) drawn from ``generator`` (default: seeded with ``config.seed``).
    Runs on the inputs' device, in float32 for the MLP.
    """
    _check_points("fit_probe", keypoints)
    _check_points("fit_probe", joints, "joints")
    if len(keypoints) != len(joints) or len(keypoints) == 0:
        raise ValueError(
            f"fit_probe: need as many (> 0) keypoint sets as joint sets, got {len(keypoints)} "
            f"and {len(joints)}"
        )
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    x = probe_inputs(keypoints.double())
    y = root_relative(joints.double(), config.root).flatten(-2)
    x_mean, x_std = _standardise(x)
    y_mean, y_std = _standardise(y)
    xs, ys = (x - x_mean) / x_std, (y - y_mean) / y_std
    if kind == "linear":
        A, b = _with_bias(xs).cpu(), ys.cpu()
        if config.ridge > 0:
            lam = config.ridge * A.square().sum(0).mean().clamp_min(1e-12)
            A = torch.cat((A, lam.sqrt() * torch.eye(A.shape[1], dtype=A.dtype)))
            b = torch.cat((b, torch.zeros(A.shape[1], b.shape[1], dtype=b.dtype)))
        # gelsd: the minimum-norm solution when the system is rank deficient (few moments, or
        # the 3 dimensions centring removes), the limit of gradient descent from zero.
        W = torch.linalg.lstsq(A, b, driver="gelsd").solution.to(xs.device)
        weights: tuple[Tensor, ...] = (W,)
    elif kind == "mlp":
        weights = _train_mlp(xs.float(), ys.float(), config, generator)
        weights = tuple(w.double() for w in weights)
    else:
        raise ValueError(f"fit_probe: kind must be 'linear' or 'mlp', got {kind!r}")
    return Probe(kind, weights, x_mean, x_std, y_mean, y_std)


def _train_mlp(
    x: Tensor, y: Tensor, config: ProbeConfig, generator: torch.Generator
) -> tuple[Tensor, ...]:
    sizes = (x.shape[1], config.hidden, config.hidden, y.shape[1])
    weights: list[Tensor] = []
    for a, b in itertools.pairwise(sizes):
        bound = 1 / math.sqrt(a)
        weights.append(((torch.rand(a, b, generator=generator) * 2 - 1) * bound).to(x.device))
        weights.append(((torch.rand(b, generator=generator) * 2 - 1) * bound).to(x.device))
    for w in weights:
        w.requires_grad_(True)
    opt = torch.optim.Adam(weights, lr=config.lr, weight_decay=config.weight_decay)
    n = len(x)
    batch = min(config.batch, n)
    with torch.enable_grad():
        for _ in range(config.steps):
            idx = torch.randint(n, (batch,), generator=generator).to(x.device)
            loss = _mlp(x[idx], weights, dropout=config.dropout, generator=generator) - y[idx]
            loss = loss.square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return tuple(w.detach() for w in weights)


def pose_errors(pred: Tensor, gt: Tensor) -> dict[str, float]:
    """MPJPE, N-MPJPE and P-MPJPE of root-relative predictions (N, J, 3) against the
    root-relative truth (no depth centring, no mirroring), in the data's units."""
    return {
        "mpjpe": float(mpjpe(pred, gt, center=False)),
        "n_mpjpe": float(n_mpjpe(pred, gt, center=False)),
        "p_mpjpe": float(p_mpjpe(pred, gt)),
    }


def probe_table(
    fit_keypoints: Tensor,
    fit_joints: Tensor,
    test_keypoints: Tensor,
    test_joints: Tensor,
    *,
    config: ProbeConfig = ProbeConfig(),
    kinds: Sequence[ProbeKind] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Probe errors per kind (``kinds``, default ``config.kinds``) and training share:
    ``{kind: {"1%": {"mpjpe": ..., ...}, ...}}``.

    The training shares are nested random subsets of the fit moments (one permutation drawn
    from ``config.seed``), so a larger share always contains the smaller ones; each share's
    entry also has ``train`` (moments used).
    """
    _check_points("probe_table", test_keypoints)
    _check_points("probe_table", test_joints, "joints")
    g = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(fit_keypoints), generator=g)
    gt = root_relative(test_joints.double(), config.root)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind in config.kinds if kinds is None else kinds:
        out[kind] = {}
        for f in config.fractions:
            m = min(len(order), max(config.min_train, round(f * len(order))))
            pick = order[:m].to(fit_keypoints.device)
            gen = torch.Generator().manual_seed(config.seed + 1)
            probe = fit_probe(
                fit_keypoints[pick], fit_joints[pick], kind=kind, config=config, generator=gen
            )
            res: dict[str, float] = pose_errors(probe.predict(test_keypoints.double()), gt)
            res["train"] = m
            out[kind][f"{100 * f:g}%"] = res
    return out


# -- consistency and relative pose -------------------------------------------------------------


def camera_to_world(points: Tensor, extrinsics: Tensor) -> Tensor:
    """Camera-frame points (..., K, 3) of cameras ``extrinsics`` (..., 3, 4), world to camera,
    in the world frame: ``R^T (X - t)``."""
    E = invert_extrinsics(extrinsics)
    return transform_points(points, E[..., :3], E[..., 3])


def multiview_consistency(keypoints: Tensor, extrinsics: Tensor) -> dict[str, float]:
    """How well per-view 3D keypoints (N, V, K, 3), each in its camera's frame, agree in the world.

    Each view's keypoints are mapped to the world with ``extrinsics`` (N, V, 3, 4); per moment
    and keypoint the spread is the RMS distance of the V world points to their mean. Reported:
    ``spread``, its mean over moments and keypoints (data units), and ``spread_normalised``,
    the same after centring each view's world keypoints on their mean and scaling them to unit
    RMS radius: what remains is disagreement in orientation and shape, not in place or scale.
    """
    if keypoints.ndim != 4 or keypoints.shape[-1] != 3:
        raise ValueError(
            f"multiview_consistency: keypoints must be (N, V, K, 3), got {tuple(keypoints.shape)}"
        )
    if extrinsics.shape != (*keypoints.shape[:2], 3, 4):
        raise ValueError(
            f"multiview_consistency: extrinsics must be {(*keypoints.shape[:2], 3, 4)}, got "
            f"{tuple(extrinsics.shape)}"
        )
    w = camera_to_world(keypoints.double(), extrinsics.double())

    def spread(p: Tensor) -> float:
        return float((p - p.mean(1, keepdim=True)).square().sum(-1).mean(1).sqrt().mean())

    c = w - w.mean(-2, keepdim=True)
    rms = c.square().sum(-1).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
    return {"spread": spread(w), "spread_normalised": spread(c / rms[..., None])}


def relative_rotation(extrinsics_a: Tensor, extrinsics_b: Tensor) -> Tensor:
    """``R_b R_a^T`` (..., 3, 3): maps directions in camera a's frame to camera b's."""
    return extrinsics_b[..., :3] @ extrinsics_a[..., :3].transpose(-1, -2)


def relative_pose_errors(
    keypoints_a: Tensor, keypoints_b: Tensor, rotation: Tensor
) -> dict[str, float]:
    """Relative-pose error of pairs from their 3D keypoints (KeypointNet's metric).

    Args:
        keypoints_a, keypoints_b: (N, K, 3) keypoints of the two views, each in its camera
            frame.
        rotation: (N, 3, 3) true relative rotation, a's frame to b's (:func:`relative_rotation`).

    Returns:
        ``mean`` and ``median`` angle (degrees) between R-hat (rigid Procrustes of a onto b) and
        the truth, ``under_15`` and ``under_30`` (fractions of pairs) and ``pairs``.
    """
    _check_points("relative_pose_errors", keypoints_a)
    _check_points("relative_pose_errors", keypoints_b)
    if rotation.shape != (len(keypoints_a), 3, 3) or keypoints_a.shape != keypoints_b.shape:
        raise ValueError(
            f"relative_pose_errors: need (N, K, 3) twice and (N, 3, 3), got "
            f"{tuple(keypoints_a.shape)}, {tuple(keypoints_b.shape)}, {tuple(rotation.shape)}"
        )
    R_hat = procrustes(keypoints_a.double(), keypoints_b.double(), mode="orthogonal").R
    return {**rotation_errors(R_hat, rotation), "pairs": len(rotation)}


def rotation_errors(R_hat: Tensor, rotation: Tensor) -> dict[str, float]:
    """Angles between estimated and true rotations (N, 3, 3), in float64: ``mean`` and
    ``median`` (degrees), ``under_15`` and ``under_30`` (fractions of the N)."""
    angle = torch.rad2deg(geodesic_distance(R_hat.double(), rotation.double()))
    return {
        "mean": float(angle.mean()),
        "median": float(angle.median()),
        "under_15": float((angle < 15).double().mean()),
        "under_30": float((angle < 30).double().mean()),
    }


# -- baselines -----------------------------------------------------------------------------------


def flat_keypoints(kp2d: Tensor) -> Tensor:
    """2D keypoints (N, K, 2) lifted flat: (N, K, 3) with z = 0."""
    return torch.cat((kp2d, torch.zeros_like(kp2d[..., :1])), -1)


def triangulated_keypoints(
    kp2d: Tensor, intrinsics: Tensor, extrinsics: Tensor, vis: Tensor | None = None
) -> Tensor:
    """World points (N, K, 3) triangulated (DLT) from the 2D keypoints of all views
    (N, V, K, 2), with the cameras (N, V, 3, 3) and (N, V, 3, 4); ``vis`` (N, V, K) weighs
    the observations (points seen by fewer than two views fall back as
    :func:`kp3d.geometry.triangulate_dlt` says)."""
    P = projection_matrix(intrinsics.double(), extrinsics.double())
    w = None if vis is None else vis.double()
    return triangulate_dlt(kp2d.double(), P, weights=w)


# -- the protocol ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiviewTruth:
    """Ground truth of N multi-view moments (V views, J joints).

    Attributes:
        joints: (N, J, 3) world joints.
        kp2d: (N, V, J, 2) their projections.
        intrinsics: (N, V, 3, 3).
        extrinsics: (N, V, 3, 4) world to camera.
        vis: (N, V, J) bool or None (all visible); carried for methods and reports, the
            protocol itself scores every joint.
    """

    joints: Tensor
    kp2d: Tensor
    intrinsics: Tensor
    extrinsics: Tensor
    vis: Tensor | None = None

    @classmethod
    def from_batch(cls, batch: Any) -> MultiviewTruth:
        """From a collated multi-view batch :class:`kp3d.data.schema.Sample` (kp3d in each
        view's camera frame, kp2d, intrinsics, extrinsics, vis): world joints from view 0."""
        if batch.kp3d is None or batch.extrinsics is None or batch.kp3d.ndim != 4:
            raise ValueError("MultiviewTruth.from_batch: need multi-view kp3d and extrinsics")
        joints = camera_to_world(batch.kp3d[:, 0].double(), batch.extrinsics[:, 0].double())
        return cls(joints, batch.kp2d, batch.intrinsics, batch.extrinsics, batch.vis)

    def in_frame(self, frame: int | None) -> Tensor:
        """The joints in the world (None) or in camera ``frame``'s frame: (N, J, 3)."""
        if frame is None:
            return self.joints.double()
        E = self.extrinsics[:, frame].double()
        return transform_points(self.joints.double(), E[..., :3], E[..., 3])


def evaluate_multiview(
    fit_keypoints: Tensor,
    test_keypoints: Tensor,
    fit: MultiviewTruth,
    test: MultiviewTruth,
    *,
    view: int = 0,
    config: ProbeConfig = ProbeConfig(),
    baselines: bool = True,
) -> dict[str, Any]:
    """The multi-view protocol for a method's 3D keypoints of the fit and test moments.

    Args:
        fit_keypoints, test_keypoints: either (N, K, 3), one set per moment in the world frame
            (a multi-view method's triangulated keypoints), or (N, V, K, 3), one set per view in
            that view's camera frame (a single-view method run on each view).
        fit, test: the moments' ground truth (:class:`MultiviewTruth`).
        view: with per-view keypoints, the view whose keypoints the probe reads (its target
            is then the joints in that camera's frame; for world keypoints, world joints).
        config: the probe budget.
        baselines: also probe the flat 2D joints of ``view`` and the triangulated 2D joints.

    Returns:
        ``counts``; ``probe`` (:func:`probe_table`); ``mean_pose``, the errors of the mean
        root-relative pose of the fit moments (a probe that learned nothing); with per-view keypoints ``consistency``
        (:func:`multiview_consistency`) and ``relative_pose`` (:func:`relative_pose_errors`
        over every pair of views); with ``baselines``: ``flat_2d`` and ``triangulated_2d``
        (probe tables). Every number is a plain float or int.
    """
    per_view = test_keypoints.ndim == 4
    if fit_keypoints.ndim != test_keypoints.ndim or test_keypoints.ndim not in (3, 4):
        raise ValueError(
            f"evaluate_multiview: keypoints must both be (N, K, 3) or both (N, V, K, 3), got "
            f"{tuple(fit_keypoints.shape)} and {tuple(test_keypoints.shape)}"
        )
    for name, kp, truth in (("fit", fit_keypoints, fit), ("test", test_keypoints, test)):
        if len(kp) != len(truth.joints):
            raise ValueError(
                f"evaluate_multiview: {len(kp)} {name} keypoint sets for {len(truth.joints)} "
                "moments"
            )
    V = test.kp2d.shape[1]
    if not 0 <= view < V:
        raise ValueError(f"evaluate_multiview: view {view} out of range for {V} views")
    frame = view if per_view else None
    out: dict[str, Any] = {
        "counts": {
            "fit": len(fit.joints),
            "test": len(test.joints),
            "views": V,
            "joints": int(test.joints.shape[1]),
            "keypoints": int(test_keypoints.shape[-2]),
        },
        "frame": "world" if frame is None else f"camera {view}",
    }
    fk = fit_keypoints[:, view] if per_view else fit_keypoints
    tk = test_keypoints[:, view] if per_view else test_keypoints
    out["probe"] = probe_table(fk, fit.in_frame(frame), tk, test.in_frame(frame), config=config)
    # What a probe that learned nothing from its inputs would score: the mean fit pose.
    fit_pose = root_relative(fit.in_frame(frame), config.root)
    test_pose = root_relative(test.in_frame(frame), config.root)
    out["mean_pose"] = pose_errors(fit_pose.mean(0, keepdim=True).expand_as(test_pose), test_pose)
    if per_view:
        out["consistency"] = multiview_consistency(test_keypoints, test.extrinsics)
        a, b = zip(*itertools.combinations(range(V), 2))
        ka = test_keypoints[:, list(a)].flatten(0, 1)
        kb = test_keypoints[:, list(b)].flatten(0, 1)
        R = relative_rotation(test.extrinsics[:, list(a)], test.extrinsics[:, list(b)])
        out["relative_pose"] = relative_pose_errors(ka, kb, R.flatten(0, 1))
    if baselines:
        out["flat_2d"] = probe_table(
            flat_keypoints(fit.kp2d[:, view].double()),
            fit.in_frame(view),
            flat_keypoints(test.kp2d[:, view].double()),
            test.in_frame(view),
            config=config,
        )
        # Every view's ground-truth 2D joint, occluded or not: the exact projections of the
        # truth, so this row is the upper bound.
        tri = [triangulated_keypoints(t.kp2d, t.intrinsics, t.extrinsics) for t in (fit, test)]
        out["triangulated_2d"] = probe_table(
            tri[0], fit.in_frame(None), tri[1], test.in_frame(None), config=config
        )
    return out


__all__ = [
    "MultiviewTruth",
    "Probe",
    "ProbeConfig",
    "ProbeKind",
    "camera_to_world",
    "evaluate_multiview",
    "fit_probe",
    "flat_keypoints",
    "multiview_consistency",
    "pose_errors",
    "probe_inputs",
    "probe_table",
    "relative_pose_errors",
    "relative_rotation",
    "root_relative",
    "rotation_errors",
    "triangulated_keypoints",
]
