"""autolink3d: AutoLink's self-supervised keypoints and skeleton, lifted to a 3D shape model.

One training step (He, Wandt & Rhodin, NeurIPS 2022, plus the 3D head of Wang, Cao & Bernard)::

    image I --Detector--> heatmaps --soft-argmax--> P2D (B, K, 2)
    P2D, learned edge weights w_ij --> edge map S (B, 1, H, W)       (kp3d.nn.edgemap)
    U-Net( [gain * I * block-mask, S] ) --> reconstruction I'
    loss = perceptual(I', I) [+ L1(I', I)] + repulsion(P2D)
    3D head (detector features, P2D) --> R, alpha;  S, T fitted to P2D in closed form
    P3D = S R (M + alpha B) + T,   loss += ||P3D Pi - P2D|| / spread(P2D) + canonicalisation

Masking most of the image forces the decoder to take the object's layout from the edge map,
hence from the keypoints: they must land where a line drawing between them explains the image.

How the 3D head avoids trivial solutions
    * Collapsed keypoints, which any 3D shape projects onto: the reconstruction needs spread
      keypoints, the repulsion loss pushes crowded ones apart, and the projection loss is
      relative to the keypoints' spread. (With S fitted to P2D, the absolute loss falls as P2D
      shrinks, which pulls the keypoints together.)
    * Scale: the mean shape M is centred with unit RMS and each basis shape is centred with unit
      norm, so size lives in S (per image) and Pi (global) only.
    * Pose that the regressor need not learn: S and T are the least-squares fit of the rotated
      shape to P2D (as in C3DPO), so the regressor only predicts R and alpha, from centred,
      scale-normalised keypoints.
    * Deformation explaining everything (the non-rigid ambiguity: alpha B can imitate a
      rotation, leaving R and depth arbitrary): C3DPO's canonicalisation loss. A second network
      must recover alpha from the canonical shape under a random rotation, which is only
      possible if canonical shapes carry no rotation.
    * Depth is recovered up to one global reflection (z -> -z with the matching rotation gives
      the same orthographic image), as in every orthographic NRSfM; translation along z is
      unobservable and fixed to 0.
    * The head sees P2D detached, so it fits the keypoints instead of moving them towards an
      easy input; the projection loss still pulls P2D towards 3D-consistent configurations.

Results: ``docs/results.md``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kp3d.data.augment import augment
from kp3d.data.schema import Sample
from kp3d.geometry import (
    normalised_to_pixel,
    rotation_6d_to_matrix,
    rotation_spread,
)
from kp3d.geometry.keypoints import least_squares_scale, normalise_keypoints
from kp3d.losses.lifting import canonicalisation_loss
from kp3d.losses.perceptual import PerceptualLoss
from kp3d.losses.projection import orthographic_project, projection_loss
from kp3d.losses.repulsion import repulsion_loss
from kp3d.methods.autolink3d.config import AutoLink3DConfig
from kp3d.methods.base import LossOutput, MethodModel, ParamGroup, default_param_groups
from kp3d.methods.prediction import Prediction
from kp3d.nn.blocks import LEAK
from kp3d.nn.detector import Detector
from kp3d.nn.edgemap import render_depth_edge_map, render_edge_map, skeleton_pairs
from kp3d.nn.masking import random_block_mask
from kp3d.nn.perceptual import load_efficientnet_lite0, load_vgg16
from kp3d.nn.shape import linear_shape
from kp3d.nn.unet import UNet

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the 3D head


class Shape3D(NamedTuple):
    """Output of :class:`ShapeModel`; B images, K keypoints, n basis shapes."""

    points: Tensor
    """(B, K, 3) P3D = S R (M + alpha B) + T, camera frame (x right, y down, z forward),
    normalised image units."""
    canonical: Tensor
    """(B, K, 3) M + alpha B, the shape in the category's canonical frame."""
    R: Tensor
    """(B, 3, 3) rotation, canonical to camera."""
    T: Tensor
    """(B, 3) translation; z is 0 (unobservable under orthographic projection)."""
    S: Tensor
    """(B,) scale."""
    alpha: Tensor
    """(B, n) deformation coefficients."""
    projected: Tensor
    """(B, K, 2) P3D Pi, in the normalised coordinates of P2D."""


