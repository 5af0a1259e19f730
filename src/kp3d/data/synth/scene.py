"""What every synthetic category shares: random streams, cameras, framing, shading, backgrounds,
keypoint visibility and the rendered-batch container.

Randomness: every image index has its own NumPy stream, :func:`rng_for` ``(seed, index)``, from
which a category draws all of that instance's parameters (shape, pose, texture, and each view's
camera, light and background). Rendering is then a deterministic, batched function of the
parameters, so an image depends only on ``(seed, index)``, never on batching or worker count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kp3d.geometry.cameras import project_pinhole

if TYPE_CHECKING:
    from kp3d.data.synth.raster import Fragments

UP = (0.0, 1.0, 0.0)
"""World up of the procedural categories (their world frames are y up)."""


def rng_for(seed: int, index: int) -> np.random.Generator:
    """The random stream of image (or multi-view instance) ``index`` of the set ``seed``."""
    return np.random.default_rng([int(seed), int(index)])


class Rendered(NamedTuple):
    """A rendered batch: B instances of V views each, S x S pixels, K keypoints."""

    image: Tensor
    """(B, V, 3, S, S) float32 RGB in [0, 1]."""
    mask: Tensor
    """(B, V, S, S) bool."""
    depth: Tensor
    """(B, V, S, S) float32 camera z, 0 on the background."""
    kp2d: Tensor
    """(B, V, K, 2) pixels; 0 for absent keypoints."""
    vis: Tensor
    """(B, V, K) bool."""
    kp3d: Tensor
    """(B, V, K, 3) camera frame; 0 for absent keypoints."""
    intrinsics: Tensor
    """(B, V, 3, 3)."""
    extrinsics: Tensor
    """(B, V, 3, 4) world (the instance's own frame) to camera."""

    @classmethod
    def of_views(
        cls,
        views: int,
        image: Tensor,
        frags: Fragments,
        kp2d: Tensor,
        vis: Tensor,
        kp3d: Tensor,
        K: Tensor,
        Rt: Tensor,
    ) -> Rendered:
        """The batch from its B * V views, rendered instance-major: ``image`` (B * V, 3, S, S),
        ``frags`` their fragments, keypoints (B * V, K, ...), intrinsics ``K`` (B * V, 3, 3) and
        extrinsics ``Rt`` (B * V, 3, 4); every field then has leading axes (B, V)."""
        B, V, S = len(image) // views, views, image.shape[-1]
        return cls(
            image=image.view(B, V, 3, S, S),
            mask=frags.mask.view(B, V, S, S),
            depth=frags.depth.view(B, V, S, S),
            kp2d=kp2d.unflatten(0, (B, V)),
            vis=vis.unflatten(0, (B, V)),
            kp3d=kp3d.unflatten(0, (B, V)),
            intrinsics=K.unflatten(0, (B, V)),
            extrinsics=Rt.unflatten(0, (B, V)),
        )


# -- rotations ---------------------------------------------------------------------------------


def rot_x(a: Tensor) -> Tensor:
    """Right-handed rotation about x by ``a`` radians: (...) -> (..., 3, 3)."""
    c, s, o, i = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack((i, o, o, o, c, -s, o, s, c), -1).unflatten(-1, (3, 3))


def rot_y(a: Tensor) -> Tensor:
    """Right-handed rotation about y by ``a`` radians: (...) -> (..., 3, 3)."""
    c, s, o, i = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack((c, o, s, o, i, o, -s, o, c), -1).unflatten(-1, (3, 3))


def rot_z(a: Tensor) -> Tensor:
    """Right-handed rotation about z by ``a`` radians: (...) -> (..., 3, 3)."""
    c, s, o, i = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack((c, -s, o, s, c, o, o, o, i), -1).unflatten(-1, (3, 3))


def matmul(A: Tensor, B: Tensor) -> Tensor:
    """``A @ B`` for small matrices as broadcast multiply-adds.

    A batched GEMM may pick a different kernel for a different batch size; this keeps every
    instance's numbers independent of what else is in the batch.
    """
    return (A[..., :, :, None] * B[..., None, :, :]).sum(-2)


def apply(R: Tensor, X: Tensor, t: Tensor | None = None) -> Tensor:
    """``R X + t`` for row-stacked points: R (..., 3, 3), X (..., N, 3), t (..., 3) ->
    (..., N, 3)."""
    out = (X[..., :, None, :] * R[..., None, :, :]).sum(-1)
    return out if t is None else out + t[..., None, :]


# -- cameras -----------------------------------------------------------------------------------


def orbit_rotation(azimuth: Tensor, elevation: Tensor, roll: Tensor) -> Tensor:
    """World-to-camera rotation of a camera on a y-up orbit, looking at the orbit's centre.

    The camera sits in direction ``(cos e sin a, sin e, cos e cos a)`` from the centre, so
    azimuth 0 looks along -z at an object facing +z, and positive elevation looks down on it;
    ``roll`` turns the image about the optical axis. All (...) radians -> (..., 3, 3).
    """
    ce, se = elevation.cos(), elevation.sin()
    back = torch.stack((ce * azimuth.sin(), se, ce * azimuth.cos()), -1)  # centre -> camera
    z = -back
    up = torch.tensor(UP, dtype=z.dtype).expand_as(z)
    x = torch.linalg.cross(z, up)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x)
    R = torch.stack((x, y, z), -2)
    return matmul(rot_z(roll), R)


