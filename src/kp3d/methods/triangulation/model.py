"""Honari & Fua, "Unsupervised 3D Keypoint Estimation with Multi-View Geometry" (2022), from
the paper (no public code).

Input: V calibrated views of one moment (intrinsics K_v, extrinsics [R_v | t_v]) and each
view's background B_v. Per view:

1. the detector S (a spatial transformer) reads the view down-sampled and predicts a box,
   centre ``u = (u_x, u_y)`` (the soft-argmax of a score map) and half side ``a`` in
   normalised image units; the patch is
   resampled differentiably (``affine_grid`` / ``grid_sample``) and the intrinsics follow it,
   ``K_p`` (:func:`kp3d.geometry.crop_intrinsics`);
2. the encoder E maps the patch to features Xi; the decoder D gives an RGB patch D_p and a
   foreground mask M_p, which the inverse transform puts back at full resolution (D, M; M = 0
   outside the box); the view is reconstructed as ``I~ = M D + (1 - M) B``;
3. the keypoint encoder psi maps Xi to N heatmaps; their soft-argmax gives 2D keypoints in the
   patch, weighted by the heatmaps' sharpness (below);
4. the N keypoints of all views are triangulated by the weighted DLT
   (:func:`kp3d.geometry.triangulate_dlt`) with the patches' camera matrices ``K_p [R | t]``,
   and the 3D points reprojected into every patch; the mask decoder phi (three 5 x 5
   convolutions) turns Gaussian heatmaps (sigma 0.02) of the reprojections into a mask M~_p.

Losses (weights of :class:`~kp3d.methods.triangulation.config.TriangulationConfig`):
``reconstruction`` mean ``(I - I~)^2``; ``perceptual`` ``sum_l mean ||F_l(I) - F_l(I~)||^2``
(beta; kp3d's offline EfficientNet-Lite0 features instead of the paper's ResNet18, unit-normalised
over channels, :func:`perceptual_distance`);
``mask`` mean ``(M~_p - M_p)^2`` (gamma; the target as ``target_mask`` says, detached);
``coverage`` ``mean |1 - sum H_norm M_p|`` (delta, :func:`coverage_loss`); ``centering``
``mean ||u - mean_k kp_k||`` (eta, :func:`centering_loss`; the box and the keypoints pulled
towards each other, :meth:`Triangulation.centering`). Only 3D keypoints that are
consistent across the views reproject onto every view's foreground, which is what makes them
3D. The detector and the image decoder learn at a fifth of the run's learning rate (the
paper's 2e-5 against 1e-4), through :meth:`Triangulation.param_groups`.

Triangulation weights: ``1 / (spread + 1 / h)``, the heatmap's standard deviation
``sqrt(Var x + Var y)`` in normalised patch units plus one heatmap pixel (h wide), detached
(the network cannot lower the loss by silencing a view); the paper does not state its weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kp3d.data.schema import Sample
from kp3d.errors import DataError
from kp3d.geometry import (
    crop_intrinsics,
    expected_variance,
    normalised_to_pixel,
    pixel_to_normalised,
    project_pinhole,
    projection_matrix,
    render_gaussian_heatmaps,
    soft_argmax,
    transform_points,
    triangulate_dlt,
)
from kp3d.losses.perceptual import PerceptualLoss
from kp3d.methods.base import Diagnosis, LossOutput, MethodModel, ParamGroup, default_param_groups
from kp3d.methods.prediction import Prediction
from kp3d.methods.triangulation.config import TriangulationConfig
from kp3d.nn.perceptual import load_efficientnet_lite0

MIN_DEPTH = 1e-6
"""Depth floor of the reprojection (points behind a camera stay finite)."""
REPROJECTION_CLAMP = 4.0
"""Reprojected keypoints are clamped to +-4 normalised patch units: far outside the patch,
where their Gaussians vanish anyway, without the huge values of points near a camera plane."""

STILL_BOX_PX = 0.5
"""A box centre that varies less than this (image pixels, standard deviation over the moments
given to :meth:`Triangulation.diagnose`) is flagged: the detector gives every moment the same
box and does not follow the subject (what still and following boxes measured:
docs/results.md, "The detector that follows the subject"). A box that moves without following
is not caught."""

# --------------------------------------------------------------------------- boxes and crops


class Box(NamedTuple):
    """Axis-aligned boxes in normalised image coordinates (:mod:`kp3d.geometry`)."""

    centre: Tensor
    """(..., 2) centre ``(u_x, u_y)``."""
    half: Tensor
    """(..., 2) half sides ``(a_x, a_y)``; 1 = half the image."""


def box_to_affine(box: Box) -> Tensor:
    """(..., 2, 3) ``affine_grid`` matrices from normalised patch to normalised image
    coordinates: ``x = a x_p + u``."""
    a, c = box.half, box.centre
    zero = torch.zeros_like(a[..., 0])
    row_x = torch.stack((a[..., 0], zero, c[..., 0]), -1)
    row_y = torch.stack((zero, a[..., 1], c[..., 1]), -1)
    return torch.stack((row_x, row_y), -2)


def box_to_inverse_affine(box: Box) -> Tensor:
    """(..., 2, 3) the inverse of :func:`box_to_affine`: ``x_p = (x - u) / a``."""
    return box_to_affine(Box(-box.centre / box.half, 1 / box.half))


def box_to_crop(box: Box, image_size: tuple[int, int], patch_size: int) -> tuple[Tensor, Tensor]:
    """The resampling of a box to a ``patch_size`` square as :func:`crop_intrinsics` takes it:
    ``scale`` (..., 2) patch pixels per image pixel, ``P / (a W)``, and ``corner`` (..., 2) the
    box's top-left corner in image pixels, ``(u - a + 1) W / 2`` (``image_size = (H, W)``)."""
    H, W = image_size
    wh = box.half.new_tensor((W, H))
    return patch_size / (box.half * wh), (box.centre - box.half + 1) * wh / 2