def _mlp(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(c_in, hidden),
        nn.LeakyReLU(LEAK),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(LEAK),
        nn.Linear(hidden, c_out),
    )


class ShapeModel(nn.Module):
    """Learned category shape (mean M, basis B), projection Pi, and a per-image pose regressor.

    The regressor reads the detector's pooled bottleneck features and the 2D keypoints (detached,
    centred and scale-normalised) and predicts the rotation (6D representation) and alpha. Scale
    S and translation T are then the least-squares fit of the rotated shape's projection to the
    keypoints, in closed form as in C3DPO (Novotny et al., ICCV 2019): T puts the shape's
    centroid on the keypoints' centroid (z = 0: unobservable), S minimises the residual.

    A canonicaliser network (C3DPO's Psi) maps randomly rotated canonical shapes back to their
    coefficients; its loss (:meth:`canonicalisation_loss`) makes alpha B unable to absorb
    rotations, which would leave R, and so depth, undetermined.

    Args:
        k: keypoints.
        n_basis: basis shapes (0: a rigid shape).
        feature_channels: channels of the detector's bottleneck.
        hidden: width of the regressor and canonicaliser MLPs.
    """

    def __init__(
        self,
        k: int,
        n_basis: int,
        feature_channels: int,
        *,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.k, self.n_basis = k, n_basis
        g = torch.Generator().manual_seed(0x3D)
        self.mean_shape = nn.Parameter(torch.randn(k, 3, generator=g))
        self.basis = nn.Parameter(torch.randn(n_basis, k, 3, generator=g))
        self.log_proj_scale = nn.Parameter(torch.zeros(2))
        self.regressor = _mlp(feature_channels + 2 * k, hidden, 6 + n_basis)
        self.canonicaliser = _mlp(3 * k, hidden, n_basis) if n_basis else None
        # Start near the identity rotation without deformation: small last-layer weights.
        last = self.regressor[-1]
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            last.bias.zero_()
            last.bias[:6] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def shapes(self) -> tuple[Tensor, Tensor]:
        """The normalised mean shape (K, 3), centred with unit RMS, and basis (n, K, 3), each
        basis shape centred with unit Frobenius norm."""
        m = self.mean_shape - self.mean_shape.mean(0)
        m = m / m.square().sum(-1).mean().sqrt()
        b = self.basis - self.basis.mean(1, keepdim=True)
        b = b / b.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None]
        return m, b

    def projection_scales(self) -> Tensor:
        """(2,) the diagonal (s1, s2) of Pi."""
        return self.log_proj_scale.exp()

    def compose(self, alpha: Tensor) -> Tensor:
        """alpha (B, n) -> canonical shapes M + alpha B, (B, K, 3)."""
        m, b = self.shapes()
        if not self.n_basis:
            return m.expand(alpha.shape[0], -1, -1)
        return linear_shape(m, b, alpha)

    def forward(self, features: Tensor, kp2d: Tensor) -> Shape3D:
        """features (B, C, h, w), kp2d (B, K, 2) normalised -> :class:`Shape3D` (float32, or
        float64 for a float64 model and inputs)."""
        dtype = torch.promote_types(kp2d.dtype, torch.float32)
        kp = kp2d.detach().to(dtype)
        norm = normalise_keypoints(kp)
        centre = norm.centre[:, None]
        centred = kp - centre
        x = torch.cat([features.mean(dim=(-2, -1)).to(dtype), norm.kp2d.flatten(1)], dim=1)
        out = self.regressor(x).to(dtype)
        # Geometry in float32 even under bf16 autocast, which would round the matmuls.
        with torch.autocast(kp2d.device.type, enabled=False):
            R = rotation_6d_to_matrix(out[:, :6])
            alpha = out[:, 6:]
            canonical = self.compose(alpha)
            scales = self.projection_scales()
            rotated = canonical @ R.transpose(-1, -2)  # (B, K, 3)
            unit = orthographic_project(rotated, scales)  # zero-mean
            S = least_squares_scale(unit, centred)
            # A negative fit is the same shape turned by pi about the optical axis: move the
            # sign into R (D R with D = diag(-1, -1, 1) is a rotation, and X (D R)^T = X R^T D),
            # so gradients never stall at S = 0.
            flip = torch.where(S < 0, -1.0, 1.0).to(dtype)
            D = torch.stack([flip, flip, torch.ones_like(flip)], dim=-1)  # (B, 3)
            R = R * D[..., :, None]
            rotated = rotated * D[..., None, :]
            S = S.abs().clamp_min(1e-8)
            T = F.pad(centre[:, 0] / scales, (0, 1))
            points = S[:, None, None] * rotated + T[:, None, :]
            projected = orthographic_project(points, scales)
        return Shape3D(points, canonical, R, T, S, alpha, projected)

    def canonicalisation_loss(
        self, canonical: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """C3DPO's canonicalisation: ``mean ||X - compose(Psi(R~ X))||`` over random rotations R~.

        canonical (B, K, 3) -> scalar; 0 for a rigid shape model.
        """
        if self.canonicaliser is None:
            return canonical.new_zeros(())
        with torch.autocast(canonical.device.type, enabled=False):
            return canonicalisation_loss(
                canonical, self.canonicaliser, self.compose, generator=generator
            )


# ----------------------------------------------------------------------------- the model


class AutoLink3D(MethodModel):
    """Detector, skeleton, U-Net decoder, perceptual loss and (optionally) the 3D head."""

    def __init__(self, config: AutoLink3DConfig) -> None:
        super().__init__()
        self.config = c = config
        w = c.base_width
        coarsest = c.image_size // 16
        self.detector = Detector(
            c.k, width=w, n_up=(c.heatmap_size // coarsest).bit_length() - 1, norm=c.norm
        )
        self.register_buffer("pairs", skeleton_pairs(c.k), persistent=False)
        # Every edge starts at edge_weight_init, perturbed by 10% in softplus-logit space as in
        # AutoLink; they learn skeleton_lr_scale times faster (param_groups).
        g = torch.Generator().manual_seed(0x5EED)
        n_pairs = self.pairs.shape[1]
        logit = math.log(math.expm1(c.edge_weight_init))  # softplus^-1
        noise = torch.randn(n_pairs, generator=g) / 10
        self.skeleton_logits = nn.Parameter(logit + noise)
        self.image_gain = nn.Parameter(torch.ones(()))
        c_in = 3 + 1 + {"edges": 0, "edges+depth": 1}[c.decoder_input]
        self.decoder = UNet(c_in, 3, widths=[w, 2 * w, 4 * w, 8 * w, 8 * w], norm=c.norm)
        self.shape = (
            ShapeModel(c.k, c.n_basis, self.detector.feature_channels) if c.use_3d else None
        )
        self.perceptual = self._perceptual_loss(c)
        self._warned_mask = False

    @staticmethod
    def _perceptual_loss(c: AutoLink3DConfig) -> PerceptualLoss | None:
        if c.perceptual == "efficientnet_lite0":
            return PerceptualLoss(load_efficientnet_lite0().fuse_batchnorm_())
        if c.perceptual == "vgg16":
            assert c.vgg16_weights is not None  # checked by the config
            return PerceptualLoss(load_vgg16(c.vgg16_weights))
        return None

    def param_groups(self) -> list[ParamGroup]:
        """Every parameter at the run's learning rate (decay on matrices and kernels), but the
        skeleton's edge logits at ``skeleton_lr_scale`` times it (AutoLink's ``sklr``)."""
        skeleton = ParamGroup(
            "skeleton", (self.skeleton_logits,), self.config.skeleton_lr_scale, weight_decay=False
        )
        return [*default_param_groups(self, exclude=skeleton.params), skeleton]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Run format 1 stored the edge logits divided by skeleton_lr_scale (the multiplier was
        # part of the parametrisation) under the name edge_logits.
        old = state_dict.pop(prefix + "edge_logits", None)
        if old is not None and prefix + "skeleton_logits" not in state_dict:
            state_dict[prefix + "skeleton_logits"] = old * self.config.skeleton_lr_scale
        super()._load_from_state_dict(state_dict, prefix, *args)

    # -- the learned skeleton

    def edge_weights(self) -> Tensor:
        """(P,) non-negative weight of each keypoint pair, in :func:`skeleton_pairs` order; each
        keypoint's strongest edge at least ``min_keypoint_edge``."""
        w = F.softplus(self.skeleton_logits)
        floor = self.config.min_keypoint_edge
        if floor <= 0:
            return w
        n = torch.arange(self.config.k, device=w.device)[:, None]
        touches = (self.pairs[0] == n) | (self.pairs[1] == n)  # (K, P): pair p has keypoint k
        strongest = torch.where(touches, w.detach(), -1.0).argmax(1).unique()  # pair ids
        return w.index_put((strongest,), w[strongest].clamp_min(floor))

    @torch.no_grad()
    def artifacts(self) -> dict[str, Tensor]:
        """``skeleton`` (K, K): symmetric learned edge weights w_ij >= 0 (zero diagonal); with
        the 3D head ``canonical_shape`` (K, 3), the learned mean shape M, and unless rigid
        ``shape_basis`` (n, K, 3), the learned basis B."""
        k = self.config.k
        skeleton = torch.zeros(k, k, device=self.skeleton_logits.device)
        i, j = self.pairs
        skeleton[i, j] = skeleton[j, i] = self.edge_weights().float()
        out = {"skeleton": skeleton}
        if self.shape is not None:
            mean, basis = self.shape.shapes()[:2]
            out["canonical_shape"] = mean.detach().float()
            if self.shape.n_basis:
                out["shape_basis"] = basis.detach().float()
        return out

    # -- forward pieces

    def _input(self, batch: Sample) -> Tensor:
        """The batch's images, resized to the model's size, in [-1, 1]: (B, 3, S, S)."""
        if batch.image is None:
            raise ValueError("autolink3d: the batch has no images")
        image = batch.image
        s = self.config.image_size
        if tuple(image.shape[-2:]) != (s, s):
            image = F.interpolate(
                image, size=(s, s), mode="bilinear", align_corners=False, antialias=True
            )
        return image * 2 - 1

    def loss_weights(self) -> dict[str, float]:
        c = self.config
        return {
            "perceptual": c.w_perceptual,
            "pixel": c.w_pixel,
            "repulsion": c.w_repulsion,
            "projection": c.w_projection,
            "canonical": c.w_canonical,
        }

    def _augment(self, batch: Sample) -> Sample:
        """The training batch with ``config.augment`` applied (in train mode only), from torch's
        global generator, which the engine seeds per process and stores with checkpoints (as
        for the block masks)."""
        a = self.config.augment
        if not (self.training and a.enabled):
            return batch
        if a.background > 0 and batch.mask is None and not self._warned_mask:
            self._warned_mask = True
            log.warning("augment.background: the training data have no masks; no backgrounds")
        return augment(batch, a)

    def losses(self, batch: Sample, step: int) -> LossOutput:
        c = self.config
        x = self._input(self._augment(batch))
        B, _, H, W = x.shape
        det = self.detector(x)
        shape = None if self.shape is None else self.shape(det.features, det.kp)
        weights = self.edge_weights()
        extra: list[Tensor] = []
        if c.decoder_input == "edges+depth":
            assert shape is not None  # checked by the config
            drawn = render_depth_edge_map(
                det.kp,
                shape.points[..., 2],
                weights,
                (H, W),
                thickness=c.edge_thickness,
                pairs=self.pairs,
            )
            edges = drawn.edges
            extra.append(drawn.depth[:, None])
        else:
            edges = render_edge_map(
                det.kp, weights, (H, W), thickness=c.edge_thickness, pairs=self.pairs
            )
        keep = random_block_mask(
            B, (H, W), grid=c.mask_grid, ratio=c.mask_ratio, device=x.device, dtype=x.dtype
        )
        parts = [x * keep * self.image_gain, edges[:, None], *extra]
        recon = self.decoder(torch.cat([p.to(x.dtype) for p in parts], dim=1))

        target, pred = x * 0.5 + 0.5, recon.float() * 0.5 + 0.5
        # Terms of zero weight are not computed (the perceptual one: no network configured).
        losses: dict[str, Tensor] = {}
        logs: dict[str, Tensor] = {}
        if self.perceptual is not None:
            losses["perceptual"] = self.perceptual(pred, target)
        if c.w_pixel > 0:
            losses["pixel"] = (pred - target).abs().mean()
        if c.w_repulsion > 0:
            losses["repulsion"] = repulsion_loss(det.kp, h=c.repulsion_h).mean()
        if self.shape is not None and shape is not None:
            scales = self.shape.projection_scales()
            losses["projection"] = projection_loss(
                shape.points, det.kp, scales, relative=True
            ).mean()
            # Near 0 the head poses every image alike: a 2D template whose depth carries nothing.
            logs["rotation_spread_deg"] = torch.rad2deg(rotation_spread(shape.R.detach()))
            if c.w_canonical > 0:
                losses["canonical"] = self.shape.canonicalisation_loss(shape.canonical)
        logs["edge_weight_max"] = weights.detach().max()
        logs["kp_spread"] = (det.kp - det.kp.mean(1, keepdim=True)).norm(dim=-1).mean().detach()
        return LossOutput(losses, logs)

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """Keypoints (and the 3D head's outputs) for a batch of images.

        Fields: ``kp2d`` (B, K, 2) in pixels of the *input* images; ``heatmaps`` (B, K, h, w),
        the detector's spatial softmax; with the 3D head, ``kp3d`` (B, K, 3), P3D in the camera
        frame in normalised image units, ``kp3d_image`` (B, K, 3), the same in input pixels (z
        scaled by the mean of Pi's pixel scales), and ``R`` (B, 3, 3). The 3D keypoints are the
        method's best 3D estimate: the *detected* keypoints with the head's depth, x, y chosen so
        that Pi projects them onto ``kp2d`` exactly; the head's own points P3D drift from the
        detections by its projection residual and are kept as ``extras["kp3d_shape"]``.
        ``extras``: ``kp2d_normalised`` (B, K, 2) in [-1, 1]; with the 3D head ``canonical``
        (B, K, 3) = M + alpha B, ``T`` (B, 3), ``S`` (B,), ``alpha`` (B, n), ``kp3d_shape``.
        """
        x = self._input(batch)
        H_in, W_in = batch.image.shape[-2:]  # type: ignore[union-attr]
        det = self.detector(x)
        pred = Prediction(
            kp2d=normalised_to_pixel(det.kp, (H_in, W_in)),
            heatmaps=det.prob,
            extras={"kp2d_normalised": det.kp},
            image_size=(int(H_in), int(W_in)),
        )
        if self.shape is not None:
            shape = self.shape(det.features, det.kp)
            scales = self.shape.projection_scales()
            s1, s2 = scales
            depth = shape.points[..., 2:]
            pred.kp3d = torch.cat([det.kp.to(depth.dtype) / scales, depth], dim=-1)
            pred.kp3d_image = torch.cat([pred.kp2d, depth * (s1 * W_in + s2 * H_in) / 4], dim=-1)
            pred.R = shape.R
            pred.extras.update(
                canonical=shape.canonical,
                T=shape.T,
                S=shape.S,
                alpha=shape.alpha,
                kp3d_shape=shape.points,
            )
        return pred


def build(config: AutoLink3DConfig) -> AutoLink3D:
    """The registry's constructor."""
    return AutoLink3D(config)