def head_rotation(ypr: Tensor) -> Tensor:
    """World-to-camera rotation of a head model (y up, facing +z) turned by yaw, pitch, roll:
    ``diag(1, -1, -1) R_z(roll) R_y(yaw) R_x(pitch)``, the flip taking the model's y-up frame to
    the camera's y-down, z-forward one. ypr (..., 3) radians -> (..., 3, 3)."""
    yaw, pitch, roll = ypr.unbind(-1)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=ypr.dtype))
    return matmul(flip, matmul(matmul(rot_z(roll), rot_y(yaw)), rot_x(pitch)))


def intrinsics(fov: Tensor, size: int) -> Tensor:
    """Square-pixel pinhole intrinsics with horizontal/vertical field of view ``fov`` (radians),
    principal point at the image centre: (...) -> (..., 3, 3)."""
    f = (size / 2) / torch.tan(fov / 2)
    o, i = torch.zeros_like(f), torch.ones_like(f)
    c = torch.full_like(f, size / 2)
    return torch.stack((f, o, c, o, f, c, o, o, i), -1).unflatten(-1, (3, 3))


def project(X: Tensor, K: Tensor) -> Tensor:
    """Pinhole ``u = fx X / Z + cx``: X (..., N, 3), K (..., 3, 3) -> (..., N, 2)
    (:func:`kp3d.geometry.project_pinhole`)."""
    return project_pinhole(X, K)


def frame_object(X: Tensor, K: Tensor, size: int, fill: Tensor, shift: Tensor) -> Tensor:
    """Translation that frames camera-frame points so their image box spans ``fill`` of the image.

    The points are moved along the optical axis until the longer side of their projected box is
    ``fill * size`` (exact for an object far from the camera compared with its depth, close
    otherwise) and sideways until the box centre sits at ``shift * size`` from the image centre.

    Args:
        X: (..., N, 3) camera-frame points (in front of the camera).
        K: (..., 3, 3) intrinsics.
        fill: (...) target fraction of the image.
        shift: (..., 2) target offset of the box centre, as a fraction of the image.

    Returns:
        (..., 3) translation to add to the camera-frame points.
    """
    uv = project(X, K)
    lo, hi = uv.amin(-2), uv.amax(-2)
    extent = (hi - lo).amax(-1) / size
    z_ref = X[..., 2].mean(-1)
    z_new = z_ref * extent / fill
    f = K[..., 0, 0]
    centre = (lo + hi) / 2 - size / 2  # box centre, pixels from the image centre
    # The box centre's ray at depth z_ref is shifted onto the target ray at depth z_new.
    xy_now = centre * (z_ref / f)[..., None]
    xy_new = shift * size * (z_new / f)[..., None]
    return torch.cat((xy_new - xy_now, (z_new - z_ref)[..., None]), -1)


