"""A calibrated capture rig (``kp3d synth creature|quadruped --rig V``): V fixed cameras in a
room watching one animal move, like Human3.6M's four-camera studio.

World frame: y up, metres, the floor at y = 0, the working volume a disc of radius
:data:`VOLUME_RADIUS` around the origin. The room is a box of half-side :data:`ROOM_HALF` and
height :data:`ROOM_HEIGHT` (tiled floor, walls with planks, a skirting board and posters).

Cameras (drawn once per set from ``(seed, "rig")``): azimuths spread evenly around the volume
(a random offset, jitter of +-10 degrees), distance 3.2-3.8 m, height 0.5-2.5 m, looking at a
point near (0, 0.6, 0) with no roll; a field of view that holds the volume plus the animal's
reach. Intrinsics are square-pixel pinhole with the principal point at the image centre.

Backgrounds: each camera's view of the empty room, ray-cast once (2 x 2 supersampled) and the
same in every frame of that camera; each frame multiplies it by a mild per-channel gain
(lighting noise, standard deviation 2% shared by the views of a moment plus 1% per view). The
clean backgrounds are what :attr:`Rig.background` holds and what the writer stores.

Motion: the N moments are cut into ``sequences`` clips of (nearly) equal length (moment ``i``
is in clip ``c`` when ``bounds[c] <= i < bounds[c + 1]``, :func:`clip_bounds`). Each clip is one
individual (proportions, colours, pattern drawn from ``(seed, c)``) whose position on the floor,
heading and joint angles move smoothly: key poses every :data:`KEY_EVERY` moments (positions
uniform in the volume, heading a random walk of up to 60 degrees per key, joint angles uniform
in the category's ``articulation`` ranges) joined by smoothstep interpolation. The body stands on
the floor (its lowest vertex at y = 0). Moment ``i`` depends only on ``(seed, i, n, sequences)``
and the options.

Ground truth per moment: world joints (J, 3) and, per view, the same as every synthetic set
(image, mask, depth, kp2d, occlusion-based vis, kp3d in the camera frame, intrinsics and
extrinsics, world to camera).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.data.synth import scene
from kp3d.data.synth.articulated import ArticulatedCategory
from kp3d.data.synth.mesh import vertex_normals
from kp3d.errors import ConfigError

VOLUME_RADIUS = 0.8
"""Radius (m) of the disc on the floor the animal's root moves in."""
ROOM_HALF = 5.0
"""Half side (m) of the square room."""
ROOM_HEIGHT = 3.2
"""Ceiling height (m)."""
KEY_EVERY = 8
"""Moments between two key poses of a clip."""
MIN_VIEWS, MAX_VIEWS = 2, 8

# Stream tags: a 3-number seed [seed, a, tag] never equals an instance's [seed, i].
_TAG_RIG, _TAG_KEYS, _TAG_IDENTITY, _TAG_FRAME = 101, 102, 103, 104


@dataclass(frozen=True)
class Rig:
    """The fixed cameras of a rig set and what each sees of the empty room."""

    intrinsics: Tensor
    """(V, 3, 3) pinhole intrinsics in pixels."""
    extrinsics: Tensor
    """(V, 3, 4) world-to-camera ``[R | t]``."""
    background: Tensor
    """(V, 3, S, S) float32 RGB in [0, 1], the empty room seen by each camera."""
    light: Tensor
    """(3,) unit world direction towards the light."""

    @property
    def views(self) -> int:
        return int(self.intrinsics.shape[0])


def check_rig(views: int, sequences: int, n: int | None = None) -> None:
    """Validate the rig options.

    Raises:
        ConfigError: ``views`` outside 2..8, ``sequences`` < 1 or more than ``n``.
    """
    if not MIN_VIEWS <= views <= MAX_VIEWS:
        raise ConfigError(f"rig must have {MIN_VIEWS}..{MAX_VIEWS} cameras, got {views}")
    if sequences < 1:
        raise ConfigError(f"sequences must be >= 1, got {sequences}")
    if n is not None and sequences > n:
        raise ConfigError(f"sequences ({sequences}) cannot exceed the number of moments n ({n})")


def clip_bounds(n: int, sequences: int) -> np.ndarray:
    """(sequences + 1,) int64 first moment of each clip, then ``n``: clips of nearly equal
    length."""
    return np.round(np.linspace(0, n, sequences + 1)).astype(np.int64)


def clip_of(n: int, sequences: int) -> np.ndarray:
    """(n,) int64 clip index of every moment."""
    return np.searchsorted(clip_bounds(n, sequences), np.arange(n), side="right") - 1


# -- cameras and room --------------------------------------------------------------------------


