"""``head``: a procedural, textured human-like head with 20 named landmarks; needs no file.

A rigid object whose landmarks turn in depth as the head turns (yaw +-60, pitch +-20 degrees),
so a method that discovers keypoints in 2D can learn their depth from the collection: the
built-in stand-in for the paper's 3D face setting when the Surrey Face Model is not at hand.

Geometry (world frame = the head's: x to the subject's left, y up, z out of the face; metres):
ellipsoids unioned by the z-buffer: the skull (centred at the origin), the jaw (below and in
front of it), the nose, and two ears. Identity varies per instance: overall size, every
ellipsoid's radii and placement, and the eyes', brows', mouth's and hairline's positions and
sizes (all uniform draws). Texture (painted on the surface in the head frame, so it moves with
the head): skin tone with smooth variation, white eyes with a coloured iris, dark brows, lips
and their dark parting line, dark nostrils, hair over the top and back of the skull.

Landmarks (K = 20): ``forehead``, ``{left,right}_brow_{outer,inner}``,
``{left,right}_eye_{outer,inner}`` (the painted eye's corners), ``nose_bridge``, ``nose_tip``,
``{left,right}_nostril``, ``{left,right}_mouth_corner``, ``upper_lip``, ``lower_lip``, ``chin``,
``{left,right}_ear`` (the ear's outermost point). All but the ears are the front surface of the
head (the largest z of all ellipsoids) above a point ``(x, y)`` of the feature layout, so each
lies on the visible outer surface and on the painted feature it names.

View: head rotation ``R_z(roll) R_y(yaw) R_x(pitch)`` about the head's axes (yaw +-60, pitch
+-20, roll +-10 degrees, uniform), camera ``diag(1, -1, -1)`` times it (so a frontal head looks
at the camera), field of view 15-30 degrees, the head's image box filling 60-80% of the image,
a light from the camera's side, a random background. Pairs: the second view's yaw 10-45
degrees from the first (reflected into range), pitch and roll within 10 degrees.

Visibility: a landmark is visible when it projects inside the image and the surface seen at
its pixel is the background or not nearer than its depth minus 4 mm (times the head's size)
and two pixel footprints, so the far eye corner behind the nose or the far ear behind the
skull is occluded.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from kp3d.data.synth import scene
from kp3d.data.synth.mesh import capsule_template, vertex_normals
from kp3d.data.synth.raster import fragment_values, rasterize

NAMES: tuple[str, ...] = (
    "forehead",
    "left_brow_outer",
    "left_brow_inner",
    "right_brow_inner",
    "right_brow_outer",
    "left_eye_outer",
    "left_eye_inner",
    "right_eye_inner",
    "right_eye_outer",
    "nose_bridge",
    "nose_tip",
    "left_nostril",
    "right_nostril",
    "left_mouth_corner",
    "upper_lip",
    "right_mouth_corner",
    "lower_lip",
    "chin",
    "left_ear",
    "right_ear",
)
"""Landmark names, in order (left = the subject's left, world +x)."""


def _edges() -> tuple[tuple[int, int], ...]:
    i = NAMES.index
    pairs = [
        ("forehead", "nose_bridge"),
        ("left_brow_outer", "left_brow_inner"),
        ("right_brow_outer", "right_brow_inner"),
        ("left_eye_outer", "left_eye_inner"),
        ("right_eye_outer", "right_eye_inner"),
        ("left_eye_inner", "nose_bridge"),
        ("right_eye_inner", "nose_bridge"),
        ("nose_bridge", "nose_tip"),
        ("nose_tip", "left_nostril"),
        ("nose_tip", "right_nostril"),
        ("left_mouth_corner", "upper_lip"),
        ("upper_lip", "right_mouth_corner"),
        ("right_mouth_corner", "lower_lip"),
        ("lower_lip", "left_mouth_corner"),
        ("lower_lip", "chin"),
        ("left_eye_outer", "left_ear"),
        ("right_eye_outer", "right_ear"),
    ]
    return tuple((i(a), i(b)) for a, b in pairs)


EDGES = _edges()
YAW, PITCH, ROLL = 60.0, 20.0, 10.0
"""Half-ranges of the head rotation, degrees."""
PARTS = ("skull", "jaw", "nose", "left_ear", "right_ear")
_LOD = ((16, 24), (12, 20), (8, 12), (6, 10), (6, 10))
_MARGIN = 0.004
"""Depth margin of the visibility test, metres at size 1."""


def front_surface(centres: Tensor, radii: Tensor, xy: Tensor) -> Tensor:
    """Front-most z of a union of axis-aligned ellipsoids above points ``xy``.

    ``z = max_p c_z + r_z sqrt(1 - ((x - c_x) / r_x)^2 - ((y - c_y) / r_y)^2)`` over the
    ellipsoids whose outline contains ``(x, y)``; -inf where none does.

    Args:
        centres, radii: (B, P, 3).
        xy: (B, L, 2).

    Returns:
        (B, L) z.
    """
    d = (xy[:, :, None, :] - centres[:, None, :, :2]) / radii[:, None, :, :2]  # (B, L, P, 2)
    inside = 1 - (d * d).sum(-1)
    z = centres[:, None, :, 2] + radii[:, None, :, 2] * inside.clamp_min(0).sqrt()
    return torch.where(inside >= 0, z, torch.full_like(z, -math.inf)).amax(-1)


class HeadCategory:
    """Samples and renders procedural heads (see the module doc)."""

    name = "head"
    keypoint_names = NAMES
    edges = EDGES
    absent: tuple[int, ...] = ()
    view_dependent: tuple[int, ...] = ()

    def __init__(self) -> None:
        unit, faces, vpart = [], [], []
        n = 0
        for i, lod in enumerate(_LOD):
            t = capsule_template(*lod)
            unit.append(t.unit)
            faces.append(t.faces + n)
            vpart.append(torch.full((len(t.unit),), i))
            n += len(t.unit)
        self._unit = torch.cat(unit)
        self.faces = torch.cat(faces)
        self._vpart = torch.cat(vpart)

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, views: int, pairs: bool) -> dict[str, np.ndarray]:
        """All random parameters of one head (shape, features, colours) and its views."""
        u = rng.uniform
        s = u(0.9, 1.1)
        skull = np.array([u(0.068, 0.082), u(0.095, 0.11), u(0.085, 0.1)])
        jaw_r = np.array([skull[0] * u(0.7, 0.85), u(0.045, 0.06), skull[2] * u(0.7, 0.85)])
        jaw_c = np.array([0.0, -u(0.045, 0.06), u(0.015, 0.03)])
        nose_r = np.array([u(0.011, 0.017), u(0.022, 0.032), u(0.018, 0.03)])
        nose_y = -u(0.005, 0.02)
        skull_front = skull[2] * math.sqrt(max(0.0, 1 - (nose_y / skull[1]) ** 2))
        nose_c = np.array([0.0, nose_y, skull_front - 0.2 * nose_r[2]])
        ear_r = np.array([u(0.01, 0.016), u(0.025, 0.035), u(0.015, 0.022)])
        ear_y, ear_z = u(-0.01, 0.01), u(-0.015, 0.005)
        centres = np.stack(
            (
                np.zeros(3),
                jaw_c,
                nose_c,
                [skull[0] * 0.93, ear_y, ear_z],
                [-skull[0] * 0.93, ear_y, ear_z],
            )
        )
        radii = np.stack((skull, jaw_r, nose_r, ear_r, ear_r))
        eye = np.array([u(0.026, 0.034), u(0.01, 0.025), u(0.011, 0.015), u(0.005, 0.008)])
        brow_y = eye[1] + u(0.015, 0.022)
        brow = np.array(
            [eye[0] - eye[2] * u(0.6, 1.0), eye[0] + eye[2] * u(1.0, 1.4), brow_y, u(0.003, 0.005)]
        )
        mouth = np.array([u(-0.06, -0.045), u(0.018, 0.026), u(0.005, 0.009)])
        # The mouth sits on the jaw: keep it within the jaw's outline.
        mouth[0] = max(mouth[0], jaw_c[1] - 0.5 * jaw_r[1])
        chin_y = jaw_c[1] - jaw_r[1] * u(0.65, 0.8)
        forehead_y = brow_y + u(0.025, 0.035)
        hairline = forehead_y + u(0.0, 0.02)
        p: dict[str, np.ndarray] = {
            "centres": centres * s,
            "radii": radii * s,
            "size": np.array(s),
            "eye": eye * s,  # x of the centre, y, half width, half height
            "brow": brow * s,  # inner x, outer x, y, half thickness
            "mouth": mouth * s,  # y, half width, lip half height
            "nose_y": np.array(nose_y * s),
            "chin_y": np.array(chin_y * s),
            "forehead_y": np.array(forehead_y * s),
            "hairline": np.array(hairline * s),
            "hair_back": np.array(u(-0.5, 0.1)),  # hair covers z < hair_back * skull_z
            **self._colours(rng),
        }
        yaw0, pitch0, roll0 = u(-YAW, YAW), u(-PITCH, PITCH), u(-ROLL, ROLL)
        per_view = []
        for v in range(views):
            if v == 0:
                ypr = (yaw0, pitch0, roll0)
            elif pairs:
                yaw = yaw0 + rng.choice([-1, 1]) * u(10, 45)
                if abs(yaw) > YAW:  # reflect into range, keeping the distance from view 0
                    yaw = yaw0 - math.copysign(abs(yaw - yaw0), yaw - yaw0)
                ypr = (
                    yaw,
                    np.clip(pitch0 + u(-10, 10), -PITCH, PITCH),
                    np.clip(roll0 + u(-10, 10), -ROLL, ROLL),
                )
            else:
                ypr = (u(-YAW, YAW), u(-PITCH, PITCH), u(-ROLL, ROLL))
            per_view.append(
                {
                    "ypr": np.radians(np.array(ypr, dtype=np.float64)),
                    "fov": np.radians(np.array(u(15, 30))),
                    "fill": np.array(u(0.6, 0.8)),
                    "shift": u(-0.05, 0.05, 2),
                    **scene.sample_light(rng),
                    **scene.sample_background(rng),
                }
            )
        p.update(scene.stack_views(per_view))
        return p

    @staticmethod
    def _colours(rng: np.random.Generator) -> dict[str, np.ndarray]:
        light, dark = np.array([0.96, 0.80, 0.70]), np.array([0.36, 0.23, 0.16])
        skin = light + (dark - light) * rng.uniform(0, 1) ** 1.3
        skin = np.clip(skin * (1 + rng.normal(0, 0.04, 3)), 0, 1)
        hair = np.array([0.25, 0.17, 0.1]) * rng.uniform(0.2, 2.5) * (1 + rng.normal(0, 0.1, 3))
        iris = np.array([[0.35, 0.2, 0.1], [0.2, 0.35, 0.55], [0.25, 0.35, 0.2]])[
            rng.integers(3)
        ] * rng.uniform(0.6, 1.2)
        return {
            "skin": skin,
            "hair": np.clip(hair, 0.02, 0.95),
            "iris": np.clip(iris, 0, 1),
            "lips": np.clip(skin * np.array([0.95, 0.55, 0.55]) * rng.uniform(0.7, 1.0), 0, 1),
            "skin_freq": rng.normal(0, 40.0, (4, 3)),  # rad / m
            "skin_phase": rng.uniform(0, 2 * math.pi, 4),
            "skin_amp": rng.normal(0, 0.05, (4, 3)),
        }

    # -- geometry ---------------------------------------------------------------------------

    def landmarks(self, p: dict[str, Tensor]) -> Tensor:
        """(B, 20, 3) landmarks in the head's frame (the module doc says where each is)."""
        c, r = p["centres"], p["radii"]
        ex, ey, ew, _ = p["eye"].unbind(-1)
        bi, bo, by, _ = p["brow"].unbind(-1)
        my, mw, lh = p["mouth"].unbind(-1)
        ny = p["nose_y"]
        nose_rx, nose_ry = r[:, 2, 0], r[:, 2, 1]
        zero = torch.zeros_like(ex)
        xy = torch.stack(
            [
                torch.stack((zero, p["forehead_y"]), -1),
                torch.stack((bo, by), -1),
                torch.stack((bi, by), -1),
                torch.stack((-bi, by), -1),
                torch.stack((-bo, by), -1),
                torch.stack((ex + ew, ey), -1),
                torch.stack((ex - ew, ey), -1),
                torch.stack((-(ex - ew), ey), -1),
                torch.stack((-(ex + ew), ey), -1),
                torch.stack((zero, ey), -1),
                torch.stack((zero, ny), -1),
                torch.stack((0.7 * nose_rx, ny - 0.6 * nose_ry), -1),
                torch.stack((-0.7 * nose_rx, ny - 0.6 * nose_ry), -1),
                torch.stack((mw, my), -1),
                torch.stack((zero, my + lh), -1),
                torch.stack((-mw, my), -1),
                torch.stack((zero, my - lh), -1),
                torch.stack((zero, p["chin_y"]), -1),
            ],
            1,
        )
        front = torch.cat((xy, front_surface(c, r, xy)[..., None]), -1)
        ear_x = c[:, 3, 0] + r[:, 3, 0]
        ears = torch.stack(
            (
                torch.stack((ear_x, c[:, 3, 1], c[:, 3, 2]), -1),
                torch.stack((-ear_x, c[:, 4, 1], c[:, 4, 2]), -1),
            ),
            1,
        )
        return torch.cat((front, ears), 1)

    def mesh(self, p: dict[str, Tensor]) -> Tensor:
        """(B, N, 3) world vertices of the head's ellipsoids."""
        v = self._vpart
        return p["centres"][:, v] + p["radii"][:, v] * self._unit

    def _albedo(self, x: Tensor, inst: Tensor, p: dict[str, Tensor]) -> Tensor:
        """Albedo (M, 3) of covered pixels at head-frame points ``x`` (M, 3) of instances
        ``inst`` (M,): skin, then hair, brows, eyes, lips and nostrils painted over it."""
        q = {k: t[inst] for k, t in p.items() if not k.startswith("view_")}
        X, Y, Z = x.unbind(-1)
        front = Z > 0
        wave = torch.sin((x[:, None, :] * q["skin_freq"]).sum(-1) + q["skin_phase"])  # (M, 4)
        skin = q["skin"] * (1 + (wave[..., None] * q["skin_amp"]).sum(1))
        out = skin

        def paint(where: Tensor, colour: Tensor) -> None:
            nonlocal out
            out = torch.where(where[:, None], colour, out)

        skull_z = q["radii"][:, 0, 2]
        ears = (X.abs() > q["centres"][:, 3, 0] - 0.3 * q["radii"][:, 3, 0]) & (Z < 0.5 * skull_z)
        hair = ((Y > q["hairline"]) | (Z < q["hair_back"] * skull_z)) & ~ears
        paint(hair & (Y > q["chin_y"] + 0.02 * q["size"]), q["hair"])
        ex, ey, ew, eh = q["eye"].unbind(-1)
        bi, bo, by, bt = q["brow"].unbind(-1)
        ax = X.abs()
        # Brows: a thick segment from the inner to the outer end, slightly arched.
        t = ((ax - bi) / (bo - bi)).clamp(0, 1)
        arch = by + 0.25 * (bo - bi) * 0.3 * torch.sin(math.pi * t)
        on_brow = (ax >= bi - bt) & (ax <= bo + bt) & ((Y - arch).abs() < bt)
        paint(front & on_brow, q["hair"])
        e = ((ax - ex) / ew) ** 2 + ((Y - ey) / eh) ** 2
        paint(front & (e < 1), torch.full_like(out, 0.92))
        iris = (ax - ex) ** 2 + (Y - ey) ** 2 < (0.95 * eh) ** 2
        paint(front & iris, q["iris"])
        pupil = (ax - ex) ** 2 + (Y - ey) ** 2 < (0.4 * eh) ** 2
        paint(front & pupil, torch.full_like(out, 0.03))
        my, mw, lh = q["mouth"].unbind(-1)
        m = (X / mw) ** 2 + ((Y - my) / lh) ** 2
        paint(front & (m < 1), q["lips"])
        paint(front & (m < 1) & ((Y - my).abs() < 0.2 * lh), q["lips"] * 0.3)
        nose_rx, nose_ry = q["radii"][:, 2, 0], q["radii"][:, 2, 1]
        ny = q["nose_y"] - 0.75 * nose_ry
        nostril = ((ax - 0.45 * nose_rx) / (0.3 * nose_rx)) ** 2 + ((Y - ny) / (0.2 * nose_ry)) ** 2
        paint(front & (nostril < 1), skin * 0.25)
        return out.clamp(0, 1)

    # -- rendering --------------------------------------------------------------------------

    def render(self, p: dict[str, Tensor], size: int) -> scene.Rendered:
        """Render stacked parameters (from :meth:`sample`, via :func:`scene.stack_params`)."""
        V = p["view_fov"].shape[1]
        flat = {k[5:]: t.flatten(0, 1) for k, t in p.items() if k.startswith("view_")}

        def rep(t: Tensor) -> Tensor:  # (B, ...) -> (B * V, ...), instance-major like `flat`
            return t.repeat_interleave(V, 0)

        verts = self.mesh(p)
        R = scene.head_rotation(flat["ypr"])
        K = scene.intrinsics(flat["fov"], size)
        t = scene.frame_views(
            verts, R, K, size, fov=flat["fov"], fill=flat["fill"], shift=flat["shift"]
        )
        cam = scene.apply(R, rep(verts), t)
        screen = torch.cat((scene.project(cam, K), cam[..., 2:]), -1)
        frags = rasterize(screen, self.faces, (size, size), cull_backfaces=True)

        n_cam = scene.apply(R, rep(vertex_normals(verts, self.faces)))
        hit, pix = fragment_values(frags, self.faces, torch.cat((n_cam, rep(verts)), -1))
        n = pix[:, :3] / pix[:, :3].norm(dim=-1, keepdim=True).clamp_min(1e-9)
        img = hit // (size * size)
        albedo = self._albedo(pix[:, 3:], img // V, p)
        shaded = scene.lambert(
            n, albedo, flat["light"][img], flat["ambient"][img], flat["diffuse"][img]
        )
        image = scene.composite(scene.render_background(flat, size), hit, shaded)

        kp3d = scene.apply(R, rep(self.landmarks(p)), t)
        kp2d = scene.project(kp3d, K)
        footprint = kp3d[..., 2] / K[:, None, 0, 0]
        tol = _MARGIN * rep(p["size"])[:, None] + 2 * footprint
        vis = scene.visibility(kp2d, kp3d[..., 2], frags.depth, tol)
        Rt = torch.cat((R, t[..., None]), -1)
        return scene.Rendered.of_views(V, image, frags, kp2d, vis, kp3d, K, Rt)
