"""``face``: random faces of the Surrey Face Model (SFM) with the 68 iBUG landmarks.

Instance: identity coefficients ~ N(0, 1) (clipped to +-3) for every PCA component (63 in the
public model); expression: each blendshape active with probability 0.35 and weight U(0, 1),
weights rescaled to sum to at most 1; skin albedo per vertex: a tone between light and dark
skin with a random hue shift, smooth random variation (random Fourier features over the
surface), fine per-vertex noise, redder lips, darker brows and eye regions.
View: head rotation ``R_z(roll) R_y(yaw) R_x(pitch)`` about the model's axes (yaw +-70, pitch
+-30, roll +-20 degrees, uniform), field of view 10-20 degrees, the face's image box filling
70-90% of the image, a light from the camera's side, a random background. Faces are rendered
two-sided (the mesh is an open mask).

Appearances (the ``appearance`` option, :data:`kp3d.data.synth.APPEARANCES`; :data:`LOOKS`)
    * ``default``: as above; in detail, the box centred within +-0.04 of the image centre (a
      fraction of the image side), the light's direction (camera frame, towards the light)
      ``(U(-1, 1), U(-1, 0.4), -U(0.6, 1.6))`` normalised, ambient U(0.3, 0.5), diffuse
      U(0.5, 0.8); dark brown brows (level U(0.05, 0.4) times RGB (1, 0.85, 0.7)); background
      saturation U(0.1, 0.6) and fine noise amplitude U(0, 0.04).
    * ``shifted``: rendering settings the default never has, for out-of-distribution tests.
      Scale and position: the face's image box fills 45-65% of the image, its centre within
      +-0.10. Light: harsh, from the side and above instead of from the camera's side,
      direction ``(s U(0.8, 1.5), U(-1.5, -0.4), -U(0.1, 0.5))`` normalised, ``s`` a random
      sign; ambient U(0.1, 0.25), diffuse U(0.9, 1.2). Albedo: a colour cast per face, the
      albedo times ``1 + N(0, 0.2)`` per RGB channel, clipped to [0, 1]; grey brows, level
      U(0.3, 0.7). Background: saturated and busier, saturation U(0.6, 1.0), fine noise
      amplitude U(0.05, 0.12).

    Both consume the instance's stream draw for draw (each shifted range replaces a default one
    with as many draws; the colour cast is drawn last), so a seed gives the same identity,
    expression, skin pattern, head rotations and fields of view in either appearance: the same
    face geometry and poses, with the camera's distance and offset following the framing.

Frames and units: the world frame is the model's (x to the subject's left, y up, z out of the
face), in metres; the camera frame is kp3d's (x right, y down, z forward). ``extrinsics``
map world to camera, so a frontal face has ``R = diag(1, -1, -1)``.

Landmarks (K = 68, iBUG order, 0-based here: iBUG number n is index n - 1)
    * Mapped landmarks (``ibug_to_sfm.txt``): fixed mesh vertices.
    * iBUG 61 and 65 (inner mouth corners) have no vertex in the model: always absent
      (``vis = False``, coordinates 0); they are listed as ``absent`` in the set's meta.json.
    * Contour 1-8 (subject's right) and 10-17 (left) are view dependent, as in 2D annotations,
      which put them on the face's outline whatever the pose: each is the silhouette point of
      a horizontal band of the mesh (landmark marching). The bands are centred on points evenly
      spaced by arc length (on the mean shape) along the model contour of
      ``sfm_model_contours.json``, from the contour vertex level with the outer eye corner down
      to the chin (landmark 9); a landmark is, among the band's vertices on its side and away
      from the midline (so never the nose), the one furthest out in the image along the
      projected model x axis. Their 3D positions are therefore *not* the same surface point in
      different views (listed as ``view_dependent`` in meta.json), and a band's silhouette can
      be hidden by another part of the face (e.g. the jaw under a raised chin), which ``vis``
      then says.
Visibility: a landmark is visible when it projects inside the image and the surface seen at its
pixel (unprojected with the depth buffer) is the background, lies behind it, or lies within
8 mm + 2 pixel footprints of it in 3D; the nose hiding the far eye corner is occluded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from kp3d.data.synth import Appearance, check_appearance, scene
from kp3d.data.synth.mesh import vertex_normals
from kp3d.data.synth.raster import fragment_values, rasterize
from kp3d.data.synth.sfm import SurreyFaceModel, load_sfm

_GROUPS = (
    ("jaw", 17),
    ("right_brow", 5),
    ("left_brow", 5),
    ("nose_bridge", 4),
    ("nostril", 5),
    ("right_eye", 6),
    ("left_eye", 6),
    ("outer_lip", 12),
    ("inner_lip", 8),
)
IBUG_NAMES: tuple[str, ...] = tuple(f"{g}_{i + 1}" for g, n in _GROUPS for i in range(n))
"""Names of the 68 iBUG landmarks, in order (the subject's right/left)."""


def _ibug_edges() -> tuple[tuple[int, int], ...]:
    edges: list[tuple[int, int]] = []
    start = 0
    for group, n in _GROUPS:
        closed = group.endswith(("eye", "lip"))
        edges += [(start + i, start + i + 1) for i in range(n - 1)]
        if closed:
            edges.append((start + n - 1, start))
        start += n
    edges.append((30, 33))  # nose tip to the middle of the nostrils
    return tuple(edges)


IBUG_EDGES = _ibug_edges()
RIGHT_CONTOUR = tuple(range(8))  # iBUG 1-8
LEFT_CONTOUR = tuple(range(16, 8, -1))  # iBUG 17-10, top to bottom like the right side
CHIN = 8
YAW, PITCH, ROLL = 70.0, 30.0, 20.0
VIS_RADIUS = 0.008


@dataclass(frozen=True)
class Look:
    """The rendering ranges of one appearance (see the module doc); every range is drawn
    uniformly."""

    fill: tuple[float, float]
    """Fraction of the image the face's image box fills (its longer side)."""
    shift: float
    """Largest offset of the box centre from the image centre, per axis, a fraction of the
    image side."""
    light: Literal["camera", "side"]
    """The camera-side light (:func:`scene.sample_light`) or a harsh one (:func:`side_light`)."""
    cast: float
    """Standard deviation of the colour cast: the albedo times ``1 + N(0, cast)`` per RGB
    channel (0: none, and nothing drawn)."""
    brows: tuple[float, float]
    """Grey level of the brows' colour."""
    brow_tint: tuple[float, float, float]
    """Factors of the brows' RGB (brown or neutral grey)."""
    saturation: tuple[float, float]
    """Saturation of the background's colours (:func:`scene.sample_background`)."""
    fine: tuple[float, float]
    """Amplitude of the background's fine noise."""


LOOKS: dict[Appearance, Look] = {
    "default": Look(
        fill=(0.7, 0.9),
        shift=0.04,
        light="camera",
        cast=0.0,
        brows=(0.05, 0.4),
        brow_tint=(1.0, 0.85, 0.7),
        saturation=(0.1, 0.6),
        fine=(0.0, 0.04),
    ),
    "shifted": Look(
        fill=(0.45, 0.65),
        shift=0.10,
        light="side",
        cast=0.2,
        brows=(0.3, 0.7),
        brow_tint=(1.0, 1.0, 1.0),
        saturation=(0.6, 1.0),
        fine=(0.05, 0.12),
    ),
}
"""Each appearance's ranges."""


def side_light(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A harsh light from the side and above (camera frame, towards the light): direction
    ``(s U(0.8, 1.5), U(-1.5, -0.4), -U(0.1, 0.5))`` normalised, ``s`` a random sign; ambient
    U(0.1, 0.25), diffuse U(0.9, 1.2).

    Five draws, as :func:`scene.sample_light` makes: the sign and the x magnitude come from one
    U(-1, 1) (its sign and its absolute value are independent), so what follows in the stream
    is drawn from the same numbers in either light.
    """
    u = rng.uniform(-1, 1)
    d = np.array(
        [math.copysign(0.8 + 0.7 * abs(u), u), rng.uniform(-1.5, -0.4), -rng.uniform(0.1, 0.5)]
    )
    return {
        "light": d / np.linalg.norm(d),
        "ambient": np.array(rng.uniform(0.1, 0.25)),
        "diffuse": np.array(rng.uniform(0.9, 1.2)),
    }


class FaceCategory:
    """Samples and renders SFM faces (see the module doc)."""

    name = "face"
    keypoint_names = IBUG_NAMES
    edges = IBUG_EDGES

    def __init__(self, model: SurreyFaceModel, *, appearance: Appearance = "default") -> None:
        """``appearance``: how the faces are rendered (:data:`LOOKS`).

        Raises:
            ConfigError: an unknown ``appearance``.
        """
        check_appearance(self.name, appearance)
        self.model = model
        self.appearance: Appearance = appearance
        self.look = LOOKS[appearance]
        shape = model.shape
        mean = shape.mean.astype(np.float64)
        self._mean = mean
        # The mouth hole is closed by a fan around one extra vertex behind it (index N).
        self._mouth = torch.from_numpy(self._mouth_loop())
        n = len(mean)
        loop = self._mouth.numpy()
        fan = np.stack((np.roll(loop, -1), loop, np.full_like(loop, n)), -1)
        self.faces = torch.from_numpy(np.concatenate((shape.triangles, fan)).astype(np.int64))
        n_kp = len(IBUG_NAMES)

        fixed = np.full(n_kp, -1)
        contour = set(RIGHT_CONTOUR + LEFT_CONTOUR)
        for number, v in model.mapping.vertices.items():
            if 1 <= number <= n_kp and number - 1 not in contour:
                fixed[number - 1] = v
        self._fixed = torch.from_numpy(fixed)

        # Contour landmarks: the candidate vertices of each landmark's band.
        self._cont_idx: list[int] = []
        cands: list[np.ndarray] = []
        side: list[float] = []
        for s, lms, verts, eye in (
            (-1.0, RIGHT_CONTOUR, model.contour_right, 37),
            (1.0, LEFT_CONTOUR, model.contour_left, 46),
        ):
            if len(verts) < 2:
                continue
            points = self._contour_points(list(verts), eye, len(lms))
            ys = [mean[a, 1] * (1 - w) + mean[b, 1] * w for a, b, w in points]
            for j, (k, p) in enumerate(zip(lms, points)):
                gaps = [abs(ys[j] - ys[i]) for i in (j - 1, j + 1) if 0 <= i < len(ys)]
                band = max(3.0, 0.5 * min(gaps))
                x_anat = abs(mean[p[0], 0] * (1 - p[2]) + mean[p[1], 0] * p[2])
                c = np.flatnonzero(
                    (np.abs(mean[:, 1] - ys[j]) <= band) & (s * mean[:, 0] >= 0.35 * x_anat)
                )
                if len(c) == 0:
                    c = np.array([p[0]])
                self._cont_idx.append(k)
                cands.append(c)
                side.append(s)
        width = max((len(c) for c in cands), default=1)
        self._cand = torch.tensor(
            np.stack([np.pad(c, (0, width - len(c)), mode="edge") for c in cands])
            if cands
            else np.zeros((0, 1), int)
        )
        self._cand_ok = torch.tensor(
            np.stack([np.arange(width) < len(c) for c in cands])
            if cands
            else np.zeros((0, 1), bool)
        )
        self._side = torch.tensor(side, dtype=torch.float32)
        self._cont = torch.tensor(self._cont_idx, dtype=torch.int64)
        defined = fixed >= 0
        defined[self._cont_idx] = True
        self.absent = tuple(int(i) for i in np.flatnonzero(~defined))
        self.view_dependent = tuple(sorted(self._cont_idx))
        self._defined = torch.from_numpy(defined)
        self._regions = self._region_weights()

    @classmethod
    def from_dir(cls, folder: Path, *, appearance: Appearance = "default") -> FaceCategory:
        return cls(load_sfm(folder), appearance=appearance)

    def _contour_points(self, verts: list[int], eye: int, n: int) -> list[tuple[int, int, float]]:
        """``n`` points evenly spaced by arc length on the mean shape along the model contour,
        from the contour vertex level with the outer eye corner down to (but not including) the
        chin, each as (vertex a, vertex b, weight of b): they fix the landmarks' bands."""
        mean = self._mean
        start = 0
        eye_v = self.model.mapping.vertices.get(eye)
        if eye_v is not None:
            start = int(np.argmin(np.abs(mean[verts, 1] - mean[eye_v, 1])))
        path = verts[start:]
        chin = self.model.mapping.vertices.get(CHIN + 1)
        if chin is not None and chin not in path:
            path = path + [chin]
        if len(path) < 2:
            path = verts
        seg = np.linalg.norm(np.diff(mean[path], axis=0), axis=1)
        cum = np.concatenate(([0.0], np.cumsum(seg)))
        out = []
        for j in range(n):
            d = cum[-1] * j / n
            i = int(np.clip(np.searchsorted(cum, d, side="right") - 1, 0, len(seg) - 1))
            w = float((d - cum[i]) / seg[i]) if seg[i] > 0 else 0.0
            out.append((path[i], path[i + 1], w))
        return out

    def _region_weights(self) -> np.ndarray:
        """(3, N) soft masks of lips, brows and eyes on the mean shape: Gaussian falloff with the
        distance to the landmark polylines (0 where the landmarks are unmapped)."""
        mean = self._mean
        m = self.model.mapping.vertices
        chains = (
            ((range(49, 61), True), (range(61, 69), True)),  # outer and inner lips
            ((range(18, 23), False), (range(23, 28), False)),  # brows
            ((range(37, 43), True), (range(43, 49), True)),  # eyes
        )
        out = np.zeros((3, len(mean)))
        for r, (region, sigma) in enumerate(zip(chains, (3.0, 2.5, 3.0))):
            segs = []
            for numbers, closed in region:
                pts = [mean[m[n]] for n in numbers if n in m]
                if closed and len(pts) > 2:
                    pts.append(pts[0])
                segs += list(pairwise(pts))
            if segs:
                a = np.stack([a for a, _ in segs])[None]  # (1, S, 3)
                d = np.stack([b for _, b in segs])[None] - a
                t = ((mean[:, None] - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-9)
                t = np.clip(t, 0, 1)
                dist = np.linalg.norm(mean[:, None] - (a + t[..., None] * d), axis=-1).min(-1)
                out[r] = np.exp(-0.5 * (dist / sigma) ** 2)
        return out

    def _mouth_loop(self) -> np.ndarray:
        """Vertices of the mesh boundary loop around the mouth, in order (empty if none): it is
        closed with a dark fan so an open mouth does not show the background."""
        tri = self.model.shape.triangles
        e = np.sort(np.concatenate((tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]])), axis=1)
        uniq, count = np.unique(e, axis=0, return_counts=True)
        boundary = uniq[count == 1]
        m = self.model.mapping.vertices
        lips = [m[n] for n in range(49, 69) if n in m]
        if not len(boundary) or not lips:
            return np.zeros(0, dtype=np.int64)
        adj: dict[int, list[int]] = {}
        for a, b in boundary:
            adj.setdefault(int(a), []).append(int(b))
            adj.setdefault(int(b), []).append(int(a))
        seen: set[int] = set()
        loops = []
        for start in adj:
            if start in seen:
                continue
            loop, prev, cur = [start], -1, start
            seen.add(start)
            while True:
                nxt = [x for x in adj[cur] if x != prev and x not in seen]
                if not nxt:
                    break
                prev, cur = cur, nxt[0]
                loop.append(cur)
                seen.add(cur)
            loops.append(np.array(loop))
        centre = self._mean[lips].mean(0)
        dist = [np.linalg.norm(self._mean[l].mean(0) - centre) for l in loops]
        best = loops[int(np.argmin(dist))]
        # Only a small loop near the lips is the mouth; the outer rim of the mask is not.
        radius = np.linalg.norm(self._mean[best] - centre, axis=1).max()
        span = np.linalg.norm(self._mean.max(0) - self._mean.min(0))
        return best if len(best) >= 3 and radius < 0.25 * span else np.zeros(0, dtype=np.int64)

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, views: int, pairs: bool) -> dict[str, np.ndarray]:
        """All random parameters of one face and its ``views`` views (the mesh included).

        Every appearance draws the same numbers up to the colour cast, drawn last (module doc).
        """
        look = self.look
        shape, expr = self.model.shape, self.model.expressions
        coeffs = np.clip(rng.standard_normal(len(shape.eigenvalues)), -3, 3)
        verts = self._mean + shape.basis.astype(np.float64) @ (coeffs * np.sqrt(shape.eigenvalues))
        if len(expr.names):
            w = rng.uniform(0, 1, len(expr.names)) * (rng.uniform(0, 1, len(expr.names)) < 0.35)
            w = w / max(1.0, w.sum())
            verts = verts + np.tensordot(w, expr.offsets.astype(np.float64), axes=1)
        albedo = self._albedo(rng)
        mouth = self._mouth.numpy()
        # The mouth's inner vertex: behind the centre of the lips' opening, dark.
        inner = verts[mouth].mean(0) - np.array([0.0, 0.0, 12.0]) if len(mouth) else verts[0]
        dark = albedo[mouth].mean(0) * 0.15 if len(mouth) else albedo[0]
        p = {
            "verts": np.concatenate((verts, inner[None])) * 1e-3,
            "albedo": np.concatenate((albedo, dark[None])),
        }

        yaw0, pitch0, roll0 = (
            rng.uniform(-YAW, YAW),
            rng.uniform(-PITCH, PITCH),
            rng.uniform(-ROLL, ROLL),
        )
        per_view = []
        for v in range(views):
            if v == 0:
                ypr = (yaw0, pitch0, roll0)
            elif pairs:
                yaw = yaw0 + rng.choice([-1, 1]) * rng.uniform(10, 45)
                if abs(yaw) > YAW:  # reflect into range, keeping the distance from view 0
                    yaw = yaw0 - math.copysign(abs(yaw - yaw0), yaw - yaw0)
                ypr = (
                    yaw,
                    np.clip(pitch0 + rng.uniform(-10, 10), -PITCH, PITCH),
                    np.clip(roll0 + rng.uniform(-10, 10), -ROLL, ROLL),
                )
            else:
                ypr = (rng.uniform(-YAW, YAW), rng.uniform(-PITCH, PITCH), rng.uniform(-ROLL, ROLL))
            per_view.append(
                {
                    "ypr": np.radians(np.array(ypr, dtype=np.float64)),
                    "fov": np.radians(np.array(rng.uniform(10, 20))),
                    "fill": np.array(rng.uniform(*look.fill)),
                    "shift": rng.uniform(-look.shift, look.shift, 2),
                    **(side_light(rng) if look.light == "side" else scene.sample_light(rng)),
                    **scene.sample_background(rng, saturation=look.saturation, fine=look.fine),
                }
            )
        p.update(scene.stack_views(per_view))
        if look.cast:
            p["albedo"] = np.clip(p["albedo"] * (1 + rng.normal(0, look.cast, 3)), 0, 1)
        return p

    def _albedo(self, rng: np.random.Generator) -> np.ndarray:
        """(N, 3) per-vertex skin albedo."""
        light, dark = np.array([0.96, 0.80, 0.70]), np.array([0.36, 0.23, 0.16])
        base = light + (dark - light) * rng.uniform(0, 1) ** 1.3
        base = base * (1 + rng.normal(0, 0.04, 3))
        mean = self._mean
        k = rng.normal(0, 1 / 25.0, (4, 3))  # spatial frequencies, rad / mm
        phase = rng.uniform(0, 2 * math.pi, 4)
        smooth = np.sin(mean @ k.T + phase) @ rng.normal(0, 0.04, (4, 3))  # (N, 3)
        fine = rng.normal(0, 0.025, (len(mean), 1))
        albedo = base * (1 + smooth + fine)
        lips, brows, eyes = self._regions
        lip_color = base * np.array([0.95, 0.55, 0.55]) * rng.uniform(0.75, 1.0)
        brow_color = np.full(3, rng.uniform(*self.look.brows)) * np.array(self.look.brow_tint)
        for weight, color, strength in (
            (lips, lip_color, 0.9),
            (brows, brow_color, 0.8),
            (eyes, base * 0.45, 0.6),
        ):
            a = (weight * strength)[:, None]
            albedo = albedo * (1 - a) + color * a
        return np.clip(albedo, 0, 1)

    # -- rendering --------------------------------------------------------------------------

    def render(self, p: dict[str, Tensor], size: int) -> scene.Rendered:
        """Render stacked parameters (from :meth:`sample`, via :func:`scene.stack_params`)."""
        V = p["view_fov"].shape[1]
        flat = {k[5:]: t.flatten(0, 1) for k, t in p.items() if k.startswith("view_")}

        def rep(t: Tensor) -> Tensor:  # (B, ...) -> (B * V, ...), instance-major like `flat`
            return t.repeat_interleave(V, 0)

        verts = p["verts"]
        R = scene.head_rotation(flat["ypr"])
        K = scene.intrinsics(flat["fov"], size)
        t = scene.frame_views(
            verts, R, K, size, fov=flat["fov"], fill=flat["fill"], shift=flat["shift"]
        )
        cam = scene.apply(R, rep(verts), t)
        screen = torch.cat((scene.project(cam, K), cam[..., 2:]), -1)
        frags = rasterize(screen, self.faces, (size, size))

        n_cam = scene.apply(R, rep(vertex_normals(verts, self.faces)))
        hit, pix = fragment_values(frags, self.faces, torch.cat((n_cam, rep(p["albedo"]), cam), -1))
        n = pix[:, :3] / pix[:, :3].norm(dim=-1, keepdim=True).clamp_min(1e-9)
        n = torch.where((n * pix[:, 6:]).sum(-1, keepdim=True) > 0, -n, n)  # two-sided
        img = hit // (size * size)
        shaded = scene.lambert(
            n, pix[:, 3:6], flat["light"][img], flat["ambient"][img], flat["diffuse"][img]
        )
        image = scene.composite(scene.render_background(flat, size), hit, shaded)

        kp3d = self._landmarks(cam, R, K)
        kp2d = scene.project(kp3d, K)
        vis = self._visibility(kp2d, kp3d, frags.depth, K) & self._defined
        kp3d = torch.where(self._defined[:, None], kp3d, torch.zeros_like(kp3d))
        kp2d = torch.where(self._defined[:, None], kp2d, torch.zeros_like(kp2d))
        Rt = torch.cat((R, t[..., None]), -1)
        return scene.Rendered.of_views(V, image, frags, kp2d, vis, kp3d, K, Rt)

    @staticmethod
    def _visibility(kp2d: Tensor, kp3d: Tensor, depth: Tensor, K: Tensor) -> Tensor:
        """Visible when one of the four pixels around the landmark sees the background, a surface
        behind it, or a surface within ``VIS_RADIUS`` + 2 pixel footprints of it. Four pixels,
        not one, because a landmark on a silhouette (the far-side contour, the nose ridge) sits
        where the depth jumps."""
        footprint = kp3d[..., 2] / K[:, None, 0, 0]
        vis = torch.zeros_like(footprint, dtype=torch.bool)
        for dx in (-0.5, 0.5):
            for dy in (-0.5, 0.5):
                at = kp2d + kp2d.new_tensor([dx, dy])
                seen = scene.unproject_pixels(at, depth, K)
                near = (seen - kp3d).norm(dim=-1) <= VIS_RADIUS + 2 * footprint
                vis |= scene.visibility(
                    at, kp3d[..., 2], depth, torch.zeros_like(footprint), own=near
                )
        H, W = depth.shape[-2:]
        u, v = kp2d.unbind(-1)
        return vis & (u >= 0) & (u < W) & (v >= 0) & (v < H)

    def _landmarks(self, cam: Tensor, R: Tensor, K: Tensor) -> Tensor:
        """(BV, 68, 3) camera-frame landmarks; undefined ones are garbage (masked by the caller)."""
        out = cam[:, self._fixed.clamp_min(0)]
        if len(self._cont):
            cand = cam[:, self._cand]  # (BV, C, M, 3)
            uv = scene.project(cand.flatten(1, 2), K).unflatten(1, self._cand.shape)
            # The image direction of the model's x axis, outwards on each landmark's side.
            out_dir = R[:, :2, 0][:, None, :] * self._side[None, :, None]  # (BV, C, 2)
            score = (uv * out_dir[:, :, None, :]).sum(-1).masked_fill(~self._cand_ok, -math.inf)
            best = score.argmax(-1)  # (BV, C)
            out[:, self._cont] = cand.gather(2, best[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
        return out