def make_rig(views: int, size: int, seed: int) -> Rig:
    """The cameras and room of the rig set ``seed`` (see the module doc)."""
    rng = np.random.default_rng([int(seed), 0, _TAG_RIG])
    offset = rng.uniform(0, 2 * math.pi)
    az = offset + 2 * math.pi * np.arange(views) / views + np.radians(rng.uniform(-10, 10, views))
    dist = rng.uniform(3.2, 3.8, views)
    height = rng.uniform(0.5, 2.5, views)
    target = np.stack(
        (rng.uniform(-0.1, 0.1, views), np.full(views, 0.6), rng.uniform(-0.1, 0.1, views)), -1
    )
    centre = target + np.stack((dist * np.sin(az), height - 0.6, dist * np.cos(az)), -1)
    back = centre - target
    rng_d = np.linalg.norm(back, axis=-1)
    elevation = np.arcsin(back[:, 1] / rng_d)
    # The volume (radius plus the body's reach, 0.8 m) must fit in the half field of view.
    fov = 2 * np.arctan((VOLUME_RADIUS + 0.8) / rng_d) * rng.uniform(1.0, 1.1, views)
    light = np.array([rng.uniform(-0.5, 0.5), 1.0, rng.uniform(-0.5, 0.5)])
    room = _sample_room(rng)

    f32 = torch.float32
    R = scene.orbit_rotation(
        torch.tensor(az, dtype=f32),
        torch.tensor(elevation, dtype=f32),
        torch.zeros(views, dtype=f32),
    )
    C = torch.tensor(centre, dtype=f32)
    t = -scene.apply(R, C[:, None])[:, 0]
    K = scene.intrinsics(torch.tensor(fov, dtype=f32), size)
    background = render_room(room, K, R, t, size)
    return Rig(
        intrinsics=K,
        extrinsics=torch.cat((R, t[..., None]), -1),
        background=background,
        light=torch.tensor(light / np.linalg.norm(light), dtype=f32),
    )