def frame_views(
    verts: Tensor, R: Tensor, K: Tensor, size: int, *, fov: Tensor, fill: Tensor, shift: Tensor
) -> Tensor:
    """Camera translations that frame each instance in each of its views (:func:`frame_object`).

    The camera starts where the instance's bounding sphere would fill the image (every point is
    in front of the camera there); two passes of :func:`frame_object` then frame the projected
    box, the second correcting perspective.

    Args:
        verts: (B, N, 3) world points of B instances.
        R, K: (B * V, 3, 3) rotations and intrinsics of their V views each, instance-major.
        fov, fill: (B * V) field of view (radians) and target fraction of the image.
        shift: (B * V, 2) target offset of the box centre, as a fraction of the image.

    Returns:
        (B * V, 3) translations ``t`` of the views (camera point ``R X + t``).
    """
    V = len(R) // len(verts)
    centre = (verts.amax(1) + verts.amin(1)) / 2
    radius = (verts - centre[:, None]).norm(dim=-1).amax(-1)
    dist = radius.repeat_interleave(V, 0) / (fill * torch.tan(fov / 2))
    t = -apply(R, centre.repeat_interleave(V, 0)[:, None])[:, 0] + torch.stack(
        (torch.zeros_like(dist), torch.zeros_like(dist), dist), -1
    )
    views = verts.repeat_interleave(V, 0)
    for _ in range(2):
        t = t + frame_object(apply(R, views, t), K, size, fill, shift)
    return t


# -- appearance --------------------------------------------------------------------------------


def lambert(
    normals: Tensor, albedo: Tensor, light: Tensor, ambient: Tensor, diffuse: Tensor
) -> Tensor:
    """Lambertian shading ``albedo * (ambient + diffuse * max(0, n . l))``.

    Args:
        normals: (..., 3) unit normals (camera frame).
        albedo: (..., 3).
        light: (..., 3) unit directions towards the light (camera frame).
        ambient, diffuse: (...).

    Returns:
        (..., 3).
    """
    cos = (normals * light).sum(-1).clamp_min(0)
    return albedo * (ambient + diffuse * cos)[..., None]


def sample_background(
    rng: np.random.Generator,
    *,
    saturation: tuple[float, float] = (0.1, 0.6),
    fine: tuple[float, float] = (0.0, 0.04),
) -> dict[str, np.ndarray]:
    """Parameters of one random background: a two-colour gradient plus low-frequency noise.

    ``saturation``: the range of the colours' saturation (mixed towards grey); ``fine``: the
    range of the fine (8 x 8) noise's amplitude. Other ranges give the same number of draws, so
    the rest of the stream is unchanged.
    """
    base = rng.uniform(0.15, 0.85, size=3)
    other = np.clip(base + rng.normal(0, 0.2, size=3), 0, 1)
    # Desaturate towards grey so the object (full colour) stands out without being alone.
    grey = rng.uniform(0.3, 0.6)
    sat = rng.uniform(*saturation)
    return {
        "bg_colors": np.stack((base, other)) * sat + grey * (1 - sat),
        "bg_angle": np.array(rng.uniform(0, 2 * math.pi)),
        "bg_coarse": rng.normal(0, 1, size=(3, 3, 3)) * rng.uniform(0.02, 0.1),
        "bg_fine": rng.normal(0, 1, size=(3, 8, 8)) * rng.uniform(*fine),
    }


def render_background(p: dict[str, Tensor], size: int) -> Tensor:
    """(B, 3, S, S) backgrounds from stacked :func:`sample_background` parameters (B flat)."""
    B = p["bg_angle"].shape[0]
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    d = torch.stack((p["bg_angle"].cos(), p["bg_angle"].sin()), -1)  # (B, 2)
    g = d[:, 0, None, None] * centres[None, None, :] + d[:, 1, None, None] * centres[None, :, None]
    g = (g + 0.5).clamp(0, 1)[:, None]  # (B, 1, S, S)
    c0, c1 = p["bg_colors"][:, 0, :, None, None], p["bg_colors"][:, 1, :, None, None]
    img = c0 * (1 - g) + c1 * g
    for key in ("bg_coarse", "bg_fine"):
        img = img + F.interpolate(
            p[key].reshape(B, 3, *p[key].shape[-2:]),
            size=(size, size),
            mode="bilinear",
            align_corners=False,
        )
    return img.clamp(0, 1)