def box_to_pixels(box: Box, image_size: tuple[int, int]) -> Tensor:
    """(..., 4) ``(x0, y0, x1, y1)`` corners in image pixels (``image_size = (H, W)``)."""
    lo = normalised_to_pixel(box.centre - box.half, image_size)
    hi = normalised_to_pixel(box.centre + box.half, image_size)
    return torch.cat((lo, hi), -1)


def crop(image: Tensor, box: Box, patch_size: int) -> Tensor:
    """Differentiable crop: (N, C, H, W) images, boxes (N, 2) -> (N, C, P, P) patches
    (bilinear; zeros outside the image)."""
    theta = box_to_affine(box).to(image.dtype)
    grid = F.affine_grid(theta, [image.shape[0], 1, patch_size, patch_size], align_corners=False)
    return F.grid_sample(image, grid, align_corners=False)


def uncrop(patch: Tensor, box: Box, image_size: tuple[int, int]) -> Tensor:
    """The inverse transform: (N, C, P, P) patches back at (N, C, H, W), zeros outside the
    box."""
    theta = box_to_inverse_affine(box).to(patch.dtype)
    grid = F.affine_grid(theta, [patch.shape[0], 1, *image_size], align_corners=False)
    return F.grid_sample(patch, grid, align_corners=False)


def composite(mask: Tensor, rgb: Tensor, background: Tensor) -> Tensor:
    """``I~ = M D + (1 - M) B``: mask (..., 1, H, W), rgb and background (..., 3, H, W)."""
    return mask * rgb + (1 - mask) * background


# ------------------------------------------------------------------------- multi-view geometry


def patch_cameras(K: Tensor, box: Box, image_size: tuple[int, int], patch_size: int) -> Tensor:
    """(..., 3, 3) each patch's intrinsics ``K_p`` (:func:`kp3d.geometry.crop_intrinsics`) from
    the image's ``K`` (..., 3, 3) and its box (..., 2) (``image_size = (H, W)``)."""
    scale, corner = box_to_crop(box, image_size, patch_size)
    return crop_intrinsics(K, scale, corner)


