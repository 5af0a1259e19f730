"""Training-batch augmentations: shapes, determinism, identity at zero strength, fields that
follow the pixels (dots, cameras), flips, backgrounds and errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from kp3d.data.augment import (
    AugmentConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_gamma,
    adjust_hue,
    adjust_saturation,
    augment,
    flip_horizontal,
    grey,
    noise_texture,
    photometric_jitter,
    random_background,
    random_flip,
    replace_background,
    scale_translate_jitter,
    zoom_and_shift,
)
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.geometry import make_extrinsics, project_pinhole, random_rotation, transform_points

ALL_ON = AugmentConfig(
    brightness=0.3,
    contrast=0.3,
    saturation=0.3,
    hue=0.1,
    gamma=0.3,
    scale=0.2,
    translate=0.1,
    background=0.7,
    flip=0.5,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _camera_batch(B: int = 4, K: int = 5, H: int = 48, W: int = 64, seed: int = 0) -> Sample:
    """Images, masks, depth and backgrounds with 3D points, pinhole intrinsics, extrinsics and
    an orthographic camera, kp2d the pinhole projection of kp3d."""
    g = _gen(seed)
    X = torch.randn(B, K, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    f = 40 + 10 * torch.rand(B, generator=g)
    intr = torch.zeros(B, 3, 3)
    intr[:, 0, 0], intr[:, 1, 1], intr[:, 2, 2] = f, f * 1.1, 1
    intr[:, 0, 1] = 0.5
    intr[:, 0, 2], intr[:, 1, 2] = W / 2 + 3, H / 2 - 2
    mask = (torch.rand(B, 1, H, W, generator=g) > 0.5).float()
    return Sample(
        image=torch.rand(B, 3, H, W, generator=g),
        mask=mask,
        depth=mask * (2 + torch.rand(B, 1, H, W, generator=g)),
        background=torch.rand(B, 3, H, W, generator=g),
        kp2d=project_pinhole(X, intr),
        vis=torch.rand(B, K, generator=g) > 0.3,
        kp3d=X,
        intrinsics=intr,
        extrinsics=make_extrinsics(random_rotation(B, generator=g), torch.randn(B, 3, generator=g)),
        ortho=torch.cat([1 + torch.rand(B, 1, generator=g), 20 * torch.rand(B, 2, generator=g)], 1),
        name=[f"s{i}" for i in range(B)],
    )


def _dots(kp: torch.Tensor, H: int, W: int, sigma: float = 1.5) -> torch.Tensor:
    """(B, 1, H, W): one Gaussian dot at each sample's single keypoint kp (B, 1, 2) (pixels)."""
    u = torch.arange(W, dtype=torch.float64) + 0.5
    v = torch.arange(H, dtype=torch.float64) + 0.5
    du = u[None, None, :] - kp[:, 0, 0, None, None]
    dv = v[None, :, None] - kp[:, 0, 1, None, None]
    return torch.exp(-(du**2 + dv**2) / (2 * sigma**2))[:, None]