def sample_light(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A light from the camera's side (camera frame, towards the light), ambient and diffuse."""
    d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.4), -rng.uniform(0.6, 1.6)])
    return {
        "light": d / np.linalg.norm(d),
        "ambient": np.array(rng.uniform(0.3, 0.5)),
        "diffuse": np.array(rng.uniform(0.5, 0.8)),
    }


def composite(background: Tensor, hit: Tensor, colors: Tensor) -> Tensor:
    """Paint the covered pixels over the background.

    Args:
        background: (B, 3, S, S).
        hit: (M,) flat indices of covered pixels into (B, S, S).
        colors: (M, 3) their colours (clamped to [0, 1]).

    Returns:
        (B, 3, S, S).
    """
    B, _, S, _ = background.shape
    out = background.permute(0, 2, 3, 1).reshape(B * S * S, 3).clone()
    out[hit] = colors.clamp(0, 1)
    return out.view(B, S, S, 3).permute(0, 3, 1, 2).contiguous()


# -- ground truth ------------------------------------------------------------------------------


def at_pixels(kp2d: Tensor, maps: Tensor) -> Tensor:
    """Values of per-pixel ``maps`` (B, H, W) at the pixels whose squares contain ``kp2d``
    (B, K, 2); points outside the image read the nearest border pixel."""
    H, W = maps.shape[-2:]
    col = kp2d[..., 0].floor().clamp(0, W - 1)
    row = kp2d[..., 1].floor().clamp(0, H - 1)
    return maps.flatten(1).gather(1, (row * W + col).long())


def unproject_pixels(kp2d: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Camera-frame surface point (B, K, 3) seen at the centre of the pixel containing each
    keypoint (B, K, 2), from the depth buffer (B, H, W) and intrinsics (B, 3, 3); the origin
    on background pixels."""
    H, W = depth.shape[-2:]
    u = kp2d[..., 0].floor().clamp(0, W - 1) + 0.5
    v = kp2d[..., 1].floor().clamp(0, H - 1) + 0.5
    d = at_pixels(kp2d, depth)
    x = (u - K[:, None, 0, 2]) / K[:, None, 0, 0] * d
    y = (v - K[:, None, 1, 2]) / K[:, None, 1, 1] * d
    return torch.stack((x, y, d), -1)


def visibility(
    kp2d: Tensor, z: Tensor, depth: Tensor, tolerance: Tensor, *, own: Tensor | None = None
) -> Tensor:
    """Occlusion-based visibility from the depth buffer.

    A keypoint is visible when it projects inside the image and the surface seen at its pixel
    (the pixel whose square contains it) is not nearer than ``z - tolerance``, where
    ``tolerance`` is how far in front of the keypoint its own surface may be (the local body
    radius for a joint inside the body, a small margin for a point on the surface). A
    background pixel hides nothing, and neither does a surface the caller marks as the
    keypoint's ``own`` (e.g. the body part the joint belongs to).

    Args:
        kp2d: (B, K, 2) pixels.
        z: (B, K) camera depth of the keypoints.
        depth: (B, H, W) depth buffer (0 = background).
        tolerance: (B, K).
        own: (B, K) bool, optional.

    Returns:
        (B, K) bool.
    """
    H, W = depth.shape[-2:]
    u, v = kp2d[..., 0], kp2d[..., 1]
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
    seen = at_pixels(kp2d, depth)
    clear = (seen == 0) | (seen >= z - tolerance)
    if own is not None:
        clear = clear | own
    return inside & clear


def stack_views(views: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-view parameter dicts -> one dict of arrays with a leading view axis, keys ``view_*``."""
    return {"view_" + k: np.array([v[k] for v in views]) for k in views[0]}


def stack_params(params: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """Stack per-instance parameter dicts into batched tensors (float32 for floats)."""
    out = {}
    for k in params[0]:
        a = np.array([p[k] for p in params])
        out[k] = torch.from_numpy(a.astype(np.float32) if a.dtype.kind == "f" else a)
    return out
