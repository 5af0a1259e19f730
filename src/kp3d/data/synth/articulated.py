"""Procedural articulated categories: a kinematic tree of bones dressed in capsules and ellipsoids.

A category is declared as data (:class:`ArticulatedSpec`): joints (the keypoints) with their
parent, rest bone direction and length, and the range of each bone's rotation; parts (capsules
between two joints, or ellipsoids attached to one) with radii and a colour tint. One
:class:`ArticulatedCategory` samples instances from a spec and renders them in batches.

World frame of an instance: y up, z the way the animal faces, x to its left; the root joint at
the origin; metres. Each bone rotates about its parent joint, in the parent's frame, by
``R_y(twist) R_z(abduct) R_x(flex)`` (angles drawn uniformly from the middle ``articulation``
fraction of the joint's ranges), so sibling bones move independently.

What varies per instance: every bone-rotation angle; bone lengths (one factor per length group,
so left and right limbs match, times a small per-bone jitter); part thickness (one global factor
times a per-part jitter); overall size; colours, pattern and its frequency. Per view: camera
azimuth (all around unless the spec's ``azimuth`` narrows it), elevation, roll and field of
view; framing (the object's image box fills ``fill`` of the image, with a small offset); light;
background.

Ground truth per view: joints in the camera frame (kp3d) and projected (kp2d); ``vis`` from the
depth buffer (:func:`kp3d.data.synth.scene.visibility`): a joint is occluded when the surface
seen at its pixel belongs to none of its own parts (the parts that end or are centred at it)
and lies more than 1.25 body radii in front of it; the body radius is that of the thickest part
whose axis passes within its radius of the joint (a shoulder inside the torso is visible on
the torso's surface).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from kp3d.data.synth import scene
from kp3d.data.synth.mesh import capsule_template, vertex_normals
from kp3d.data.synth.raster import fragment_values, rasterize

Vec3 = tuple[float, float, float]
Range = tuple[float, float]


@dataclass(frozen=True)
class Joint:
    """A keypoint and the bone that ends at it.

    The bone runs from ``parent`` to this joint, ``length * direction`` (normalised) in the
    parent's frame at rest; it rotates about the parent joint by ``flex`` (about x), ``abduct``
    (about z) and ``twist`` (about y), degree ranges.
    """

    name: str
    parent: int = -1
    direction: Vec3 = (0.0, 1.0, 0.0)
    length: float = 0.0
    group: str = ""
    flex: Range = (0.0, 0.0)
    abduct: Range = (0.0, 0.0)
    twist: Range = (0.0, 0.0)

    def mirrored(self, name: str, parent: int) -> Joint:
        """The same joint on the other side (x, abduction and twist negated)."""
        d = (-self.direction[0], self.direction[1], self.direction[2])
        abduct, twist = (-self.abduct[1], -self.abduct[0]), (-self.twist[1], -self.twist[0])
        return Joint(name, parent, d, self.length, self.group, self.flex, abduct, twist)


@dataclass(frozen=True)
class Part:
    """A body part: a capsule from joint ``a`` to joint ``b``, or an ellipsoid at ``a`` (b=None).

    ``radii`` are in the part's frame: y along the capsule axis (the cap's extent), x set by
    ``ref`` (a direction in ``a``'s frame), z = x cross y. ``offset`` moves the centre, in
    ``a``'s frame. ``tint`` is the part's signature colour (mixed into the instance's colour);
    ``lod`` the template's (rings, segments).
    """

    name: str
    a: int
    b: int | None
    radii: Vec3
    tint: Vec3
    offset: Vec3 = (0.0, 0.0, 0.0)
    ref: Vec3 = (1.0, 0.0, 0.0)
    lod: tuple[int, int] = (4, 8)


@dataclass(frozen=True)
class ArticulatedSpec:
    """A procedural articulated category, as data."""

    name: str
    joints: tuple[Joint, ...]
    parts: tuple[Part, ...]
    elevation: Range = (-15.0, 50.0)
    """Camera elevation range, degrees (positive looks down)."""
    azimuth: Range = (0.0, 360.0)
    """Camera azimuth range, degrees: 0 looks at the object's front, 90 at its left side, 180
    at its back (:func:`kp3d.data.synth.scene.orbit_rotation`); the default goes all around.
    (-90, 90) keeps to the front half, as photographs of faces do."""
    root_tilt: Range = (-10.0, 10.0)
    """Range of the root's flex and abduction, degrees."""
    fov: Range = (30.0, 50.0)
    fill: Range = (0.55, 0.75)
    """Fraction of the image spanned by the longer side of the object's image box."""
    articulation: float = 0.3
    """Fraction of each joint's angle range that poses span, centred on the range's middle.
    1 draws every angle independently over the joint's whole range: a random-pose stress test
    whose shapes no low-rank model explains (a lifter trained on its exact 2D joints does not
    beat flat depth). 0.3 keeps the variety visible while the poses stay near a typical one,
    like the instances of a real category."""
    length_jitter: float = 0.2
    thickness_jitter: float = 0.25
    edges: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.articulation <= 1.0:
            raise ValueError(
                f"{self.name}: articulation must be in [0, 1], got {self.articulation}"
            )
        lo, hi = self.azimuth
        if not lo < hi <= lo + 360.0:
            raise ValueError(
                f"{self.name}: azimuth must be (lo, hi) with lo < hi <= lo + 360, "
                f"got {self.azimuth}"
            )
        object.__setattr__(
            self, "edges", tuple((j.parent, i) for i, j in enumerate(self.joints) if j.parent >= 0)
        )


class ArticulatedCategory:
    """Samples and renders instances of an :class:`ArticulatedSpec`."""

    def __init__(self, spec: ArticulatedSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.keypoint_names = tuple(j.name for j in spec.joints)
        self.edges = spec.edges
        self.absent: tuple[int, ...] = ()
        self.view_dependent: tuple[int, ...] = ()
        groups = sorted({j.group for j in spec.joints})
        self._group_of = torch.tensor([groups.index(j.group) for j in spec.joints])
        self._n_groups = len(groups)
        self._dirs = torch.tensor([j.direction for j in spec.joints], dtype=torch.float32)
        self._dirs = self._dirs / self._dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self._lengths = torch.tensor([j.length for j in spec.joints])
        rng = np.radians([[j.flex, j.abduct, j.twist] for j in spec.joints])  # (J, 3, 2)
        mid, half = rng.mean(-1), (rng[..., 1] - rng[..., 0]) / 2 * spec.articulation
        self._angle_lo, self._angle_hi = mid - half, mid + half

        # One mesh for the whole body: the parts' templates concatenated.
        unit, side, faces, vpart, fpart = [], [], [], [], []
        n = 0
        for i, p in enumerate(spec.parts):
            t = capsule_template(*p.lod)
            unit.append(t.unit)
            side.append(t.side)
            faces.append(t.faces + n)
            vpart.append(torch.full((len(t.unit),), i))
            fpart.append(torch.full((len(t.faces),), i))
            n += len(t.unit)
        self.faces = torch.cat(faces)
        self._unit, self._side = torch.cat(unit), torch.cat(side)
        self._vpart, self.face_part = torch.cat(vpart), torch.cat(fpart)
        self._radii = torch.tensor([p.radii for p in spec.parts])
        self._tint = torch.tensor([p.tint for p in spec.parts])
        self._offset = torch.tensor([p.offset for p in spec.parts])
        self._ref = torch.tensor([p.ref for p in spec.parts])
        self._a = torch.tensor([p.a for p in spec.parts])
        self._b = torch.tensor([p.b if p.b is not None else p.a for p in spec.parts])
        self._capsule = torch.tensor([p.b is not None for p in spec.parts])
        # The parts a joint belongs to: its surface never occludes the joint.
        own = torch.zeros(len(spec.joints), len(spec.parts), dtype=torch.bool)
        for i, p in enumerate(spec.parts):
            own[p.a, i] = True
            if p.b is not None:
                own[p.b, i] = True
        self._own = own

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, views: int, pairs: bool) -> dict[str, np.ndarray]:
        """All random parameters of one instance and its ``views`` views."""
        s = self.spec
        J, P = len(s.joints), len(s.parts)
        p: dict[str, np.ndarray] = {
            "angles": rng.uniform(self._angle_lo, self._angle_hi),  # (J, 3)
            "root": np.radians(rng.uniform(*s.root_tilt, size=2)),
            "group_scale": rng.uniform(1 - s.length_jitter, 1 + s.length_jitter, self._n_groups),
            "bone_scale": rng.uniform(0.95, 1.05, J),
            "size": np.array(rng.uniform(0.85, 1.15)),
            "thickness": rng.uniform(1 - s.thickness_jitter, 1 + s.thickness_jitter)
            * rng.uniform(0.9, 1.1, P),
            "color": _random_color(rng, 2),
            "tint_weight": np.array(rng.uniform(0.3, 0.55)),
            "pattern": np.eye(3)[rng.integers(3)],  # plain, stripes, spots
            "pattern_freq": np.array(rng.uniform(15.0, 40.0)),
            "pattern_strength": np.array(rng.uniform(0.3, 0.8)),
            "pattern_phase": rng.uniform(0, 2 * math.pi, (P, 3)),
        }
        azimuth = math.radians(s.azimuth[0]), math.radians(s.azimuth[1])
        az0 = rng.uniform(*azimuth)
        el0 = rng.uniform(*s.elevation)
        per_view: list[dict[str, np.ndarray]] = []
        for v in range(views):
            if v == 0:
                az, el = az0, el0
            elif pairs:
                az = az0 + rng.choice([-1, 1]) * math.radians(rng.uniform(10, 60))
                el = float(np.clip(el0 + rng.uniform(-15, 15), *s.elevation))
            else:
                az, el = rng.uniform(*azimuth), rng.uniform(*s.elevation)
            view = {
                "azimuth": np.array(az),
                "elevation": np.radians(np.array(el)),
                "roll": np.radians(np.array(rng.uniform(-8, 8))),
                "fov": np.radians(np.array(rng.uniform(*s.fov))),
                "fill": np.array(rng.uniform(*s.fill)),
                "shift": rng.uniform(-0.06, 0.06, 2),
                **scene.sample_light(rng),
                **scene.sample_background(rng),
            }
            per_view.append(view)
        p.update(scene.stack_views(per_view))
        return p

    # -- rendering --------------------------------------------------------------------------

    def pose(self, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Forward kinematics: joint positions (B, J, 3) and frames (B, J, 3, 3), world frame."""
        s = self.spec
        a = p["angles"]  # (B, J, 3) flex, abduct, twist
        local = scene.matmul(
            scene.matmul(scene.rot_y(a[..., 2]), scene.rot_z(a[..., 1])), scene.rot_x(a[..., 0])
        )
        length = (
            self._lengths
            * p["group_scale"][:, self._group_of]
            * p["bone_scale"]
            * p["size"][:, None]
        )
        root = scene.matmul(scene.rot_z(p["root"][:, 1]), scene.rot_x(p["root"][:, 0]))
        pos: list[Tensor] = []
        frames: list[Tensor] = []
        for j, joint in enumerate(s.joints):
            if joint.parent < 0:
                frames.append(scene.matmul(root, local[:, j]))
                pos.append(torch.zeros_like(root[:, 0]))
                continue
            R = scene.matmul(frames[joint.parent], local[:, j])
            frames.append(R)
            bone = (length[:, j, None] * self._dirs[j])[:, None, :]  # (B, 1, 3)
            pos.append(pos[joint.parent] + (R * bone).sum(-1))
        return torch.stack(pos, 1), torch.stack(frames, 1)

    def dress(
        self, joints: Tensor, frames: Tensor, p: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Body mesh: world vertices (B, N, 3), part-local vertex coordinates (B, N, 3) for the
        texture, and each joint's body radius (B, J): the largest radius of the parts whose axis
        passes within that radius of the joint (a shoulder inside the torso gets the torso's)."""
        radii = self._radii * (p["thickness"] * p["size"][:, None])[..., None]  # (B, P, 3)
        Ra = frames[:, self._a]  # (B, P, 3, 3)
        pa, pb = joints[:, self._a], joints[:, self._b]
        axis = pb - pa
        half = axis.norm(dim=-1) / 2
        y_cap = axis / (2 * half[..., None]).clamp_min(1e-9)
        ref = (Ra * self._ref[:, None, :]).sum(-1)
        x_cap = ref - (ref * y_cap).sum(-1, keepdim=True) * y_cap
        x_cap = x_cap / x_cap.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        z_cap = torch.linalg.cross(x_cap, y_cap)
        R_cap = torch.stack((x_cap, y_cap, z_cap), -1)
        capsule = self._capsule[:, None, None]
        R = torch.where(capsule, R_cap, Ra)
        half = torch.where(self._capsule, half, torch.zeros_like(half))
        offset = (Ra * (self._offset * p["size"][:, None, None])[..., None, :]).sum(-1)
        centre = (pa + pb) / 2 + offset

        v = self._vpart
        along_y = torch.tensor([0.0, 1.0, 0.0])
        local = radii[:, v] * self._unit + (self._side * half[:, v])[..., None] * along_y
        world = (R[:, v] * local[..., None, :]).sum(-1) + centre[:, v]

        # Distance of each joint to each part's axis segment (B, J, P).
        axis_dir = R[..., 1]
        rel = joints[:, :, None] - centre[:, None]
        along = (rel * axis_dir[:, None]).sum(-1).clamp(-half[:, None], half[:, None])
        dist = (rel - along[..., None] * axis_dir[:, None]).norm(dim=-1)
        part_radius = radii.amax(-1)[:, None]  # (B, 1, P)
        inside = dist <= part_radius
        joint_radius = torch.where(inside, part_radius, torch.zeros_like(dist)).amax(-1)
        return world, local, joint_radius

    def render(self, p: dict[str, Tensor], size: int) -> scene.Rendered:
        """Render stacked parameters (from :meth:`sample`, via :func:`scene.stack_params`)."""
        joints, frames = self.pose(p)
        verts, local, joint_radius = self.dress(joints, frames, p)
        normals = vertex_normals(verts, self.faces)
        V = p["view_azimuth"].shape[1]
        flat = {k[5:]: t.flatten(0, 1) for k, t in p.items() if k.startswith("view_")}
        R = scene.orbit_rotation(flat["azimuth"], flat["elevation"], flat["roll"])
        K = scene.intrinsics(flat["fov"], size)
        t = scene.frame_views(
            verts, R, K, size, fov=flat["fov"], fill=flat["fill"], shift=flat["shift"]
        )
        return self.shade(
            verts,
            normals,
            local,
            joints,
            joint_radius,
            p,
            R=R,
            t=t,
            K=K,
            light=flat["light"],
            ambient=flat["ambient"],
            diffuse=flat["diffuse"],
            background=scene.render_background(flat, size),
            views=V,
        )

    def shade(
        self,
        verts: Tensor,
        normals: Tensor,
        local: Tensor,
        joints: Tensor,
        joint_radius: Tensor,
        p: dict[str, Tensor],
        *,
        R: Tensor,
        t: Tensor,
        K: Tensor,
        light: Tensor,
        ambient: Tensor,
        diffuse: Tensor,
        background: Tensor,
        views: int,
    ) -> scene.Rendered:
        """Rasterise and shade posed bodies seen by known cameras, over given backgrounds.

        Args:
            verts, normals, local: (B, N, 3) world vertices, world normals and part-local
                texture coordinates (:meth:`dress`).
            joints: (B, J, 3) world joints; joint_radius: (B, J) (:meth:`dress`).
            p: the stacked instance parameters (colours and pattern, B instances).
            R, t, K: (B * V, 3, 3), (B * V, 3), (B * V, 3, 3) world-to-camera rotation,
                translation and intrinsics, instance-major.
            light: (B * V, 3) unit direction towards the light in each camera's frame;
                ambient, diffuse: (B * V,).
            background: (B * V, 3, S, S) what each view shows where no body is.
            views: V.

        Returns:
            :class:`kp3d.data.synth.scene.Rendered` with leading axes (B, V).
        """
        V = views
        size = background.shape[-1]

        def rep(x: Tensor) -> Tensor:
            return x.repeat_interleave(V, 0)

        cam = scene.apply(R, rep(verts), t)
        screen = torch.cat((scene.project(cam, K), cam[..., 2:]), -1)
        frags = rasterize(screen, self.faces, (size, size), cull_backfaces=True)

        n_cam = scene.apply(R, rep(normals))
        hit, pix = fragment_values(frags, self.faces, torch.cat((n_cam, rep(local)), -1))
        n = pix[:, :3] / pix[:, :3].norm(dim=-1, keepdim=True).clamp_min(1e-9)
        img = hit // (size * size)  # image of each covered pixel
        albedo = self._albedo(frags.face.reshape(-1)[hit], img // V, pix[:, 3:], p)
        shaded = scene.lambert(n, albedo, light[img], ambient[img], diffuse[img])
        image = scene.composite(background, hit, shaded)

        kp3d = scene.apply(R, rep(joints), t)
        kp2d = scene.project(kp3d, K)
        seen = scene.at_pixels(kp2d, frags.face)
        own = self._own[torch.arange(len(self.keypoint_names)), self.face_part[seen.clamp_min(0)]]
        own &= seen >= 0
        vis = scene.visibility(
            kp2d, kp3d[..., 2], frags.depth, 1.25 * rep(joint_radius) + 1e-3, own=own
        )
        Rt = torch.cat((R, t[..., None]), -1)
        return scene.Rendered.of_views(V, image, frags, kp2d, vis, kp3d, K, Rt)

    def _albedo(self, face: Tensor, inst: Tensor, local: Tensor, p: dict[str, Tensor]) -> Tensor:
        """Albedo (M, 3) of covered pixels (their ``face``, instance ``inst`` and part-local
        position ``local``): the instance colour mixed with each part's tint, with a stripe or
        spot pattern in part-local coordinates (so it moves with the part)."""
        part = self.face_part[face]
        w = p["tint_weight"][inst, None]
        color = p["color"][inst]  # (M, 2, 3)
        base = color[:, 0] * (1 - w) + self._tint[part] * w
        q = local * p["pattern_freq"][inst, None] + p["pattern_phase"][inst, part]
        stripes = 0.5 + 0.5 * torch.sin(q[:, 1])
        spots = torch.sigmoid(8 * (torch.sin(q).prod(-1) - 0.15))
        kind = p["pattern"][inst]
        t = (kind[:, 1] * stripes + kind[:, 2] * spots) * p["pattern_strength"][inst]
        return base * (1 - t[:, None]) + color[:, 1] * t[:, None]


def _random_color(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random saturated-ish RGB colours (n, 3)."""
    hsv = np.stack([rng.uniform(0, 1, n), rng.uniform(0.3, 0.9, n), rng.uniform(0.45, 1.0, n)], -1)
    return _hsv_to_rgb(hsv)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0] * 6, hsv[..., 1], hsv[..., 2]
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None]) % 6
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def mirror(joints: Sequence[Joint], first: int) -> list[Joint]:
    """Right-side copies of a chain of left-side joints (each the child of the previous one).

    The chain's first joint keeps its parent; ``first`` is the index the copies start at. Names
    have ``left`` replaced by ``right``.
    """
    return [
        j.mirrored(j.name.replace("left", "right"), j.parent if i == 0 else first + i - 1)
        for i, j in enumerate(joints)
    ]