def triangulate_patch_keypoints(
    kp: Tensor, K_p: Tensor, E: Tensor, patch_size: int, *, weights: Tensor | None = None
) -> Tensor:
    """World points from keypoints in V patches.

    Args:
        kp: (B, V, N, 2) normalised patch coordinates.
        K_p: (B, V, 3, 3) patch intrinsics; E: (B, V, 3, 4) world-to-camera.
        weights: (B, V, N) DLT weights (0 drops an observation).

    Returns:
        (B, N, 3) world points (:func:`kp3d.geometry.triangulate_dlt` on patch pixels).
    """
    pixels = normalised_to_pixel(kp, (patch_size, patch_size))
    return triangulate_dlt(pixels, projection_matrix(K_p, E), weights=weights)


def reproject_patch_keypoints(X: Tensor, K_p: Tensor, E: Tensor, patch_size: int) -> Tensor:
    """World points X (B, N, 3) into every patch: (B, V, N, 2) normalised patch coordinates,
    ``Pi_p(X) = K_p (R X + t)`` (depth floored at :data:`MIN_DEPTH`, clamped to
    +-:data:`REPROJECTION_CLAMP`)."""
    cam = transform_points(X[:, None], E[..., :3], E[..., 3])
    uv = project_pinhole(cam, K_p, min_depth=MIN_DEPTH)
    xy = pixel_to_normalised(uv, (patch_size, patch_size))
    return xy.clamp(-REPROJECTION_CLAMP, REPROJECTION_CLAMP)


# --------------------------------------------------------------------------------- losses


def coverage_loss(prob: Tensor, mask: Tensor) -> Tensor:
    """``mean |1 - sum_p H_norm(p) M(p)|``: each keypoint's heatmap mass on the foreground.

    Args:
        prob: (..., N, h, w) normalised heatmaps (each sums to 1).
        mask: (..., 1, h, w) foreground in [0, 1], at the heatmaps' resolution.
    """
    return (1 - (prob * mask).sum((-2, -1))).abs().mean()


def centering_loss(centre: Tensor, kp: Tensor) -> Tensor:
    """``mean ||u - mean_k kp_k||``: the box centre (..., 2) against the mean of the keypoints
    (..., N, 2), both in normalised image coordinates."""
    return torch.linalg.vector_norm(centre - kp.mean(-2), dim=-1).mean()


def perceptual_distance(features: list[Tensor], target: list[Tensor]) -> Tensor:
    """``sum_l mean ||f_l - g_l||^2`` over feature maps (N, C_l, h_l, w_l), each unit-normalised
    over its channels first (as LPIPS): a scale-free distance per tap, in [0, 4] per position,
    whatever the magnitudes of the network's layers."""
    total = torch.zeros((), device=features[0].device)
    for f, g in zip(features, target, strict=True):
        d = F.normalize(f.float(), dim=1) - F.normalize(g.float(), dim=1)
        total = total + d.square().sum(1).mean()
    return total


# ------------------------------------------------------------------------------- networks


def _block(c_in: int, c_out: int, *, stride: int = 1) -> list[nn.Module]:
    k = 4 if stride == 2 else 3
    return [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=1, bias=False),
        nn.GroupNorm(c_out // 4, c_out),
        nn.LeakyReLU(0.2),
    ]


class Detector(nn.Module):
    """S: a down-sampled view (N, 3, s, s) -> :class:`Box`. The centre is the soft-argmax of a
    one-channel score map at 1/4 of the view, so it moves with what the map responds to (a head
    on features pooled over the view keeps little of where a small subject is); the half side
    comes from the pooled features, between ``min_box`` and ``max_box`` by a sigmoid. Both
    heads start at zero: the box starts at the image centre, half side mid-range."""

    def __init__(self, *, width: int, min_box: float, max_box: float) -> None:
        super().__init__()
        layers = _block(3, width, stride=2) + _block(width, 2 * width, stride=2)
        self.trunk = nn.Sequential(*layers, *_block(2 * width, 2 * width))
        self.score = nn.Conv2d(2 * width, 1, 1)
        self.head = nn.Linear(2 * width, 2)
        for layer in (self.score, self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.min_box, self.max_box = min_box, max_box

    def forward(self, x: Tensor) -> Box:
        h = self.trunk(x)
        centre = soft_argmax(self.score(h).float()).kp[:, 0]
        o = self.head(h.mean((-2, -1))).float()
        return Box(centre, self.min_box + (self.max_box - self.min_box) * torch.sigmoid(o))


class Encoder(nn.Module):
    """E: patch (N, 3, P, P) in [0, 1] -> features Xi (N, 4 width, P/4, P/4)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            *_block(3, w),
            *_block(w, 2 * w, stride=2),
            *_block(2 * w, 2 * w),
            *_block(2 * w, 4 * w, stride=2),
            *_block(4 * w, 4 * w),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


class ImageDecoder(nn.Module):
    """D: features Xi -> RGB patch D_p (N, 3, P, P) in [0, 1] and mask M_p (N, 1, P, P)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_block(4 * w, 2 * w),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_block(2 * w, w),
            nn.Conv2d(w, 4, 3, padding=1),
        )

    def forward(self, xi: Tensor) -> tuple[Tensor, Tensor]:
        o = torch.sigmoid(self.net(xi).float())
        return o[:, :3], o[:, 3:]


