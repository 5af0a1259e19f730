"""Built-in synthetic categories with exact ground truth, rendered on the CPU.

Categories (:data:`CATEGORIES`)
    ``creature``   procedural biped, 16 joints (:mod:`kp3d.data.synth.creature`)
    ``quadruped``  procedural four-legged animal, 18 joints (:mod:`kp3d.data.synth.quadruped`)
    ``face``       Surrey Face Model faces, the 68 iBUG landmarks (:mod:`kp3d.data.synth.face`);
                   needs the model's folder (``sfm_dir``)
    ``head``       procedural textured head, 20 landmarks, yaw +-60 degrees
                   (:mod:`kp3d.data.synth.head`); needs no file

Options besides size, seed, views and pairs: ``sfm_dir`` (``face`` only) and ``articulation``
(``creature`` and ``quadruped`` only): the fraction of each joint's angle range that poses span,
centred on the range's middle; None keeps the category's default, 0.3 (poses near a typical
one), 1 draws every angle over the joint's whole range, 0 puts every joint at its range's middle;
and ``azimuth`` (the same two): the camera's azimuth range in degrees, ``(lo, hi)`` with
``lo < hi <= lo + 360``; None keeps the default, all around (0 sees the front, 90 the left side,
180 the back; ``(-90, 90)`` keeps to the front half); and ``appearance`` (``face`` only, one of
:data:`APPEARANCES`): how faces are rendered; None or ``"default"`` gives the usual faces,
``"shifted"`` renders the same faces (identity, expression and head rotation, drawn from the
same seed) with settings the default never has: a smaller, less centred face, a harsh side/top
light, a colour cast, grey brows and a saturated, busier background (the numbers are in
:mod:`kp3d.data.synth.face`), e.g. to test models trained on default faces out of distribution.

In memory::

    from kp3d.data.synth import generate
    samples = generate("creature", 64, size=64, seed=0)          # list[Sample]
    pairs = generate("quadruped", 8, size=64, seed=1, pairs=True)  # Sample fields (2, ...)
    wild = generate("creature", 64, size=64, seed=0, articulation=1.0)  # full joint ranges
    front = generate("creature", 64, size=64, seed=0, azimuth=(-90, 90))  # no views from behind
    odd = generate("face", 64, seed=0, sfm_dir="sfm/", appearance="shifted")  # unseen looks

On disk: ``kp3d synth`` / :func:`kp3d.data.adapters.synth.write` (layout documented in
:mod:`kp3d.data.adapters.synth`). Image ``i`` of a set depends only on ``(seed, i)`` and the
options, whatever the batching or number of workers.

Every sample carries ``image``, ``mask``, ``depth``, ``kp2d``, ``vis``, ``kp3d`` (camera frame),
``intrinsics``, ``extrinsics`` (world = the instance's own frame), ``instance`` and
``category``; multi-view samples (``views > 1`` or ``pairs``) have a leading view axis V on
each and a ``view`` index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.data.synth import scene
from kp3d.data.synth.scene import Rendered
from kp3d.errors import ConfigError

CATEGORIES: tuple[str, ...] = ("creature", "quadruped", "face", "head")
"""Category names; a sample's ``category`` label is the index in this tuple (new ones are
appended, so existing labels keep their values)."""

ARTICULATED: tuple[str, ...] = ("creature", "quadruped")

Appearance = Literal["default", "shifted"]
"""How ``face`` instances are rendered (:mod:`kp3d.data.synth.face` gives each one's ranges)."""
APPEARANCES: tuple[Appearance, ...] = ("default", "shifted")

GENERATOR_VERSION = 1
"""Bumped whenever the images or labels a (category, seed, options) produces change."""

CHUNK = 32
"""Instances rendered per batch."""


class Category(Protocol):
    """What :func:`generate` needs from a category."""

    name: str
    keypoint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    absent: tuple[int, ...]
    """Keypoints the category never defines (``vis`` always False, coordinates 0)."""
    view_dependent: tuple[int, ...]
    """Keypoints that are not fixed points of the instance (e.g. a face's outline)."""

    def sample(
        self, rng: np.random.Generator, views: int, pairs: bool
    ) -> dict[str, np.ndarray]: ...

    def render(self, params: dict[str, Tensor], size: int) -> Rendered: ...


_cache: dict[
    tuple[str, str, float | None, tuple[float, float] | None, Appearance | None], Category
] = {}


def check_articulation(name: str, articulation: float | None) -> None:
    """Validate the ``articulation`` option for category ``name``.

    Raises:
        ConfigError: ``articulation`` given for ``face``, or outside [0, 1].
    """
    if articulation is None:
        return
    if name not in ARTICULATED:
        raise ConfigError(
            f"articulation applies to the procedural articulated categories (creature, "
            f"quadruped); {name} has no joints to pose (got articulation={articulation})"
        )
    # `not 0 <= x <= 1` rather than `x < 0 or x > 1`, so NaN is rejected too.
    if not 0.0 <= articulation <= 1.0:
        raise ConfigError(
            f"articulation must be in [0, 1] (the fraction of each joint's angle range that "
            f"poses span), got {articulation}"
        )


def check_appearance(name: str, appearance: str | None) -> None:
    """Validate the ``appearance`` option for category ``name``.

    Raises:
        ConfigError: ``appearance`` given for a category other than ``face``, or not one of
            :data:`APPEARANCES`.
    """
    if appearance is None:
        return
    if name != "face":
        raise ConfigError(
            f"appearance applies to the face category only; {name} has a single appearance "
            f"(got appearance={appearance!r})"
        )
    if appearance not in APPEARANCES:
        raise ConfigError(
            f"appearance must be one of {', '.join(APPEARANCES)} (how faces are rendered), "
            f"got {appearance!r}"
        )


def check_azimuth(name: str, azimuth: Sequence[float] | None) -> tuple[float, float] | None:
    """Validate the ``azimuth`` option for category ``name``; returns it as a float pair.

    Raises:
        ConfigError: ``azimuth`` given for ``face`` (its head rotation has its own ranges), not
            two numbers, or not ``lo < hi <= lo + 360``.
    """
    if azimuth is None:
        return None
    if name not in ARTICULATED:
        yaw = {"face": 70, "head": 60}.get(name)
        raise ConfigError(
            f"azimuth applies to the procedural articulated categories (creature, quadruped); "
            f"{name} draws its own head rotation (yaw within +-{yaw} degrees; "
            f"got azimuth={azimuth})"
        )
    try:
        lo, hi = (float(a) for a in azimuth)
    except (TypeError, ValueError):
        raise ConfigError(
            f"azimuth must be two numbers (lo, hi) in degrees, got {azimuth!r}"
        ) from None
    # Written so that NaN fails too.
    if not lo < hi <= lo + 360.0:
        raise ConfigError(
            f"azimuth must be (lo, hi) degrees with lo < hi <= lo + 360 (0 sees the front, 180 "
            f"the back), got ({lo:g}, {hi:g})"
        )
    return lo, hi


def get_category(
    name: str,
    *,
    sfm_dir: str | Path | None = None,
    articulation: float | None = None,
    azimuth: Sequence[float] | None = None,
    appearance: Appearance | None = None,
) -> Category:
    """The generator of category ``name`` (built once per process and options).

    Args:
        name: one of :data:`CATEGORIES`.
        sfm_dir: the Surrey Face Model folder (``face`` only).
        articulation: fraction of each joint's angle range that poses span (``creature`` and
            ``quadruped`` only); None keeps the category's default (``SPEC.articulation``).
        azimuth: camera azimuth range ``(lo, hi)`` in degrees (``creature`` and ``quadruped``
            only); None keeps the default, all around.
        appearance: how faces are rendered (``face`` only, one of :data:`APPEARANCES`); None
            is ``"default"`` (the same generator).

    Raises:
        ConfigError: unknown name, ``face`` without ``sfm_dir``, a bad ``articulation`` (given
            for ``face``, or outside [0, 1]), a bad ``azimuth`` (:func:`check_azimuth`) or a
            bad ``appearance`` (:func:`check_appearance`).
    """
    if name not in CATEGORIES:
        raise ConfigError(f"unknown synthetic category {name!r}; valid: {', '.join(CATEGORIES)}")
    check_articulation(name, articulation)
    view_range = check_azimuth(name, azimuth)
    check_appearance(name, appearance)
    if articulation is not None:
        articulation = float(articulation)
    look: Appearance | None = (appearance or "default") if name == "face" else None
    key = (
        name,
        str(Path(sfm_dir).resolve()) if sfm_dir is not None and name == "face" else "",
        articulation,
        view_range,
        look,
    )
    if key not in _cache:
        if name == "face":
            from kp3d.data.synth.face import FaceCategory

            if sfm_dir is None:
                raise ConfigError(
                    "the face category needs the Surrey Face Model: pass its folder (eos' share/ "
                    "layout with sfm_shape_3448.bin, expression_blendshapes_3448.bin, "
                    "ibug_to_sfm.txt and sfm_model_contours.json) as --sfm-dir / sfm_dir"
                )
            _cache[key] = FaceCategory.from_dir(Path(sfm_dir), appearance=look or "default")
        elif name == "head":
            from kp3d.data.synth.head import HeadCategory

            _cache[key] = HeadCategory()
        else:
            from kp3d.data.synth.articulated import ArticulatedCategory

            module = __import__(f"kp3d.data.synth.{name}", fromlist=["SPEC"])
            spec = module.SPEC
            if articulation is not None:
                spec = dataclasses.replace(spec, articulation=articulation)
            if view_range is not None:
                spec = dataclasses.replace(spec, azimuth=view_range)
            _cache[key] = ArticulatedCategory(spec)
    return _cache[key]


def effective_articulation(category: Category) -> float | None:
    """The ``articulation`` a generator poses with; None for categories without joints."""
    from kp3d.data.synth.articulated import ArticulatedCategory

    if isinstance(category, ArticulatedCategory):
        return float(category.spec.articulation)
    return None


def effective_azimuth(category: Category) -> list[float] | None:
    """The camera azimuth range (degrees) a generator draws from; None for ``face``."""
    from kp3d.data.synth.articulated import ArticulatedCategory

    if isinstance(category, ArticulatedCategory):
        return [float(a) for a in category.spec.azimuth]
    return None


def effective_appearance(category: Category) -> Appearance | None:
    """The appearance a generator renders with (``"default"`` when none was asked for); None
    for the categories other than ``face``."""
    from kp3d.data.synth.face import FaceCategory

    if isinstance(category, FaceCategory):
        return category.appearance
    return None


def check_options(size: int, views: int, pairs: bool, n: int | None = None) -> None:
    """Validate generation options.

    Raises:
        ConfigError: naming the option and its valid range.
    """
    if not 32 <= size <= 256:
        raise ConfigError(f"size must be in 32..256, got {size}")
    if views < 1:
        raise ConfigError(f"views must be >= 1, got {views}")
    if pairs and views not in (1, 2):
        raise ConfigError(f"pairs renders 2 views per instance; views must be 1 or 2, got {views}")
    if n is not None and n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")


@contextmanager
def _one_thread() -> Iterator[None]:
    # Rendering is many small ops: extra intra-op threads only add synchronisation (several
    # times slower on a busy machine). Parallelism comes from worker processes instead.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def render_indices(
    category: Category,
    indices: Sequence[int],
    *,
    size: int,
    seed: int,
    views: int = 1,
    pairs: bool = False,
) -> Rendered:
    """Render instances ``indices`` of the set ``seed`` in one batch (leading axes B, V), on
    one intra-op thread."""
    v = 2 if pairs else views
    params = [category.sample(scene.rng_for(seed, i), v, pairs) for i in indices]
    with torch.no_grad(), _one_thread():
        return category.render(scene.stack_params(params), size)


