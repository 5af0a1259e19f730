"""Augmentations of a training batch: photometric jitter, scale and translation jitter, random
backgrounds and horizontal flips.

Every function is pure (it returns a new :class:`~kp3d.data.schema.Sample`, the input is left
as it is), batched (one draw per sample of a batch ``(B, C, H, W)``, images in [0, 1]) and draws
its randomness from ``generator`` (torch's global generator when None), so that one seed gives
one result. Random draws are made on the generator's device and then moved to the batch's.

Geometric changes move every pixel-frame field with the pixels, through the conventions of
:mod:`kp3d.geometry` (continuous pixel coordinates, ``align_corners=False``):

=============  ===========================================================================
field          scale / translation jitter                horizontal flip
=============  ===========================================================================
image, mask,   resampled (bilinear; depth nearest, so    mirrored (exact)
background,    that no depth between a surface and the
depth          empty background is invented)
kp2d           ``u' = z u + b`` (the same map)           ``u' = W - u``
intrinsics     focal lengths and skew times z, the       ``cx' = W - cx``, skew negated
               principal point mapped like a pixel
ortho          ``s' = z s``, ``(tx, ty)`` mapped         ``tx' = W - tx``
kp3d,          unchanged (the camera frame is the same;  x negated: the image of the mirrored
extrinsics     only the image is cropped)                scene, ``R' = D R D``, ``t' = D t``
                                                         with ``D = diag(-1, 1, 1)``
=============  ===========================================================================

``vis`` is kept: a keypoint moved out of the image keeps its (outside) coordinates.

Landmark identities under a flip: keypoint k stays keypoint k (the same physical point, now
mirrored), so a face's left-eye landmark lies on the image's other side; no left/right label
swap is made unless a ``permutation`` is passed to :func:`flip_horizontal`. For unsupervised
keypoint discovery the labels are used only at evaluation, and augmentation applies to training
batches only, so this matters only to methods trained with labels.

This is AutoLink's training augmentation (He, Wandt & Rhodin, NeurIPS 2022: horizontal flips)
widened with the photometric and geometric jitter and background replacement common in
unsupervised keypoint learning (e.g. Jakab et al. 2018; Thewlis et al. 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.geometry import axis_angle_to_matrix, normalised_to_pixel, pixel_to_normalised

Padding = Literal["border", "zeros", "reflection"]
PADDING_CHOICES: tuple[str, ...] = ("border", "zeros", "reflection")
BackgroundKind = Literal["batch", "colour", "noise"]
BACKGROUND_CHOICES: tuple[str, ...] = ("batch", "colour", "noise")

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights, as torchvision's grayscale."""


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation of a training batch; 0 disables it (all 0 = off)."""

    brightness: float = 0.0
    """Brightness jitter: every pixel times a factor drawn uniformly in
    [max(0, 1 - brightness), 1 + brightness]."""
    contrast: float = 0.0
    """Contrast jitter: the image's departure from its mean grey level times a factor drawn in
    [max(0, 1 - contrast), 1 + contrast]."""
    saturation: float = 0.0
    """Saturation jitter: each pixel's departure from its grey level times a factor drawn in
    [max(0, 1 - saturation), 1 + saturation]."""
    hue: float = 0.0
    """Hue jitter: a rotation of the colour cube about its grey axis by an angle drawn in
    [-hue, hue] turns (at most 0.5)."""
    gamma: float = 0.0
    """Gamma jitter: pixels raised to a power drawn log-uniformly in [exp(-gamma), exp(gamma)]."""
    scale: float = 0.0
    """Scale jitter: the image zoomed about its centre by a factor drawn log-uniformly in
    [1 / (1 + scale), 1 + scale] (above 1: zoomed in)."""
    translate: float = 0.0
    """Translation jitter: the image shifted by up to this fraction of its width (x) and height
    (y), drawn uniformly per axis."""
    padding: Padding = "border"
    """What fills the image where scale or translation jitter looks outside it: border
    (replicated edge pixels), zeros (black; masks and depth 0, so a random background fills it)
    or reflection."""
    background: float = 0.0
    """Probability that a sample with a foreground mask gets a new background (samples of a
    batch without masks are left as they are)."""
    backgrounds: tuple[BackgroundKind, ...] = BACKGROUND_CHOICES
    """Kinds of new background, one drawn uniformly per sample: batch (another image of the
    batch), colour (one random colour) or noise (a smooth random colour texture)."""
    flip: float = 0.0
    """Probability of a horizontal flip (AutoLink's augmentation); keypoint identities are kept
    (keypoint k stays keypoint k, mirrored)."""

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation", "gamma", "scale", "translate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}: must be a finite number >= 0, got {value}")
        if not 0 <= self.hue <= 0.5:
            raise ConfigError(f"hue: must be in [0, 0.5] turns, got {self.hue}")
        for name in ("background", "flip"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"{name}: a probability, must be in [0, 1], got {value}")
        if self.padding not in PADDING_CHOICES:
            raise ConfigError(
                f"padding: got {self.padding!r}; valid choices: {', '.join(PADDING_CHOICES)}"
            )
        bad = [k for k in self.backgrounds if k not in BACKGROUND_CHOICES]
        if bad or not self.backgrounds:
            raise ConfigError(
                f"backgrounds: need one or more of {', '.join(BACKGROUND_CHOICES)}, "
                f"got {list(self.backgrounds)}"
            )

    @property
    def enabled(self) -> bool:
        """Whether any augmentation has a strength above 0."""
        return any(
            getattr(self, f.name) > 0
            for f in fields(self)
            if f.name not in ("padding", "backgrounds")
        )


# ----------------------------------------------------------------------------- helpers


def _check_batch(name: str, batch: Sample) -> Tensor:
    image = batch.image
    if image is None:
        raise ValueError(f"{name}: the batch has no images")
    if image.ndim != 4 or image.shape[1] not in (1, 3) or not image.is_floating_point():
        raise ValueError(
            f"{name}: images must be floating (B, C, H, W) with C = 1 or 3 (single-view "
            f"batches), got {image.dtype} of shape {tuple(image.shape)}"
        )
    B, _, H, W = image.shape
    for field, want in (("mask", (B, 1, H, W)), ("depth", (B, 1, H, W))):
        value = getattr(batch, field)
        if value is not None and tuple(value.shape) != want:
            raise ValueError(f"{name}: {field} must be {want}, got {tuple(value.shape)}")
    if batch.background is not None and batch.background.shape != image.shape:
        raise ValueError(
            f"{name}: background must be {tuple(image.shape)}, got {tuple(batch.background.shape)}"
        )
    if batch.kp2d is not None and (
        batch.kp2d.ndim != 3 or batch.kp2d.shape[0] != B or batch.kp2d.shape[-1] != 2
    ):
        raise ValueError(f"{name}: kp2d must be ({B}, K, 2), got {tuple(batch.kp2d.shape)}")
    if batch.intrinsics is not None and tuple(batch.intrinsics.shape) != (B, 3, 3):
        raise ValueError(
            f"{name}: intrinsics must be ({B}, 3, 3), got {tuple(batch.intrinsics.shape)}"
        )
    return image


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) draws on the generator's device, returned on ``like``'s device/dtype."""
    device = generator.device if generator is not None else like.device
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return u.to(like.device, like.dtype)


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    return low + (high - low) * _rand((n,), generator, like)


def _bcast(per_sample: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast over ``x``."""
    return per_sample.reshape(-1, *([1] * (x.ndim - 1)))


def grey(image: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with :data:`GREY_WEIGHTS`; one channel is returned
    as it is."""
    if image.shape[-3] == 1:
        return image
    w = image.new_tensor(GREY_WEIGHTS)
    return (image * w[:, None, None]).sum(-3, keepdim=True)


# ----------------------------------------------------------------------------- photometric


def adjust_brightness(image: Tensor, factor: Tensor) -> Tensor:
    """``clamp(f I, 0, 1)``; image (B, C, H, W), factor (B,)."""
    return (image * _bcast(factor, image)).clamp(0, 1)


def adjust_contrast(image: Tensor, factor: Tensor) -> Tensor:
    """``clamp(m + f (I - m), 0, 1)`` with m the image's mean grey level; factor (B,)."""
    m = grey(image).mean(dim=(-3, -2, -1), keepdim=True)
    return (m + _bcast(factor, image) * (image - m)).clamp(0, 1)


def adjust_saturation(image: Tensor, factor: Tensor) -> Tensor:
    """``clamp(g + f (I - g), 0, 1)`` with g each pixel's grey level; factor (B,)."""
    g = grey(image)
    return (g + _bcast(factor, image) * (image - g)).clamp(0, 1)


def hue_matrix(turns: Tensor) -> Tensor:
    """(B,) angles in turns -> (B, 3, 3) rotations of RGB about the grey axis (1, 1, 1)/sqrt(3)
    (Rodrigues, :func:`kp3d.geometry.axis_angle_to_matrix`): a hue shift that keeps the mean of
    the three channels."""
    axis = turns.new_full((3,), 1 / math.sqrt(3))
    return axis_angle_to_matrix(axis * (2 * math.pi * turns)[:, None])


def adjust_hue(image: Tensor, turns: Tensor) -> Tensor:
    """The colours of (B, 3, H, W) rotated by :func:`hue_matrix`, clamped to [0, 1]."""
    if image.shape[-3] != 3:
        raise ValueError(f"adjust_hue: needs RGB images, got {image.shape[-3]} channel(s)")
    M = hue_matrix(turns)
    return torch.einsum("bij,bjhw->bihw", M, image).clamp(0, 1)


def adjust_gamma(image: Tensor, gamma: Tensor) -> Tensor:
    """``I ** gamma`` per sample (images in [0, 1]); gamma (B,) > 0."""
    return image.clamp(0, 1).pow(_bcast(gamma, image))


def photometric_jitter(
    image: Tensor,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
    gamma: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random brightness, contrast, saturation, hue and gamma (in that order, as
    :class:`AugmentConfig` describes them), one draw per sample; a strength of 0 skips its step
    and draws nothing. image (B, C, H, W) in [0, 1] -> the same shape and dtype."""
    out = image
    B = image.shape[0]
    for strength, adjust in (
        (brightness, adjust_brightness),
        (contrast, adjust_contrast),
        (saturation, adjust_saturation),
    ):
        if strength > 0:
            out = adjust(out, _uniform(B, max(0.0, 1 - strength), 1 + strength, generator, out))
    if hue > 0 and image.shape[1] == 3:
        out = adjust_hue(out, _uniform(B, -hue, hue, generator, out))
    if gamma > 0:
        out = adjust_gamma(out, _uniform(B, -gamma, gamma, generator, out).exp())
    return out


# ----------------------------------------------------------------------------- geometric


def _map_points(uv: Tensor, zoom: Tensor, shift: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixels (B, ..., 2) through the normalised map ``x' = z x + s`` (zoom (B,), shift (B, 2))."""
    B = uv.shape[0]
    x = pixel_to_normalised(uv, size)
    z = zoom.reshape(B, *([1] * (uv.ndim - 1)))
    s = shift.reshape(B, *([1] * (uv.ndim - 2)), 2)
    return normalised_to_pixel(z * x + s, size)


def zoom_and_shift(
    batch: Sample, zoom: Tensor, shift: Tensor, *, padding: Padding = "border"
) -> Sample:
    """The batch zoomed about the image centre by ``zoom`` (B,) and shifted by ``shift`` (B, 2)
    in normalised units (2 = the image's width / height): a point at normalised ``x`` moves to
    ``z x + s``; pixel-frame fields follow (see the module doc). The image is resampled with
    :func:`torch.nn.functional.grid_sample` (``align_corners=False``) from the inverse map
    ``x = (x' - s) / z``; ``padding`` fills what comes from outside the image."""
    image = _check_batch("zoom_and_shift", batch)
    if padding not in PADDING_CHOICES:
        raise ValueError(
            f"zoom_and_shift: padding must be one of {PADDING_CHOICES}, got {padding!r}"
        )
    B, _, H, W = image.shape
    if zoom.shape != (B,) or shift.shape != (B, 2):
        raise ValueError(
            f"zoom_and_shift: zoom must be ({B},) and shift ({B}, 2), got "
            f"{tuple(zoom.shape)} and {tuple(shift.shape)}"
        )
    if not bool((zoom > 0).all()):
        raise ValueError("zoom_and_shift: zoom must be > 0")
    zoom = zoom.to(image.dtype)
    shift = shift.to(image.dtype)
    inv = 1 / zoom
    theta = torch.zeros(B, 2, 3, dtype=image.dtype, device=image.device)
    theta[:, 0, 0] = theta[:, 1, 1] = inv
    theta[:, :, 2] = -shift * inv[:, None]
    grid = F.affine_grid(theta, [B, 1, H, W], align_corners=False)

    def warp(x: Tensor, mode: str = "bilinear") -> Tensor:
        out = F.grid_sample(
            x.to(grid.dtype), grid, mode=mode, padding_mode=padding, align_corners=False
        )
        return out.to(x.dtype)

    changes: dict[str, Tensor | None] = {"image": warp(image)}
    if batch.mask is not None:
        changes["mask"] = warp(batch.mask)
    if batch.background is not None:
        changes["background"] = warp(batch.background)
    if batch.depth is not None:
        changes["depth"] = warp(batch.depth, "nearest")
    size = (H, W)
    if batch.kp2d is not None:
        changes["kp2d"] = _map_points(batch.kp2d, zoom, shift, size).to(batch.kp2d.dtype)
    if batch.intrinsics is not None:
        K = batch.intrinsics.clone()
        K[:, :2, :2] = K[:, :2, :2] * zoom.to(K.dtype)[:, None, None]
        centre = _map_points(K[:, None, :2, 2], zoom, shift, size)[:, 0]
        K[:, :2, 2] = centre.to(K.dtype)
        changes["intrinsics"] = K
    if batch.ortho is not None:
        o = batch.ortho
        txy = _map_points(o[:, None, 1:], zoom, shift, size)[:, 0].to(o.dtype)
        changes["ortho"] = torch.cat([o[:, :1] * zoom.to(o.dtype)[:, None], txy], dim=-1)
    return batch.replace(**changes)


def scale_translate_jitter(
    batch: Sample,
    *,
    scale: float = 0.0,
    translate: float = 0.0,
    padding: Padding = "border",
    generator: torch.Generator | None = None,
) -> Sample:
    """:func:`zoom_and_shift` with a zoom drawn log-uniformly in ``[1 / (1 + scale), 1 + scale]``
    and a shift of up to ``translate`` times the image side per axis; the batch as it is when
    both are 0."""
    image = _check_batch("scale_translate_jitter", batch)
    if scale < 0 or translate < 0:
        raise ValueError(
            f"scale_translate_jitter: scale and translate must be >= 0, got {scale}, {translate}"
        )
    if scale == 0 and translate == 0:
        return batch
    B = image.shape[0]
    log_range = math.log1p(scale)
    zoom = _uniform(B, -log_range, log_range, generator, image).exp()
    shift = (2 * _rand((B, 2), generator, image) - 1) * (2 * translate)
    return zoom_and_shift(batch, zoom, shift, padding=padding)


def flip_horizontal(batch: Sample, flip: Tensor, *, permutation: Tensor | None = None) -> Sample:
    """The samples where ``flip`` (B,) bool is true mirrored left to right (exactly, by
    :func:`torch.flip`); pixel-frame and camera-frame fields follow (see the module doc).

    ``permutation`` (K,): optional new order of the keypoints of flipped samples (keypoint k of
    the result is keypoint ``permutation[k]`` of the input), for labels with a left/right
    meaning; None keeps every keypoint's identity.
    """
    image = _check_batch("flip_horizontal", batch)
    B, W = image.shape[0], image.shape[-1]
    if flip.shape != (B,) or flip.dtype != torch.bool:
        raise ValueError(
            f"flip_horizontal: flip must be ({B},) bool, got {flip.dtype} {tuple(flip.shape)}"
        )
    flip = flip.to(image.device)

    def mirror(x: Tensor) -> Tensor:
        return torch.where(_bcast(flip, x), x.flip(-1), x)

    changes: dict[str, Tensor | None] = {"image": mirror(image)}
    for name in ("mask", "depth", "background"):
        value = getattr(batch, name)
        if value is not None:
            changes[name] = mirror(value)
    if batch.kp2d is not None:
        kp = batch.kp2d
        mirrored = torch.stack([W - kp[..., 0], kp[..., 1]], dim=-1)
        changes["kp2d"] = torch.where(flip[:, None, None], mirrored, kp)
    if batch.kp3d is not None:
        X = batch.kp3d
        mirrored = torch.cat([-X[..., :1], X[..., 1:]], dim=-1)
        changes["kp3d"] = torch.where(_bcast(flip, X), mirrored, X)
    if batch.intrinsics is not None:
        K = batch.intrinsics
        mirrored = K.clone()
        mirrored[:, 0, 1] = -K[:, 0, 1]
        mirrored[:, 0, 2] = W - K[:, 0, 2]
        changes["intrinsics"] = torch.where(flip[:, None, None], mirrored, K)
    if batch.ortho is not None:
        o = batch.ortho
        mirrored = torch.stack([o[:, 0], W - o[:, 1], o[:, 2]], dim=-1)
        changes["ortho"] = torch.where(flip[:, None], mirrored, o)
    if batch.extrinsics is not None:
        E = batch.extrinsics
        d = E.new_tensor([-1.0, 1.0, 1.0])
        # [R | t] -> [D R D | D t]: the camera of the mirrored world (still a rotation).
        mirrored = E * d[:, None] * torch.cat([d, d.new_ones(1)])
        changes["extrinsics"] = torch.where(_bcast(flip, E), mirrored, E)
    if permutation is not None:
        K_ = batch.kp2d.shape[1] if batch.kp2d is not None else None
        if permutation.ndim != 1 or (K_ is not None and permutation.shape[0] != K_):
            raise ValueError(
                f"flip_horizontal: permutation must be ({K_},), got {tuple(permutation.shape)}"
            )
        for name in ("kp2d", "kp3d", "vis"):
            value = changes.get(name, getattr(batch, name))
            if value is not None:
                permuted = value[:, permutation.to(value.device)]
                changes[name] = torch.where(_bcast(flip, value), permuted, value)
    return batch.replace(**changes)


def random_flip(batch: Sample, *, p: float, generator: torch.Generator | None = None) -> Sample:
    """:func:`flip_horizontal` of each sample with probability ``p``; the batch as it is at 0."""
    image = _check_batch("random_flip", batch)
    if not 0 <= p <= 1:
        raise ValueError(f"random_flip: p must be in [0, 1], got {p}")
    if p == 0:
        return batch
    return flip_horizontal(batch, _rand((image.shape[0],), generator, image) < p)


# ----------------------------------------------------------------------------- backgrounds


def replace_background(image: Tensor, mask: Tensor, background: Tensor) -> Tensor:
    """``m I + (1 - m) G``: the foreground of ``image`` (B, C, H, W) over ``background``, with
    ``mask`` (B, 1, H, W) in [0, 1] (soft edges blend)."""
    return mask * image + (1 - mask) * background


def noise_texture(
    shape: tuple[int, int, int, int],
    *,
    generator: torch.Generator | None = None,
    like: Tensor,
) -> Tensor:
    """(B, C, H, W) smooth random colour textures in [0, 1]: uniform noise on a coarse grid
    (2 to 16 cells per side, drawn per batch) upsampled bilinearly."""
    B, C, H, W = shape
    cells = int(2 ** (1 + 3 * float(_rand((1,), generator, like.float())[0])))
    coarse = _rand((B, C, cells, cells), generator, like)
    return F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False).clamp(0, 1)


def random_background(
    batch: Sample,
    *,
    p: float,
    kinds: tuple[BackgroundKind, ...] = BACKGROUND_CHOICES,
    generator: torch.Generator | None = None,
) -> Sample:
    """Each sample's background (where ``mask`` is 0) replaced with probability ``p`` by one
    of ``kinds`` (drawn uniformly): another image of the batch (the next one after a random
    cyclic shift, never the sample itself; a random colour when the batch has one image), a
    random colour, or :func:`noise_texture`. The foreground (mask 1) keeps its pixels exactly;
    a ``background`` field becomes the new background where it was replaced. A batch without
    masks, or ``p`` = 0, is returned as it is."""
    image = _check_batch("random_background", batch)
    if not 0 <= p <= 1:
        raise ValueError(f"random_background: p must be in [0, 1], got {p}")
    bad = [k for k in kinds if k not in BACKGROUND_CHOICES]
    if bad or not kinds:
        raise ValueError(
            f"random_background: kinds must be one or more of {BACKGROUND_CHOICES}, got {kinds}"
        )
    if p == 0 or batch.mask is None:
        return batch
    B, C, H, W = image.shape
    apply = _rand((B,), generator, image) < p
    which = (_rand((B,), generator, image) * len(kinds)).long().clamp_max(len(kinds) - 1)
    colour = _rand((B, C), generator, image)[..., None, None].expand(B, C, H, W)
    candidates = {"colour": colour}
    if "batch" in kinds:
        if B > 1:
            offset = 1 + int(_rand((1,), generator, image.float())[0] * (B - 1))
            candidates["batch"] = image.roll(min(offset, B - 1), dims=0)
        else:
            candidates["batch"] = colour
    if "noise" in kinds:
        candidates["noise"] = noise_texture((B, C, H, W), generator=generator, like=image)
    stacked = torch.stack([candidates[k] for k in kinds])  # (n_kinds, B, C, H, W)
    new = stacked[which, torch.arange(B, device=image.device)]
    new = torch.where(_bcast(apply, new), new, image)
    mask = batch.mask.to(image.dtype)
    changes: dict[str, Tensor] = {"image": replace_background(image, mask, new)}
    if batch.background is not None:
        changes["background"] = torch.where(_bcast(apply, new), new, batch.background)
    return batch.replace(**changes)


# ----------------------------------------------------------------------------- all together


def augment(
    batch: Sample, config: AugmentConfig, *, generator: torch.Generator | None = None
) -> Sample:
    """``config``'s augmentations of a training batch, in this order: scale and translation
    jitter, horizontal flip, background, photometric jitter (so the new background is jittered
    with the object). Steps of strength 0 draw nothing; with every strength 0 the batch is
    returned as it is.

    Args:
        batch: a single-view batch, images (B, C, H, W) in [0, 1].
        config: the strengths.
        generator: random source (torch's global generator when None).

    Raises:
        ValueError: a batch without images or with fields of shapes that do not fit the images.
    """
    image = _check_batch("augment", batch)
    if not config.enabled:
        return batch
    c = config
    # In the batch's own precision even under autocast (the colour matrix is a matmul).
    with torch.autocast(image.device.type, enabled=False):
        out = scale_translate_jitter(
            batch, scale=c.scale, translate=c.translate, padding=c.padding, generator=generator
        )
        out = random_flip(out, p=c.flip, generator=generator)
        out = random_background(out, p=c.background, kinds=c.backgrounds, generator=generator)
        image = photometric_jitter(
            out.image,  # type: ignore[arg-type]
            brightness=c.brightness,
            contrast=c.contrast,
            saturation=c.saturation,
            hue=c.hue,
            gamma=c.gamma,
            generator=generator,
        )
    return out.replace(image=image)


__all__ = [
    "BACKGROUND_CHOICES",
    "PADDING_CHOICES",
    "AugmentConfig",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_gamma",
    "adjust_hue",
    "adjust_saturation",
    "augment",
    "flip_horizontal",
    "grey",
    "hue_matrix",
    "noise_texture",
    "photometric_jitter",
    "random_background",
    "random_flip",
    "replace_background",
    "scale_translate_jitter",
    "zoom_and_shift",
]