class KeypointEncoder(nn.Module):
    """psi: features Xi -> N heatmap logits (N, N_kp, P/2, P/2)."""

    def __init__(self, width: int, n_keypoints: int) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            *_block(4 * w, 4 * w),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            *_block(4 * w, 2 * w),
            nn.Conv2d(2 * w, n_keypoints, 1),
        )

    def forward(self, xi: Tensor) -> Tensor:
        return self.net(xi)


class MaskDecoder(nn.Module):
    """phi: N Gaussian heatmaps (N, N_kp, P, P) -> mask M~_p (N, 1, P, P), three 5 x 5
    convolutions."""

    def __init__(self, width: int, n_keypoints: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(n_keypoints, width, 5, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 5, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 1, 5, padding=2),
        )

    def forward(self, heatmaps: Tensor) -> Tensor:
        return torch.sigmoid(self.net(heatmaps).float())


# ---------------------------------------------------------------------------------- model


class Views(NamedTuple):
    """Everything one pass computes for B moments of V views (patches are P x P, heatmaps
    h x h, images H x W)."""

    box: Box
    """(B, V, 2) centres and half sides, normalised image units."""
    patch: Tensor
    """(B, V, 3, P, P) the cropped views."""
    rgb_patch: Tensor
    """(B, V, 3, P, P) D_p."""
    mask_patch: Tensor
    """(B, V, 1, P, P) M_p."""
    rgb: Tensor
    """(B, V, 3, H, W) D at full resolution."""
    mask: Tensor
    """(B, V, 1, H, W) M at full resolution (0 outside the box)."""
    prob: Tensor
    """(B, V, N, h, h) normalised heatmaps."""
    kp_patch: Tensor
    """(B, V, N, 2) soft-argmax keypoints, normalised patch coordinates."""
    weights: Tensor
    """(B, V, N) triangulation weights (0 for views left out)."""
    K_p: Tensor
    """(B, V, 3, 3) patch intrinsics."""
    world: Tensor
    """(B, N, 3) triangulated keypoints, world frame."""
    reprojected: Tensor
    """(B, V, N, 2) reprojections, normalised patch coordinates."""
    mask_keypoints: Tensor
    """(B, V, 1, P, P) M~_p from the reprojections."""


def _patch_to_image(kp: Tensor, box: Box, image_size: tuple[int, int]) -> Tensor:
    """Normalised patch coordinates (B, V, N, 2) -> image pixels."""
    return normalised_to_pixel(kp * box.half[..., None, :] + box.centre[..., None, :], image_size)