def iter_rendered(
    category: Category,
    n: int,
    *,
    size: int,
    seed: int,
    views: int = 1,
    pairs: bool = False,
    start: int = 0,
    chunk: int = CHUNK,
) -> Iterator[tuple[range, Rendered]]:
    """Render instances ``start .. start + n - 1`` in chunks of ``chunk``."""
    for lo in range(start, start + n, chunk):
        idx = range(lo, min(lo + chunk, start + n))
        yield idx, render_indices(category, idx, size=size, seed=seed, views=views, pairs=pairs)


def to_samples(
    r: Rendered, indices: Sequence[int], category_id: int, *, multiview: bool
) -> list[Sample]:
    """Split a rendered batch into :class:`Sample` objects (view axis kept if ``multiview``)."""
    out = []
    V = r.image.shape[1]
    for b, i in enumerate(indices):
        fields = {
            "image": r.image[b],
            "mask": r.mask[b, :, None].float(),
            "depth": r.depth[b, :, None],
            "kp2d": r.kp2d[b],
            "vis": r.vis[b],
            "kp3d": r.kp3d[b],
            "intrinsics": r.intrinsics[b],
            "extrinsics": r.extrinsics[b],
        }
        if multiview:
            fields["view"] = torch.arange(V)
        else:
            fields = {k: t[0] for k, t in fields.items()}
        out.append(
            Sample(
                **{k: t.clone() for k, t in fields.items()},
                instance=torch.tensor(i),
                category=torch.tensor(category_id),
                name=f"{i:06d}",
            )
        )
    return out


