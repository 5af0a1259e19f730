"""Unsup3d (Wu, Rupprecht & Vedaldi, "Unsupervised Learning of Probably Symmetric Deformable 3D
Objects from Images in the Wild", CVPR 2020), trained on the CPU.

From one image I, five networks predict a canonical depth map d (D), a canonical albedo a (A),
a light l = (k_s, k_d, direction) (L), a viewpoint w in R^6 (V) and confidence maps sigma (C).
The reconstruction is ``I_hat = Pi(Lambda(a, d, l), d, w)``: Lambertian shading of the canonical
surface (:func:`kp3d.nn.depth_render.lambertian_shading`, normals by
:func:`kp3d.metrics.surface.depth_to_normals`), warped to the viewpoint through the depth map
(:func:`kp3d.nn.depth_render.warp_canonical`, pure PyTorch). The symmetry prior: the same with
``flip(a)`` and ``flip(d)`` gives ``I_hat'``, also scored. The losses, per reconstruction,

- photometric: the Laplacian negative log-likelihood
  ``mean(sqrt(2) |I_hat - I| / sigma + ln(sqrt(2) sigma))`` over the pixels both
  reconstructions cover;
- perceptual: the Gaussian negative log-likelihood ``mean((f_hat - f)^2 / (2 sigma_f^2) + ln
  sigma_f)`` of frozen ImageNet features (EfficientNet-Lite0 block 2 here, VGG16 relu3_3 in
  the paper) at 1/4 resolution, with its own confidence map;

weighted ``1`` and ``lambda_flip`` (flipped), times ``lambda_perceptual`` for the perceptual
ones. Without confidence, sigma = 1 and the constants drop: plain L1 and half the squared error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kp3d.data.schema import Sample
from kp3d.losses.perceptual import PerceptualLoss
from kp3d.methods.base import Diagnosis, LossOutput, MethodModel
from kp3d.methods.prediction import Prediction
from kp3d.methods.unsup3d.config import Unsup3DConfig
from kp3d.metrics.surface import depth_to_normals, normal_roughness, unsup3d_intrinsics
from kp3d.nn.depth_render import Warp, euler_to_matrix, lambertian_shading, warp_canonical
from kp3d.nn.perceptual import load_efficientnet_lite0

FEATURE_STRIDE = 4
"""The perceptual features (EfficientNet-Lite0 block 2) and their confidence map are at 1/4."""

BORDER_COLUMNS = 2
"""Columns on each side of the canonical depth clamped to ``border_depth`` (Unsup3d's)."""

ROUGH_DEPTH_DEG = 20.0
"""A canonical depth whose neighbouring normals are this far apart on average (degrees) is
flagged by :meth:`Unsup3D.diagnose`: a smooth surface at 64 x 64 turns a few degrees a pixel,
while pixel-scale ripples, which shade the image without describing a surface, give tens
(docs/results.md, "The depth shades the image")."""
STILL_VIEW_DEG = 1.0
"""A predicted yaw that varies less than this over the training images (standard deviation,
degrees) is flagged by :meth:`Unsup3D.diagnose`."""

NORMAL_EPS = 1e-12
"""Added to the normals' norm: Unsup3d's 1e-7 shortens near-frontal normals (see
:func:`kp3d.metrics.surface.depth_to_normals`), which the shading does not need."""


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(c // 4, c)  # 4 channels a group, as Unsup3d's GroupNorm(16, 64)


def _channels(width: int, level: int) -> int:
    """Channels at the level-th halving of the image (0 = 1/2): doubling, capped at 8 width."""
    return width * 2 ** min(level, 3)


def _levels(size: int) -> int:
    """Stride-2 convolutions from ``size`` down to 4 x 4."""
    return int(math.log2(size)) - 2


def _encoder(size: int, width: int, *, norm: bool, slope: float) -> tuple[list[nn.Module], int]:
    """Unsup3d's downsampling: 4x4 stride-2 convolutions to 4 x 4 (GroupNorm on all but the
    last when ``norm``), then a 4x4 convolution to 1 x 1. Returns the layers and the channels."""
    layers: list[nn.Module] = []
    c_in = 3
    n = _levels(size)
    for i in range(n):
        c = _channels(width, i)
        layers.append(nn.Conv2d(c_in, c, 4, stride=2, padding=1, bias=False))
        if norm and i < n - 1:
            layers.append(_gn(c))
        layers.append(nn.LeakyReLU(slope) if slope else nn.ReLU())
        c_in = c
    return layers, c_in


class VectorEncoder(nn.Module):
    """Image (B, 3, S, S) in [-1, 1] -> (B, c_out) in (-1, 1): Unsup3d's ``Encoder`` (L, V)."""

    def __init__(self, c_out: int, *, size: int, width: int) -> None:
        super().__init__()
        layers, c = _encoder(size, width, norm=False, slope=0.0)
        layers += [
            nn.Conv2d(c, c, 4, bias=False),
            nn.ReLU(),
            nn.Conv2d(c, c_out, 1, bias=False),
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class EncoderDecoder(nn.Module):
    """Image (B, 3, S, S) -> map (B, c_out, S, S): Unsup3d's ``EDDeconv`` (D, A) with a
    4 x width bottleneck, transposed convolutions up to S/2, nearest upsampling to S."""

    def __init__(self, c_out: int, *, size: int, width: int, tanh: bool) -> None:
        super().__init__()
        layers, c = _encoder(size, width, norm=True, slope=0.2)
        z = 4 * width
        layers += [nn.Conv2d(c, z, 4, bias=False), nn.ReLU()]
        layers += [nn.ConvTranspose2d(z, c, 4, bias=False), nn.ReLU()]
        layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.ReLU()]
        for level in range(_levels(size) - 2, -1, -1):  # 4 -> S/2
            c_next = _channels(width, level)
            layers += [nn.ConvTranspose2d(c, c_next, 4, stride=2, padding=1, bias=False)]
            layers += [_gn(c_next), nn.ReLU()]
            layers += [nn.Conv2d(c_next, c_next, 3, padding=1, bias=False), _gn(c_next), nn.ReLU()]
            c = c_next
        layers += [nn.Upsample(scale_factor=2, mode="nearest")]
        layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), _gn(c), nn.ReLU()]
        layers += [nn.Conv2d(c, c, 5, padding=2, bias=False), _gn(c), nn.ReLU()]
        layers += [nn.Conv2d(c, c_out, 5, padding=2, bias=False)]
        if tanh:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConfidenceNet(nn.Module):
    """Image (B, 3, S, S) -> positive sigma maps (B, 2, S, S) and, with ``features``,
    (B, 2, S/4, S/4) (else None); channel 0 for the reconstruction, 1 for the flipped one:
    Unsup3d's ``ConfNet``."""

    def __init__(self, *, size: int, width: int, features: bool = True) -> None:
        super().__init__()
        layers, c = _encoder(size, width, norm=True, slope=0.2)
        z = 4 * width
        layers += [nn.Conv2d(c, z, 4, bias=False), nn.ReLU()]
        layers += [nn.ConvTranspose2d(z, c, 4, bias=False), nn.ReLU()]
        levels = _levels(size)
        for level in range(levels - 2, 0, -1):  # 4 -> S/4
            c_next = _channels(width, level)
            layers += [nn.ConvTranspose2d(c, c_next, 4, stride=2, padding=1, bias=False)]
            layers += [_gn(c_next), nn.ReLU()]
            c = c_next
        self.trunk = nn.Sequential(*layers)
        self.feature_head = (
            nn.Sequential(nn.Conv2d(c, 2, 3, padding=1, bias=False), nn.Softplus())
            if features
            else None
        )
        self.image_head = nn.Sequential(
            nn.ConvTranspose2d(c, width, 4, stride=2, padding=1, bias=False),
            _gn(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1, bias=False),
            _gn(width),
            nn.ReLU(),
            nn.Conv2d(width, 2, 5, padding=2, bias=False),
            nn.Softplus(),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.trunk(x)
        feature = None if self.feature_head is None else self.feature_head(h)
        return self.image_head(h), feature


class Decomposition(NamedTuple):
    """The networks' outputs for a batch of B images (2B along the batch with the flip: the
    flipped copies second)."""

    depth: Tensor
    """(B', 1, S, S) canonical depth d."""
    albedo: Tensor
    """(B', 3, S, S) canonical albedo a in [0, 1]."""
    light: Tensor
    """(B', 5) ambient k_s, diffuse k_d, unit direction l."""
    angles: Tensor
    """(B', 3) viewpoint rotation angles (x, y, z), radians."""
    translation: Tensor
    """(B', 3) viewpoint translation."""


class Unsup3D(MethodModel):
    """Depth D, albedo A, light L, viewpoint V and confidence C networks (see the module doc)."""

    diagnose_samples = 64

    def __init__(self, config: Unsup3DConfig) -> None:
        super().__init__()
        self.config = c = config
        s, w = c.image_size, c.width
        self.net_depth = EncoderDecoder(1, size=s, width=w, tanh=False)
        # The depth starts flat. PyTorch's default start is rough (neighbouring depths 10% of
        # the range apart), and a rough map seen from the side costs the rasteriser tens of
        # times a smooth one (docs/results.md, "The view is what is missing").
        nn.init.zeros_(self.net_depth.net[-1].weight)
        self.net_albedo = EncoderDecoder(3, size=s, width=w, tanh=True)
        self.net_light = VectorEncoder(4, size=s, width=w // 2)
        self.net_view = VectorEncoder(6, size=s, width=w // 2)
        self.net_confidence = (
            ConfidenceNet(size=s, width=w, features=c.perceptual != "none")
            if c.use_confidence
            else None
        )
        self.perceptual = (
            PerceptualLoss(load_efficientnet_lite0(taps=(2,)).fuse_batchnorm_())
            if c.perceptual == "efficientnet_lite0"
            else None
        )
        self.register_buffer("K", unsup3d_intrinsics(s, s, fov_deg=c.fov_deg), persistent=False)

    # ----------------------------------------------------------------------------------------

    def decompose(self, image: Tensor, *, flip: bool) -> Decomposition:
        """The networks on images (B, 3, S, S) in [0, 1], in float32; with ``flip``, the
        flipped depth and albedo appended along the batch (light and view repeated)."""
        c = self.config
        if image.shape[-2:] != (c.image_size, c.image_size):
            raise ValueError(
                f"unsup3d: images must be {c.image_size} x {c.image_size}, got "
                f"{tuple(image.shape[-2:])}"
            )
        x = image * 2 - 1
        raw = self.net_depth(x).float()
        d = torch.tanh(raw - raw.mean((2, 3), keepdim=True))
        d = (1 + d) / 2 * c.max_depth + (1 - d) / 2 * c.min_depth
        border = torch.zeros_like(d[:1, :1, :1], dtype=torch.bool).expand_as(d).clone()
        border[..., :BORDER_COLUMNS] = border[..., -BORDER_COLUMNS:] = True
        d = torch.where(border, torch.full_like(d, c.border_depth), d)
        albedo = self.net_albedo(x).float() / 2 + 0.5
        light = self.net_light(x).float()
        ambient, diffuse = (1 + light[:, :1]) / 2, (1 + light[:, 1:2]) / 2
        direction = F.normalize(torch.cat((light[:, 2:], torch.ones_like(light[:, :1])), 1), dim=1)
        view = self.net_view(x).float()
        angles = view[:, :3] * math.radians(c.max_rotation_deg)
        translation = view[:, 3:] * c.max_translation
        light = torch.cat((ambient, diffuse, direction), 1)
        if flip:
            d = torch.cat((d, d.flip(-1)))
            albedo = torch.cat((albedo, albedo.flip(-1)))
            light, angles, translation = (
                light.repeat(2, 1),
                angles.repeat(2, 1),
                translation.repeat(2, 1),
            )
        return Decomposition(d, albedo, light, angles, translation)

    def canonical_image(self, parts: Decomposition) -> tuple[Tensor, Tensor]:
        """Shaded canonical image ``a * (k_s + k_d max(0, <n, l>))`` (B, 3, S, S) and the
        canonical normals (B, 3, S, S)."""
        normals = depth_to_normals(parts.depth, self.K, eps=NORMAL_EPS)
        light = parts.light
        shading = lambertian_shading(normals, light[:, 2:], light[:, 0], light[:, 1])
        return parts.albedo * shading, normals

    def _render(self, parts: Decomposition, canonical: Tensor) -> Warp:
        c = self.config
        margin = (c.max_depth - c.min_depth) / 2
        return warp_canonical(
            canonical,
            parts.depth,
            euler_to_matrix(parts.angles),
            parts.translation,
            self.K,
            centre_depth=(c.min_depth + c.max_depth) / 2,
            background=c.max_depth + margin,
        )

    # ----------------------------------------------------------------------------------------

    def losses(self, batch: Sample, step: int) -> LossOutput:
        assert batch.image is not None
        c = self.config
        image = batch.image
        B = image.shape[0]
        parts = self.decompose(image, flip=c.use_flip)
        sigma_img = sigma_feat = None
        if self.net_confidence is not None:
            s_img, s_feat = self.net_confidence(image * 2 - 1)
            sigma_img = s_img.float()
            sigma_feat = None if s_feat is None else s_feat.float()
        with torch.autocast(image.device.type, enabled=False):
            canonical, _ = self.canonical_image(parts)
            warp = self._render(parts, canonical)
        mask = warp.mask[:B]
        if c.use_flip:
            mask = mask & warp.mask[B:]
        mask = mask.float().detach()
        target = image.float()
        losses: dict[str, Tensor] = {}
        names = [("", 0)] + ([("_flip", 1)] if c.use_flip else [])
        feats_target = None
        if self.perceptual is not None:
            with torch.no_grad():
                feats_target = self.perceptual.net.features(target)[0].float()
        for suffix, i in names:
            recon = warp.image[i * B : (i + 1) * B]
            sigma = None if sigma_img is None else sigma_img[:, i : i + 1]
            losses["photometric" + suffix] = laplacian_nll(recon, target, mask, sigma)
            if self.perceptual is not None:
                assert feats_target is not None
                feats = self.perceptual.net.features(recon)[0].float()
                sf = None if sigma_feat is None else sigma_feat[:, i : i + 1]
                losses["perceptual" + suffix] = gaussian_nll(feats, feats_target, mask, sf)
        logs = {"coverage": mask.mean().detach()}
        return LossOutput(losses, logs)

    def loss_weights(self) -> Mapping[str, float]:
        c = self.config
        return {
            "photometric": 1.0,
            "photometric_flip": c.lambda_flip,
            "perceptual": c.lambda_perceptual,
            "perceptual_flip": c.lambda_perceptual * c.lambda_flip,
        }

    @torch.no_grad()
    def diagnose(self, batch: Sample) -> Diagnosis:
        """On training images: ``depth_roughness_deg``, the :func:`normal_roughness` of the
        canonical depth's normals inside its clamped border, and ``view_spread_deg``, the
        standard deviations of the predicted pitch, yaw and roll. A warning when the depth is
        rough (above :data:`ROUGH_DEPTH_DEG`) or the yaw nearly the same for every image
        (below :data:`STILL_VIEW_DEG`)."""
        assert batch.image is not None
        parts = self.decompose(batch.image, flip=False)
        with torch.autocast(batch.image.device.type, enabled=False):
            _, normals = self.canonical_image(parts)
        # The clamped border (and the normals next to it) and the normals' one-pixel frame are
        # not the surface.
        inside = torch.zeros_like(parts.depth, dtype=torch.bool)
        inside[..., 1:-1, BORDER_COLUMNS + 1 : -(BORDER_COLUMNS + 1)] = True
        roughness = float(normal_roughness(normals, inside))
        B = parts.angles.shape[0]
        spread = torch.rad2deg(parts.angles).std(0) if B > 1 else torch.zeros(3)
        values = {"depth_roughness_deg": roughness, "view_spread_deg": spread.tolist()}
        warnings = []
        if roughness > ROUGH_DEPTH_DEG:
            warnings.append(
                f"unsup3d: the canonical depth is rough: neighbouring normals are {roughness:.0f} "
                "degrees apart on average, so its ripples shade the images instead of shaping them"
            )
        if B > 1 and float(spread[1]) < STILL_VIEW_DEG:
            warnings.append(
                f"unsup3d: the viewpoint network gives every image nearly the same yaw (spread "
                f"{float(spread[1]):.2f} degrees); if the images' views differ, it has not learned them"
            )
        return Diagnosis(values, warnings)

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """The input view's ``depth`` (B, 1, S, S; ``max_depth`` + half the depth range where
        the surface does not cover a pixel), ``normals`` from it, the ``albedo`` seen in the
        input view, the rendered-pixel ``mask`` and the rotation ``R`` (canonical to camera);
        extras ``canonical_depth``, ``canonical_albedo``, ``canonical_image`` (shaded),
        ``reconstruction``, ``light`` (B, 5: ambient, diffuse, unit direction), ``view``
        (B, 6: rotation angles in radians, translation) and ``intrinsics`` (B, 3, 3: the pinhole
        camera of every map, in its pixels; with ``depth`` and ``mask`` what
        :func:`kp3d.geometry.lift_points` needs to lift 2D points)."""
        assert batch.image is not None
        image = batch.image
        parts = self.decompose(image, flip=False)
        with torch.autocast(image.device.type, enabled=False):
            canonical, _ = self.canonical_image(parts)
            warp = self._render(parts, canonical)
            albedo = F.grid_sample(parts.albedo, warp.grid, align_corners=False) * warp.mask
            normals = depth_to_normals(warp.depth, self.K, eps=NORMAL_EPS)
        H, W = image.shape[-2:]
        return Prediction(
            depth=warp.depth,
            normals=normals,
            albedo=albedo,
            mask=warp.mask.float(),
            R=euler_to_matrix(parts.angles),
            extras={
                "canonical_depth": parts.depth,
                "canonical_albedo": parts.albedo,
                "canonical_image": canonical,
                "reconstruction": warp.image,
                "light": parts.light,
                "view": torch.cat((parts.angles, parts.translation), 1),
                "intrinsics": self.K.expand(image.shape[0], 3, 3).clone(),
            },
            image_size=(int(H), int(W)),
        )


def _masked_mean(loss: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, C, h, w) ``loss`` over a (B, 1, h, w) weight map (all channels)."""
    m = mask.expand_as(loss)
    return (loss * m).sum() / m.sum().clamp_min(1e-6)


def laplacian_nll(pred: Tensor, target: Tensor, mask: Tensor, sigma: Tensor | None) -> Tensor:
    """``mean(sqrt(2) |pred - target| / sigma + ln(sqrt(2) sigma))`` over ``mask``: the
    negative log-likelihood of a Laplace distribution of scale ``sigma / sqrt(2)``; the plain
    masked L1 without ``sigma``.

    Args:
        pred, target: (B, C, H, W); mask: (B, 1, H, W) weights; sigma: (B, 1, H, W) > 0.
    """
    l1 = (pred - target).abs()
    if sigma is None:
        return _masked_mean(l1, mask)
    sigma = sigma + 1e-7
    return _masked_mean(math.sqrt(2) * l1 / sigma + torch.log(math.sqrt(2) * sigma), mask)


def gaussian_nll(pred: Tensor, target: Tensor, mask: Tensor, sigma: Tensor | None) -> Tensor:
    """``mean((pred - target)^2 / (2 sigma^2) + ln sigma)`` over ``mask`` pooled to the
    features' size (Unsup3d's perceptual term); half the masked squared error without
    ``sigma``.

    Args:
        pred, target: (B, C, h, w) features; mask: (B, 1, H, W) weights at image resolution;
        sigma: (B, 1, h', w') > 0, resized to (h, w) if it differs.
    """
    h, w = pred.shape[-2:]
    mask = F.adaptive_avg_pool2d(mask, (h, w))
    sq = (pred - target).square()
    if sigma is None:
        return _masked_mean(sq / 2, mask)
    if sigma.shape[-2:] != (h, w):
        sigma = F.interpolate(sigma, size=(h, w), mode="bilinear", align_corners=False)
    sigma = sigma + 1e-7
    return _masked_mean(sq / (2 * sigma.square()) + torch.log(sigma), mask)


def build(config: Unsup3DConfig) -> Unsup3D:
    return Unsup3D(config)