class Triangulation(MethodModel):
    """Detector S, encoder E, image decoder D, keypoint encoder psi, mask decoder phi (see the
    module doc)."""

    diagnose_samples = 16

    def __init__(self, config: TriangulationConfig) -> None:
        super().__init__()
        self.config = c = config
        self.detector = Detector(width=c.width // 2, min_box=c.min_box, max_box=c.max_box)
        self.encoder = Encoder(c.width)
        self.decoder = ImageDecoder(c.width)
        self.keypoint_encoder = KeypointEncoder(c.width, c.n_keypoints)
        self.mask_decoder = MaskDecoder(c.width, c.n_keypoints)
        self.perceptual = (
            PerceptualLoss(load_efficientnet_lite0().fuse_batchnorm_())
            if c.perceptual == "efficientnet_lite0"
            else None
        )

    # ------------------------------------------------------------------------------------

    def _check(self, batch: Sample, *, background: bool) -> None:
        img = batch.image
        if img is None or img.ndim != 5 or img.shape[1] < 2:
            got = None if img is None else tuple(img.shape)
            raise DataError(
                f"triangulation: needs moments of V >= 2 calibrated views (B, V, 3, H, W), got "
                f"{got}: a multi-view set (kp3d synth ... --rig V, or the real-rig format)"
            )
        s = self.config.image_size
        if img.shape[-2:] != (s, s):
            raise DataError(f"triangulation: views must be {s} x {s}, got {tuple(img.shape[-2:])}")
        if batch.intrinsics is None or batch.extrinsics is None:
            raise DataError("triangulation: the views have no calibration (intrinsics/extrinsics)")
        if background and batch.background is None:
            raise DataError(
                "triangulation: the views have no background images (rig sets give them, or the "
                "per-pixel median of each camera: kp3d.data.background)"
            )

    def _used(self, views: int) -> int:
        return views if self.config.views == 0 else min(self.config.views, views)

    def run_views(self, image: Tensor, K: Tensor, E: Tensor, *, used: int | None = None) -> Views:
        """One pass over moments: ``image`` (B, V, 3, H, W) in [0, 1], ``K`` (B, V, 3, 3),
        ``E`` (B, V, 3, 4); the first ``used`` views (default all) are triangulated."""
        c = self.config
        B, V, _, H, W = image.shape
        size, P = (int(H), int(W)), c.patch_size
        flat = image.flatten(0, 1)
        box = self.detector(F.adaptive_avg_pool2d(flat, c.detector_size))
        patch = crop(flat.float(), box, P)
        xi = self.encoder(patch)
        rgb_patch, mask_patch = self.decoder(xi)
        logits = self.keypoint_encoder(xi).float()
        with torch.autocast(image.device.type, enabled=False):
            rgb, mask = uncrop(torch.cat((rgb_patch, mask_patch), 1), box, size).split((3, 1), 1)
            sa = soft_argmax(logits)
            h = logits.shape[-1]
            spread = expected_variance(sa.prob, mean=sa.kp).sum(-1).clamp_min(0).sqrt()
            weights = (1 / (spread + 2 / h)).detach()

            def views(t: Tensor) -> Tensor:
                return t.unflatten(0, (B, V))

            box = Box(views(box.centre), views(box.half))
            kp_patch, weights = views(sa.kp), views(weights)
            n_used = V if used is None else used
            if n_used < V:
                keep = torch.arange(V, device=image.device) < n_used
                weights = weights * keep[None, :, None]
            K_p = patch_cameras(K.float(), box, size, P)
            world = triangulate_patch_keypoints(kp_patch, K_p, E.float(), P, weights=weights)
            reprojected = reproject_patch_keypoints(world, K_p, E.float(), P)
            gauss = render_gaussian_heatmaps(reprojected, (P, P), sigma=c.heatmap_sigma)
        mask_keypoints = self.mask_decoder(gauss.flatten(0, 1))
        return Views(
            box=box,
            patch=views(patch),
            rgb_patch=views(rgb_patch),
            mask_patch=views(mask_patch),
            rgb=views(rgb),
            mask=views(mask),
            prob=views(sa.prob),
            kp_patch=kp_patch,
            weights=weights,
            K_p=K_p,
            world=world,
            reprojected=reprojected,
            mask_keypoints=views(mask_keypoints),
        )

    def target_mask(self, batch: Sample, out: Views) -> Tensor:
        """(B, V, 1, P, P) what M~_p is fitted to (``target_mask``), detached."""
        c = self.config
        mode = c.target_mask
        if mode == "predicted":
            return out.mask_patch.detach()
        assert batch.image is not None
        if mode == "ground_truth":
            if batch.mask is None:
                raise DataError(
                    "triangulation: target_mask = ground_truth, but the data has no masks"
                )
            full = batch.mask.float()
        else:
            assert batch.background is not None
            diff = (batch.image.float() - batch.background.float()).abs().amax(-3, keepdim=True)
            full = (diff > c.background_threshold).float()
        box = Box(out.box.centre.flatten(0, 1), out.box.half.flatten(0, 1))
        return crop(full.flatten(0, 1), box, c.patch_size).unflatten(0, full.shape[:2]).detach()

    def losses(self, batch: Sample, step: int) -> LossOutput:
        self._check(batch, background=True)
        assert batch.image is not None and batch.background is not None
        assert batch.intrinsics is not None and batch.extrinsics is not None
        V = self._used(int(batch.image.shape[1]))
        batch = batch.replace(
            **{
                f: getattr(batch, f)[:, :V]
                for f in ("image", "background", "intrinsics", "extrinsics", "mask")
                if getattr(batch, f) is not None
            }
        )
        assert batch.image is not None and batch.background is not None
        assert batch.intrinsics is not None and batch.extrinsics is not None
        out = self.run_views(batch.image, batch.intrinsics, batch.extrinsics)
        image = batch.image.float()
        recon = composite(out.mask, out.rgb, batch.background.float())
        losses = {"reconstruction": (recon - image).square().mean()}
        if self.perceptual is not None:
            net = self.perceptual.net
            flat = recon.flatten(0, 1)
            with torch.no_grad():
                wanted = net.features(image.flatten(0, 1))
            got = net.features(flat)
            losses["perceptual"] = perceptual_distance(got, wanted)
        target = self.target_mask(batch, out)
        losses["mask"] = (out.mask_keypoints - target).square().mean()
        h = out.prob.shape[-1]
        m_small = F.adaptive_avg_pool2d(out.mask_patch.flatten(0, 1), h).unflatten(0, (-1, V))
        losses["coverage"] = coverage_loss(out.prob, m_small)
        H, W = image.shape[-2:]
        losses["centering"] = self.centering(out.kp_patch, out.box, (H, W))
        P = self.config.patch_size
        gap = torch.linalg.vector_norm(out.reprojected - out.kp_patch, dim=-1) * (P / 2)
        logs = {
            "box_half": out.box.half.mean().detach(),
            "mask_fraction": out.mask.mean().detach(),
            "reprojection_px": gap.mean().detach(),
        }
        return LossOutput(losses, logs)

    @staticmethod
    def centering(kp_patch: Tensor, box: Box, image_size: tuple[int, int]) -> Tensor:
        """:func:`centering_loss` of the box ``u`` against its keypoints, with ``u`` and the
        keypoints as two estimates of one centre: the box moves to the keypoints' mean (this
        trains S) and the keypoints to the box centre, each with the other held. Where the
        keypoints are mapped out of the box that moves, ``u - mean(u + h kp) = -h mean(kp)``
        and u would get no gradient at all.

        Args:
            kp_patch: (B, V, N, 2) keypoints in normalised patch coordinates.
            box: the boxes, centre and half side (B, V, 2) in normalised image coordinates.
        """
        held = Box(box.centre.detach(), box.half.detach())
        kp = pixel_to_normalised(_patch_to_image(kp_patch, held, image_size), image_size)
        return 0.5 * (centering_loss(box.centre, kp.detach()) + centering_loss(held.centre, kp))

    def loss_weights(self) -> Mapping[str, float]:
        c = self.config
        return {
            "reconstruction": 1.0,
            "perceptual": c.beta_perceptual,
            "mask": c.gamma_mask,
            "coverage": c.delta_coverage,
            "centering": c.eta_centering,
        }

    def param_groups(self) -> list[ParamGroup]:
        """The detector S and the image decoder D at their learning-rate scales, the encoder,
        keypoint encoder and mask decoder at the run's rate."""
        c = self.config
        groups = default_param_groups(self.detector, name="detector", lr_scale=c.lr_scale_detector)
        groups += default_param_groups(self.decoder, name="decoder", lr_scale=c.lr_scale_decoder)
        for name in ("encoder", "keypoint_encoder", "mask_decoder"):
            groups += default_param_groups(getattr(self, name), name=name)
        return groups

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """Per view: ``kp2d`` (B, V, N, 2) image pixels, ``vis`` (B, V, N) the triangulation
        weights, ``mask`` (B, V, 1, H, W) M; per moment: ``kp3d`` (B, N, 3) triangulated, in the
        camera frame of the first view. Extras: ``box`` (B, V, 4) ``(x0, y0, x1, y1)`` pixels,
        ``kp3d_world`` (B, N, 3), ``kp2d_reprojected`` (B, V, N, 2) pixels, ``mask_keypoints``
        (B, V, 1, H, W) M~ at full resolution and, with backgrounds, ``reconstruction``
        (B, V, 3, H, W) I~."""
        self._check(batch, background=False)
        assert batch.image is not None
        assert batch.intrinsics is not None and batch.extrinsics is not None
        V = int(batch.image.shape[1])
        out = self.run_views(batch.image, batch.intrinsics, batch.extrinsics, used=self._used(V))
        H, W = batch.image.shape[-2:]
        size = (int(H), int(W))
        E0 = batch.extrinsics[:, 0].float()
        box_flat = Box(out.box.centre.flatten(0, 1), out.box.half.flatten(0, 1))
        extras = {
            "box": box_to_pixels(out.box, size),
            "kp3d_world": out.world,
            "kp2d_reprojected": _patch_to_image(out.reprojected, out.box, size),
            "mask_keypoints": uncrop(out.mask_keypoints.flatten(0, 1), box_flat, size).unflatten(
                0, (-1, V)
            ),
        }
        if batch.background is not None:
            extras["reconstruction"] = composite(out.mask, out.rgb, batch.background.float())
        return Prediction(
            kp2d=_patch_to_image(out.kp_patch, out.box, size),
            vis=out.weights,
            kp3d=transform_points(out.world, E0[:, :, :3], E0[:, :, 3]),
            mask=out.mask,
            extras=extras,
            image_size=size,
        )

    @torch.no_grad()
    def diagnose(self, batch: Sample) -> Diagnosis:
        """The mean box half side, the spread of the box centres over the moments (image
        pixels, the mean over views and axes of the standard deviation), foreground fraction and
        gap (patch pixels) between the detected and the reprojected keypoints on training
        moments; a warning when the boxes sit at a bound of their range (the detector
        collapsed), when their centres hardly move (below :data:`STILL_BOX_PX`), or when the mask
        is empty or full."""
        c = self.config
        assert batch.image is not None
        assert batch.intrinsics is not None and batch.extrinsics is not None
        V = self._used(int(batch.image.shape[1]))
        out = self.run_views(batch.image[:, :V], batch.intrinsics[:, :V], batch.extrinsics[:, :V])
        half = float(out.box.half.mean())
        fraction = float(out.mask.mean())
        gap = torch.linalg.vector_norm(out.reprojected - out.kp_patch, dim=-1) * (c.patch_size / 2)
        values = {"box_half": half, "mask_fraction": fraction, "reprojection_px": float(gap.mean())}
        warnings = []
        if out.box.centre.shape[0] > 1:
            centre_px = normalised_to_pixel(out.box.centre, tuple(batch.image.shape[-2:]))
            spread = float(centre_px.std(0).mean())
            values["box_centre_spread_px"] = spread
            if spread < STILL_BOX_PX:
                warnings.append(
                    f"triangulation: the box centres hardly move between moments (spread "
                    f"{spread:.2f} px): the detector does not follow the subject"
                )
        span = c.max_box - c.min_box
        if half < c.min_box + 0.01 * span or half > c.max_box - 0.01 * span:
            warnings.append(
                f"triangulation: the detector's boxes sit at a bound of [{c.min_box}, "
                f"{c.max_box}] (mean half side {half:.3f}): it has collapsed"
            )
        if not 0.005 < fraction < 0.995:
            warnings.append(
                f"triangulation: the foreground mask covers {fraction:.1%} of the views"
            )
        return Diagnosis(values, warnings)


def build(config: TriangulationConfig) -> Triangulation:
    return Triangulation(config)