def generate(
    category: str,
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    views: int = 1,
    pairs: bool = False,
    sfm_dir: str | Path | None = None,
    start: int = 0,
    articulation: float | None = None,
    azimuth: Sequence[float] | None = None,
    appearance: Appearance | None = None,
) -> list[Sample]:
    """Generate ``n`` samples of ``category`` in memory (instances ``start .. start + n - 1``).

    Args:
        category: one of :data:`CATEGORIES`.
        n: number of samples (instances, for multi-view sets).
        size: image side in pixels (32..256).
        seed: the set's seed; sample ``i`` depends only on ``(seed, i)`` and the options.
        views: cameras per instance; with ``views > 1`` every field has a leading V axis.
        pairs: two views per instance with a moderate relative rotation (azimuth 10-60 degrees
            apart for the articulated categories, yaw 10-45 degrees for faces and heads).
        sfm_dir: the Surrey Face Model folder (``face`` only).
        start: index of the first instance.
        articulation: fraction of each joint's angle range that poses span, centred on the
            range's middle (``creature`` and ``quadruped`` only; None: the category's default,
            0.3; 1: whole ranges). Only the joint angles change: the same ``seed`` gives the
            same viewpoints, proportions, colours and backgrounds.
        azimuth: the camera's azimuth range ``(lo, hi)`` in degrees (``creature`` and
            ``quadruped`` only; None: all around).
        appearance: how faces are rendered (``face`` only): None or ``"default"``, the
            generator's usual faces; ``"shifted"``, the same faces and head rotations (from the
            same ``seed``) framed, lit, coloured and set against backgrounds as the default
            never is (:mod:`kp3d.data.synth.face`).

    Returns:
        ``n`` :class:`Sample` objects.
    """
    check_options(size, views, pairs, n)
    gen = get_category(
        category,
        sfm_dir=sfm_dir,
        articulation=articulation,
        azimuth=azimuth,
        appearance=appearance,
    )
    cid = CATEGORIES.index(category)
    multiview = pairs or views > 1
    out: list[Sample] = []
    chunks = iter_rendered(gen, n, size=size, seed=seed, views=views, pairs=pairs, start=start)
    for idx, r in chunks:
        out += to_samples(r, idx, cid, multiview=multiview)
    return out


__all__ = [
    "APPEARANCES",
    "ARTICULATED",
    "CATEGORIES",
    "GENERATOR_VERSION",
    "Appearance",
    "Category",
    "check_appearance",
    "check_articulation",
    "check_azimuth",
    "effective_appearance",
    "effective_articulation",
    "effective_azimuth",
    "generate",
    "get_category",
    "iter_rendered",
    "render_indices",
    "to_samples",
]