def _sample_room(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Colours and layout of the room's textures."""
    grey = rng.uniform(0.35, 0.7)

    def muted(n: int) -> np.ndarray:
        c = rng.uniform(0.1, 0.9, (n, 3))
        s = rng.uniform(0.15, 0.5, (n, 1))
        return c * s + grey * (1 - s)

    return {
        "floor": muted(2),  # two tile colours
        "tile": np.array(rng.uniform(0.4, 0.7)),
        "walls": muted(4),
        "plank": np.array(rng.uniform(0.25, 0.6)),
        "posters": rng.uniform(0.05, 0.95, (4, 2, 3)),  # per wall, two posters' colours
        "poster_pos": rng.uniform(-3.5, 3.0, (4, 2)),  # left edge along the wall (m)
        "poster_size": rng.uniform(0.6, 1.4, (4, 2, 2)),  # width, height (m)
        "phase": rng.uniform(0, 2 * math.pi, 8),
    }


def render_room(room: dict[str, np.ndarray], K: Tensor, R: Tensor, t: Tensor, size: int) -> Tensor:
    """Ray-cast the empty room: (V, 3, S, S) RGB in [0, 1], 2 x 2 samples per pixel.

    Args:
        room: from :func:`_sample_room`.
        K, R, t: (V, 3, 3), (V, 3, 3), (V, 3) cameras, world to camera.
    """
    sub = (torch.arange(2 * size, dtype=torch.float64) + 0.5) / 2  # pixel coordinates
    v_, u_ = torch.meshgrid(sub, sub, indexing="ij")
    K, R, t = K.double(), R.double(), t.double()
    x = (u_[None] - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None]
    y = (v_[None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None]
    d_cam = torch.stack((x, y, torch.ones_like(x)), -1)  # (V, 2S, 2S, 3)
    d = (d_cam[..., None, :] * R.transpose(-1, -2)[:, None, None]).sum(-1)  # world directions
    C = -(R.transpose(-1, -2) @ t[..., None])[..., 0]  # (V, 3) camera centres
    C = C[:, None, None]
    big = torch.full_like(x, torch.inf)

    def hit(axis: int, plane: Tensor) -> Tensor:
        s = (plane - C[..., axis]) / d[..., axis]
        return torch.where(s > 0, s, big)

    h = ROOM_HALF
    s_y = torch.where(
        d[..., 1] < 0, hit(1, torch.zeros_like(x)), hit(1, torch.full_like(x, ROOM_HEIGHT))
    )
    s_x = hit(0, torch.where(d[..., 0] > 0, h, -h) * torch.ones_like(x))
    s_z = hit(2, torch.where(d[..., 2] > 0, h, -h) * torch.ones_like(x))
    s = torch.minimum(torch.minimum(s_x, s_y), s_z)
    P = C + s[..., None] * d
    px, py, pz = P.unbind(-1)
    f = {k: torch.from_numpy(np.asarray(a, dtype=np.float64)) for k, a in room.items()}

    # Floor: tiles in two colours with dark grout and a faint low-frequency stain.
    tile = f["tile"]
    checker = ((torch.floor(px / tile) + torch.floor(pz / tile)) % 2)[..., None]
    floor = f["floor"][0] * (1 - checker) + f["floor"][1] * checker
    fx, fz = torch.frac(px / tile).abs(), torch.frac(pz / tile).abs()
    edge = torch.minimum(torch.minimum(fx, 1 - fx), torch.minimum(fz, 1 - fz))
    floor = floor * torch.where(edge < 0.04, 0.6, 1.0)[..., None]
    floor = (
        floor
        * (1 + 0.08 * torch.sin(1.3 * px + f["phase"][0]) * torch.sin(0.9 * pz + f["phase"][1]))[
            ..., None
        ]
    )

    # Walls: index 0..3 for +x, -x, +z, -z; the coordinate along each wall.
    on_x = s_x <= torch.minimum(s_y, s_z)
    wall = torch.where(on_x, torch.where(px > 0, 0, 1), torch.where(pz > 0, 2, 3))
    along = torch.where(on_x, pz, px)
    walls = f["walls"][wall]
    planks = 0.5 + 0.5 * torch.sin(2 * math.pi * along / f["plank"] + f["phase"][2 + wall % 4])
    walls = walls * (0.9 + 0.1 * planks)[..., None]
    walls = torch.where((py < 0.15)[..., None], walls * 0.55, walls)  # skirting board
    for k in range(2):
        left = f["poster_pos"][wall, k]
        w, hgt = f["poster_size"][wall, k, 0], f["poster_size"][wall, k, 1]
        inside = (along > left) & (along < left + w) & (py > 1.0) & (py < 1.0 + hgt)
        walls = torch.where(inside[..., None], f["posters"][wall, k], walls)

    ceiling = torch.full_like(floor, 0.85)
    floor_hit = (s_y <= torch.minimum(s_x, s_z)) & (d[..., 1] < 0)
    ceil_hit = (s_y <= torch.minimum(s_x, s_z)) & (d[..., 1] >= 0)
    color = torch.where(
        floor_hit[..., None], floor, torch.where(ceil_hit[..., None], ceiling, walls)
    )
    # Light falls off gently with the distance from the room's centre.
    color = color * (1.05 - 0.05 * (P[..., [0, 2]].norm(dim=-1) / h))[..., None]
    img = color.clamp(0, 1).permute(0, 3, 1, 2)  # (V, 3, 2S, 2S)
    return img.unflatten(-1, (size, 2)).unflatten(-3, (size, 2)).mean((-1, -3)).float().contiguous()


# -- motion ------------------------------------------------------------------------------------


def _smoothstep(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    w = w * w * (3 - 2 * w)
    return a * (1 - w) + b * w


def moment_params(
    category: ArticulatedCategory, index: int, *, n: int, sequences: int, seed: int, views: int
) -> dict[str, np.ndarray]:
    """Every random parameter of moment ``index``: the clip's individual, the interpolated pose,
    position and heading, and each view's lighting gain."""
    bounds = clip_bounds(n, sequences)
    c = int(np.searchsorted(bounds, index, side="right") - 1)
    tau = index - int(bounds[c])
    length = int(bounds[c + 1] - bounds[c])
    keys = length // KEY_EVERY + 2
    spec = category.spec
    ident = category.sample(np.random.default_rng([int(seed), c, _TAG_IDENTITY]), 1, False)
    p = {k: v for k, v in ident.items() if not k.startswith("view_")}

    rng = np.random.default_rng([int(seed), c, _TAG_KEYS])
    r = VOLUME_RADIUS * np.sqrt(rng.uniform(0, 1, keys))
    a = rng.uniform(0, 2 * math.pi, keys)
    pos = np.stack((r * np.cos(a), r * np.sin(a)), -1)
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(np.radians(rng.uniform(-60, 60, keys)))
    angles = rng.uniform(category._angle_lo, category._angle_hi, (keys, *category._angle_lo.shape))
    root = np.radians(rng.uniform(*spec.root_tilt, size=(keys, 2)))
    k, w = divmod(tau, KEY_EVERY)
    w = w / KEY_EVERY
    p["angles"] = _smoothstep(angles[k], angles[k + 1], w)
    p["root"] = _smoothstep(root[k], root[k + 1], w)
    p["position"] = _smoothstep(pos[k], pos[k + 1], w)
    p["heading"] = np.array(_smoothstep(heading[k], heading[k + 1], w))
    frame = np.random.default_rng([int(seed), int(index), _TAG_FRAME])
    p["gain"] = 1 + frame.normal(0, 0.02, 3) + frame.normal(0, 0.01, (views, 3))
    return p


def render_moments(
    category: ArticulatedCategory,
    indices: Sequence[int],
    rig: Rig,
    *,
    n: int,
    sequences: int,
    seed: int,
) -> tuple[scene.Rendered, Tensor]:
    """Render moments ``indices`` of a rig set in one batch, on the calling thread.

    Returns:
        The per-view :class:`kp3d.data.synth.scene.Rendered` (leading axes B, V) and the world
        joints (B, J, 3).
    """
    V = rig.views
    params = [
        moment_params(category, i, n=n, sequences=sequences, seed=seed, views=V) for i in indices
    ]
    p = scene.stack_params(params)
    B = len(indices)
    joints, frames = category.pose(p)
    verts, local, joint_radius = category.dress(joints, frames, p)
    # Place the body: turn it to its heading, stand it on the floor, move it in the volume.
    Ry = scene.rot_y(p["heading"])
    lift = -verts[..., 1].amin(1)
    shift = torch.stack((p["position"][:, 0], lift, p["position"][:, 1]), -1)
    verts = scene.apply(Ry, verts, shift)
    joints = scene.apply(Ry, joints, shift)
    normals = vertex_normals(verts, category.faces)

    R = rig.extrinsics[:, :, :3].repeat(B, 1, 1)
    t = rig.extrinsics[:, :, 3].repeat(B, 1)
    K = rig.intrinsics.repeat(B, 1, 1)
    light = scene.apply(R, rig.light.expand(B * V, 1, 3))[:, 0]
    background = (rig.background[None] * p["gain"][..., None, None]).flatten(0, 1).clamp(0, 1)
    ones = torch.ones(B * V)
    out = category.shade(
        verts,
        normals,
        local,
        joints,
        joint_radius,
        p,
        R=R,
        t=t,
        K=K,
        light=light,
        ambient=0.45 * ones,
        diffuse=0.6 * ones,
        background=background,
        views=V,
    )
    return out, joints


_rigs: dict[tuple[int, int, int], Rig] = {}


def get_rig(views: int, size: int, seed: int) -> Rig:
    """:func:`make_rig`, built once per process and arguments."""
    key = (views, size, seed)
    if key not in _rigs:
        _rigs[key] = make_rig(views, size, seed)
    return _rigs[key]


def generate_rig(
    category: str,
    n: int,
    *,
    views: int,
    sequences: int = 1,
    size: int = 64,
    seed: int = 0,
    articulation: float | None = None,
    indices: Sequence[int] | None = None,
) -> list[Sample]:
    """Moments of a rig set in memory, one :class:`Sample` per moment with a leading view axis.

    Args:
        category: ``creature`` or ``quadruped``.
        n: moments in the set (they define the clips, see the module doc).
        views: cameras, 2..8.
        sequences: motion clips the n moments are cut into.
        size: image side in pixels (32..256).
        seed: the set's seed (cameras, room, clips).
        articulation: as in :func:`kp3d.data.synth.generate`.
        indices: the moments to make (default all n).

    Returns:
        Samples with ``image`` (V, 3, S, S), ``mask``/``depth`` (V, 1, S, S), ``kp2d``, ``vis``,
        ``kp3d`` (camera frames), ``intrinsics``, ``extrinsics``, ``background`` (V, 3, S, S),
        ``view``, ``instance`` (the moment index) and ``category``. World joints are
        ``invert_extrinsics`` of any view applied to its ``kp3d`` (:mod:`kp3d.geometry`).
    """
    from kp3d.data.synth import CATEGORIES, _one_thread, check_options, get_category

    if category not in ("creature", "quadruped"):
        raise ConfigError(
            f"--rig renders the articulated categories (creature, quadruped), not {category!r}"
        )
    check_options(size, 1, False, n)
    check_rig(views, sequences, n)
    gen = get_category(category, articulation=articulation)
    assert isinstance(gen, ArticulatedCategory)
    rig = get_rig(views, size, seed)
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    out: list[Sample] = []
    cid = CATEGORIES.index(category)
    from kp3d.data.synth import CHUNK, to_samples

    for lo in range(0, len(idx), CHUNK):
        chunk = idx[lo : lo + CHUNK]
        with torch.no_grad(), _one_thread():
            r, _ = render_moments(gen, chunk, rig, n=n, sequences=sequences, seed=seed)
        for s in to_samples(r, chunk, cid, multiview=True):
            s.background = rig.background.clone()
            out.append(s)
    return out


__all__ = [
    "KEY_EVERY",
    "MAX_VIEWS",
    "MIN_VIEWS",
    "ROOM_HALF",
    "ROOM_HEIGHT",
    "VOLUME_RADIUS",
    "Rig",
    "check_rig",
    "clip_bounds",
    "clip_of",
    "generate_rig",
    "get_rig",
    "make_rig",
    "moment_params",
    "render_moments",
    "render_room",
]