def _centroid(img: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 2) intensity-weighted mean pixel position (u, v)."""
    _, _, H, W = img.shape
    u = torch.arange(W, dtype=img.dtype) + 0.5
    v = torch.arange(H, dtype=img.dtype) + 0.5
    w = img[:, 0]
    total = w.sum((-2, -1))
    return torch.stack([(w * u).sum((-2, -1)) / total, (w * v[:, None]).sum((-2, -1)) / total], -1)


# ----------------------------------------------------------------------------- config


def test_config_defaults_are_off_and_any_strength_turns_it_on() -> None:
    assert not AugmentConfig().enabled
    for f in dataclasses.fields(AugmentConfig):
        if f.name in ("padding", "backgrounds"):
            continue
        assert AugmentConfig(**{f.name: 0.1}).enabled, f.name


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"brightness": -0.1}, "brightness"),
        ({"gamma": math.inf}, "gamma"),
        ({"hue": 0.6}, "hue"),
        ({"flip": 1.5}, "flip"),
        ({"background": -0.1}, "background"),
        ({"padding": "wrap"}, "padding"),
        ({"backgrounds": ()}, "backgrounds"),
        ({"backgrounds": ("batch", "plaid")}, "backgrounds"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(changes: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        AugmentConfig(**changes)


# ----------------------------------------------------------------------------- the whole


def test_augment_keeps_shapes_dtypes_and_names() -> None:
    batch = _camera_batch()
    out = augment(batch, ALL_ON, generator=_gen())
    for f in batch.present():
        a, b = getattr(batch, f), getattr(out, f)
        assert a.shape == b.shape and a.dtype == b.dtype, f
    assert out.name == batch.name
    assert out.image.min() >= 0 and out.image.max() <= 1
    assert not torch.equal(out.image, batch.image)


def test_augment_keeps_dtypes_under_autocast() -> None:
    batch = _camera_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = augment(batch, ALL_ON, generator=_gen())
    assert all(getattr(out, f).dtype == getattr(batch, f).dtype for f in batch.present())


def test_augment_is_deterministic_given_a_generator_and_leaves_its_input_alone() -> None:
    batch = _camera_batch()
    before = batch.image.clone()
    a = augment(batch, ALL_ON, generator=_gen(3))
    b = augment(batch, ALL_ON, generator=_gen(3))
    c = augment(batch, ALL_ON, generator=_gen(4))
    for f in batch.present():
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(a.image, c.image)
    assert torch.equal(batch.image, before)


def test_augment_uses_the_global_generator_when_none_is_given() -> None:
    batch = _camera_batch()
    torch.manual_seed(7)
    a = augment(batch, ALL_ON)
    torch.manual_seed(7)
    b = augment(batch, ALL_ON)
    assert torch.equal(a.image, b.image) and torch.equal(a.kp2d, b.kp2d)


def test_zero_strength_is_the_identity_and_draws_nothing() -> None:
    batch = _camera_batch()
    g = _gen(5)
    state = g.get_state()
    assert augment(batch, AugmentConfig(), generator=g) is batch
    assert scale_translate_jitter(batch, generator=g) is batch
    assert random_flip(batch, p=0, generator=g) is batch
    assert random_background(batch, p=0, generator=g) is batch
    assert photometric_jitter(batch.image, generator=g) is batch.image
    assert torch.equal(g.get_state(), state)


def test_zoom_one_and_no_shift_is_the_identity() -> None:
    batch = _camera_batch(B=2)
    out = zoom_and_shift(batch, torch.ones(2), torch.zeros(2, 2))
    for f in ("image", "mask", "depth", "background", "kp2d", "intrinsics", "ortho"):
        torch.testing.assert_close(getattr(out, f), getattr(batch, f), msg=f)


def test_every_augmentation_works_on_a_single_image_batch() -> None:
    out = augment(_camera_batch(B=1), dataclasses.replace(ALL_ON, background=1.0, flip=1.0))
    assert out.image.shape == (1, 3, 48, 64)


# ----------------------------------------------------------------------------- geometric


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_keypoints_follow_the_pixels_of_a_dot(padding: str) -> None:
    H, W, B = 64, 80, 6
    g = _gen(1)
    kp = torch.stack([20 + 40 * torch.rand(B, generator=g), 20 + 24 * torch.rand(B, generator=g)])
    kp = kp.T[:, None].double()  # (B, 1, 2)
    dots = _dots(kp, H, W)
    batch = Sample(image=dots.expand(B, 3, H, W).clone(), mask=dots.clone(), kp2d=kp)
    # Zoom out (the dot stays inside, the border stays dark) and in; shifts both ways.
    zoom = torch.tensor([0.8, 1.0, 1.2, 0.9, 1.1, 1.0], dtype=torch.float64)
    shift = torch.tensor([[0.1, -0.05], [-0.1, 0.1], [0.0, 0.0], [0.05, 0.05], [-0.05, 0], [0, 0]])
    out = zoom_and_shift(batch, zoom, shift.double(), padding=padding)
    torch.testing.assert_close(_centroid(out.image[:, :1]), out.kp2d[:, 0], atol=0.05, rtol=0)
    torch.testing.assert_close(_centroid(out.mask), out.kp2d[:, 0], atol=0.05, rtol=0)
    # The same after a random jitter and a flip.
    out = augment(batch, AugmentConfig(scale=0.2, translate=0.05, flip=0.5), generator=g)
    torch.testing.assert_close(_centroid(out.image[:, :1]), out.kp2d[:, 0], atol=0.05, rtol=0)


def test_a_zoom_maps_keypoints_about_the_image_centre() -> None:
    H, W = 40, 60
    kp = torch.tensor([[[30.0, 20.0], [0.0, 0.0], [60.0, 40.0]]])
    batch = Sample(image=torch.rand(1, 3, H, W), kp2d=kp)
    out = zoom_and_shift(batch, torch.tensor([2.0]), torch.tensor([[0.5, 0.0]]))
    # Centre fixed by the zoom, then shifted by a quarter width (0.5 normalised = 15 px).
    expected = torch.tensor([[[45.0, 20.0], [-15.0, -20.0], [105.0, 60.0]]])
    torch.testing.assert_close(out.kp2d, expected)


def test_depth_is_resampled_without_blending_surface_and_background() -> None:
    batch = _camera_batch()
    out = scale_translate_jitter(batch, scale=0.3, translate=0.1, generator=_gen(2))
    values = set(batch.depth.unique().tolist())
    assert set(out.depth.unique().tolist()) <= values


@pytest.mark.parametrize("flip", [False, True])
def test_cameras_follow_the_pixels(flip: bool) -> None:
    batch = _camera_batch()
    B, W = batch.image.shape[0], batch.image.shape[-1]
    cfg = AugmentConfig(scale=0.3, translate=0.1, flip=1.0 if flip else 0.0)
    out = augment(batch, cfg, generator=_gen(9))
    # Pinhole: the (mirrored) 3D points through the new intrinsics land on the new kp2d.
    torch.testing.assert_close(project_pinhole(out.kp3d, out.intrinsics), out.kp2d)
    # Orthographic: u = s X + tx of the same points.
    o = out.ortho
    ortho_before = batch.ortho[:, None, :1] * batch.kp3d[..., :2] + batch.ortho[:, None, 1:]
    ortho_after = o[:, None, :1] * out.kp3d[..., :2] + o[:, None, 1:]
    # The same draws without the flip (it comes after the zoom, so the zoom's draws match).
    ref = augment(
        Sample(image=batch.image, kp2d=ortho_before),
        dataclasses.replace(cfg, flip=0.0),
        generator=_gen(9),
    ).kp2d
    if flip:
        ref[..., 0] = W - ref[..., 0]
    torch.testing.assert_close(ortho_after, ref)
    # Extrinsics: the mirrored world seen by the new camera gives the new camera-frame points.
    R, t = batch.extrinsics[..., :3], batch.extrinsics[..., 3]
    world = transform_points(batch.kp3d - t[:, None], R.transpose(-1, -2), torch.zeros(B, 3))
    d = torch.tensor([-1.0, 1.0, 1.0]) if flip else torch.ones(3)
    E = out.extrinsics
    torch.testing.assert_close(transform_points(world * d, E[..., :3], E[..., 3]), out.kp3d)
    assert torch.allclose(torch.linalg.det(E[..., :3]), torch.ones(B))


def test_flip_mirrors_pixels_and_keypoints_exactly() -> None:
    batch = _camera_batch(B=2)
    W = batch.image.shape[-1]
    out = flip_horizontal(batch, torch.tensor([True, False]))
    assert torch.equal(out.image[0], batch.image[0].flip(-1))
    assert torch.equal(out.image[1], batch.image[1])
    assert torch.equal(out.mask[0], batch.mask[0].flip(-1))
    assert torch.equal(out.kp2d[0, :, 0], W - batch.kp2d[0, :, 0])
    assert torch.equal(out.kp2d[0, :, 1], batch.kp2d[0, :, 1])
    assert torch.equal(out.kp2d[1], batch.kp2d[1])
    assert torch.equal(out.vis, batch.vis)  # identities kept


def test_flip_applied_twice_is_the_identity() -> None:
    batch = _camera_batch()
    flip = torch.tensor([True, False, True, True])
    perm = torch.tensor([1, 0, 2, 4, 3])  # an involution, as left/right pairs are
    for permutation in (None, perm):
        twice = flip_horizontal(
            flip_horizontal(batch, flip, permutation=permutation), flip, permutation=permutation
        )
        for f in batch.present():
            if f in ("kp2d", "intrinsics", "ortho"):  # W - (W - u) rounds
                torch.testing.assert_close(getattr(twice, f), getattr(batch, f), msg=f)
            else:  # pixels move and signs flip exactly
                assert torch.equal(getattr(twice, f), getattr(batch, f)), f


def test_flip_permutation_relabels_flipped_samples_only() -> None:
    batch = _camera_batch(B=2, K=3)
    W = batch.image.shape[-1]
    out = flip_horizontal(batch, torch.tensor([True, False]), permutation=torch.tensor([2, 1, 0]))
    assert torch.equal(out.kp2d[0, 0, 0], W - batch.kp2d[0, 2, 0])
    assert torch.equal(out.vis[0], batch.vis[0].flip(0))
    assert torch.equal(out.kp2d[1], batch.kp2d[1])


# ----------------------------------------------------------------------------- backgrounds


@pytest.mark.parametrize("kind", ["batch", "colour", "noise"])
def test_backgrounds_keep_the_foreground_pixels(kind: str) -> None:
    batch = _camera_batch()
    out = random_background(batch, p=1.0, kinds=(kind,), generator=_gen())
    fg = batch.mask.bool().expand_as(batch.image)
    assert torch.equal(out.image[fg], batch.image[fg])
    assert not torch.equal(out.image[~fg], batch.image[~fg])
    assert torch.equal(out.image * ~fg, out.background * ~fg)  # the field tells the new one
    if kind == "batch":  # every background comes from one other image of the batch
        for i in range(batch.image.shape[0]):
            bg = ~batch.mask[i].bool().expand(3, -1, -1)
            sources = [
                j
                for j in range(batch.image.shape[0])
                if torch.equal(out.image[i][bg], batch.image[j][bg])
            ]
            assert sources and i not in sources
    if kind == "colour":
        bg = out.image[:, :, ~batch.mask[0, 0].bool()][0]
        assert torch.allclose(bg, bg[:, :1].expand_as(bg))


def test_a_soft_mask_blends_and_a_batch_without_masks_is_left_alone() -> None:
    image, bg = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    m = torch.full((2, 1, 4, 4), 0.25)
    torch.testing.assert_close(replace_background(image, m, bg), 0.25 * image + 0.75 * bg)
    no_mask = Sample(image=image)
    assert random_background(no_mask, p=1.0, generator=_gen()) is no_mask


def test_background_probability_zero_in_kinds_mix_replaces_only_drawn_samples() -> None:
    batch = _camera_batch(B=64, K=2, H=8, W=8)
    out = random_background(batch, p=0.5, generator=_gen(1))
    changed = (out.image != batch.image).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 64


def test_noise_textures_are_in_range_and_vary() -> None:
    t = noise_texture((3, 3, 32, 32), generator=_gen(), like=torch.zeros(()))
    assert t.shape == (3, 3, 32, 32) and t.min() >= 0 and t.max() <= 1
    assert t.std() > 0.05


# ----------------------------------------------------------------------------- photometric


def test_photometric_adjustments_against_their_formulas() -> None:
    g = _gen()
    image = torch.rand(2, 3, 8, 8, generator=g) * 0.5 + 0.25
    f = torch.tensor([0.8, 1.2])
    torch.testing.assert_close(adjust_brightness(image, f), image * f[:, None, None, None])
    gamma = torch.tensor([0.5, 2.0])
    torch.testing.assert_close(adjust_gamma(image, gamma), image ** gamma[:, None, None, None])
    lum = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    torch.testing.assert_close(grey(image)[:, 0], lum)
    half = torch.tensor([0.5, 0.5])
    m = lum.mean((-2, -1))[:, None, None, None]
    torch.testing.assert_close(adjust_contrast(image, half), m + 0.5 * (image - m))
    torch.testing.assert_close(
        adjust_saturation(image, half), lum[:, None] + 0.5 * (image - lum[:, None])
    )
    torch.testing.assert_close(
        adjust_saturation(image, torch.zeros(2)), lum[:, None].expand_as(image)
    )


def test_a_third_turn_of_hue_cycles_the_channels_and_grey_stays_grey() -> None:
    image = torch.rand(2, 3, 5, 5, generator=_gen())
    out = adjust_hue(image, torch.tensor([1 / 3, -1 / 3]))
    torch.testing.assert_close(out[0], image[0, [2, 0, 1]])  # R -> G -> B -> R
    torch.testing.assert_close(out[1], image[1, [1, 2, 0]])
    greys = torch.rand(2, 1, 5, 5, generator=_gen(1)).expand(2, 3, 5, 5)
    torch.testing.assert_close(adjust_hue(greys, torch.tensor([0.1, 0.4])), greys)


def test_photometric_jitter_stays_in_range_and_keeps_dtype() -> None:
    for dtype in (torch.float32, torch.float64):
        image = torch.rand(4, 3, 6, 6, generator=_gen(), dtype=dtype)
        out = photometric_jitter(
            image,
            brightness=0.9,
            contrast=0.9,
            saturation=0.9,
            hue=0.5,
            gamma=1.0,
            generator=_gen(),
        )
        assert out.dtype == dtype and out.shape == image.shape
        assert out.min() >= 0 and out.max() <= 1


def test_one_channel_images_skip_hue() -> None:
    image = torch.rand(2, 1, 6, 6, generator=_gen())
    out = augment(Sample(image=image), AugmentConfig(hue=0.3, saturation=0.5), generator=_gen())
    assert torch.equal(out.image, image)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (Sample(), "no images"),
        (Sample(image=torch.rand(2, 2, 3, 4, 4)), r"\(B, C, H, W\)"),
        (Sample(image=torch.rand(2, 4, 4, 4)), r"C = 1 or 3"),
        (Sample(image=torch.zeros(2, 3, 4, 4, dtype=torch.uint8)), "floating"),
        (Sample(image=torch.rand(2, 3, 4, 4), mask=torch.ones(2, 1, 4, 5)), "mask"),
        (Sample(image=torch.rand(2, 3, 4, 4), kp2d=torch.ones(2, 3, 3)), "kp2d"),
        (Sample(image=torch.rand(2, 3, 4, 4), intrinsics=torch.eye(3)), "intrinsics"),
    ],
)
def test_bad_batches_are_refused_with_the_field_named(batch: Sample, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        augment(batch, ALL_ON, generator=_gen())


def test_bad_arguments_are_refused() -> None:
    batch = Sample(image=torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="zoom must be > 0"):
        zoom_and_shift(batch, torch.tensor([1.0, 0.0]), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="shift"):
        zoom_and_shift(batch, torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match="padding"):
        zoom_and_shift(batch, torch.ones(2), torch.zeros(2, 2), padding="wrap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bool"):
        flip_horizontal(batch, torch.ones(2))
    with pytest.raises(ValueError, match="p must be"):
        random_flip(batch, p=2.0)
    with pytest.raises(ValueError, match="kinds"):
        random_background(batch, p=0.5, kinds=("plaid",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RGB"):
        adjust_hue(torch.rand(1, 1, 2, 2), torch.zeros(1))
