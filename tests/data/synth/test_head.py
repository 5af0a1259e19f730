import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kp3d.data.schema import collate
from kp3d.data.synth import CATEGORIES, generate, get_category, render_indices, scene
from kp3d.data.synth.head import EDGES, NAMES, PITCH, YAW, HeadCategory, front_surface
from kp3d.errors import ConfigError
from kp3d.geometry.cameras import project_pinhole
from kp3d.metrics.nme import mirror_permutation


def fields_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in a.present())


def params(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = HeadCategory()
    return scene.stack_params([gen.sample(scene.rng_for(seed, i), 1, False) for i in range(n)])


def test_names_are_paired_left_right_and_edges_valid() -> None:
    assert 16 <= len(NAMES) <= 24 and len(set(NAMES)) == len(NAMES)
    perm = mirror_permutation(NAMES)
    assert perm is not None
    for i, j in enumerate(perm):
        assert perm[j] == i
        if "left" in NAMES[i]:
            assert NAMES[j] == NAMES[i].replace("left", "right")
    assert sum("left" in n for n in NAMES) == sum("right" in n for n in NAMES) >= 6
    assert all(0 <= a < len(NAMES) and 0 <= b < len(NAMES) and a != b for a, b in EDGES)


def test_head_is_appended_and_needs_no_file() -> None:
    assert CATEGORIES[:3] == ("creature", "quadruped", "face") and CATEGORIES[3] == "head"
    gen = get_category("head")
    assert gen.keypoint_names == NAMES and gen.absent == () and gen.view_dependent == ()


def test_single_view_samples_have_every_field() -> None:
    s = generate("head", 3, size=40, seed=0)
    x = s[0]
    K = len(NAMES)
    assert x.image.shape == (3, 40, 40) and x.image.min() >= 0 and x.image.max() <= 1
    assert x.mask.shape == (1, 40, 40) and x.depth.shape == (1, 40, 40)
    assert torch.equal(x.mask > 0, x.depth > 0)
    assert x.kp2d.shape == (K, 2) and x.vis.shape == (K,) and x.vis.dtype == torch.bool
    assert x.kp3d.shape == (K, 3) and x.intrinsics.shape == (3, 3) and x.extrinsics.shape == (3, 4)
    assert x.category.item() == CATEGORIES.index("head")
    assert collate(s).image.shape == (3, 3, 40, 40)
    assert all(0.1 < float(y.mask.mean()) < 0.8 for y in s)


def test_keypoints_are_the_projection_of_the_3d_keypoints() -> None:
    for x in generate("head", 6, size=48, seed=1):
        assert (x.kp3d[:, 2] > 0).all()
        assert torch.allclose(project_pinhole(x.kp3d, x.intrinsics), x.kp2d, atol=1e-3)


def test_kp3d_is_the_world_landmarks_through_the_extrinsics() -> None:
    gen = HeadCategory()
    p = params(3, seed=5)
    world = gen.landmarks(p)
    r = render_indices(gen, range(3), size=48, seed=5)
    Rt = r.extrinsics[:, 0]
    cam = (world[:, :, None, :] * Rt[:, None, :, :3]).sum(-1) + Rt[:, None, :, 3]
    assert torch.allclose(cam, r.kp3d[:, 0], atol=1e-5)


def test_determinism_by_seed_and_independence_from_batching() -> None:
    a = generate("head", 5, size=32, seed=7)
    b = generate("head", 5, size=32, seed=7)
    assert all(fields_equal(x, y) for x, y in zip(a, b))
    c = generate("head", 5, size=32, seed=8)
    assert not torch.equal(a[0].image, c[0].image)
    d = generate("head", 3, size=32, seed=7, start=2)
    assert all(fields_equal(x, y) for x, y in zip(a[2:], d))


def test_visible_landmarks_lie_on_the_head() -> None:
    s = generate("head", 24, size=64, seed=2)
    n_vis = 0
    for x in s:
        # The pixel of a visible landmark, or one next to it (a landmark on the outline may
        # fall just outside the covered pixel centres), shows the head.
        grown = F.max_pool2d(x.mask[None], 3, stride=1, padding=1)[0, 0] > 0
        col, row = x.kp2d.floor().long().unbind(-1)
        assert grown[row[x.vis], col[x.vis]].all()
        # ... at the landmark's depth where the pixel centre is covered (a pixel of the
        # outline may show the background).
        seen = x.depth[0, row[x.vis], col[x.vis]]
        covered = seen > 0
        assert ((seen - x.kp3d[x.vis, 2]).abs()[covered] < 0.03).all()
        n_vis += int(x.vis.sum())
    assert n_vis > 0.7 * len(s) * len(NAMES)


def test_landmarks_are_on_the_outer_surface() -> None:
    p = params(64, seed=3)
    lm = HeadCategory().landmarks(p).double()  # (B, L, 3)
    c, r = p["centres"].double(), p["radii"].double()
    q = (((lm[:, :, None] - c[:, None]) / r[:, None]) ** 2).sum(-1)  # (B, L, P)
    # On one ellipsoid (q = 1) and inside none (q >= 1).
    assert (q >= 1 - 1e-4).all()
    assert torch.allclose(q.amin(-1), torch.ones_like(q[..., 0]), atol=1e-4)


def test_front_surface_matches_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(2, 3, 3, generator=g, dtype=torch.float64) - 0.5
    radii = torch.rand(2, 3, 3, generator=g, dtype=torch.float64) * 0.5 + 0.2
    xy = torch.rand(2, 7, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8
    got = front_surface(centres, radii, xy)
    for b in range(2):
        for i in range(7):
            best = -math.inf
            for k in range(3):
                (cx, cy, cz), (rx, ry, rz) = centres[b, k].tolist(), radii[b, k].tolist()
                x, y = xy[b, i].tolist()
                h = 1 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2
                if h >= 0:
                    best = max(best, cz + rz * math.sqrt(h))
            assert got[b, i].item() == pytest.approx(best)


def test_yaw_and_pitch_stay_in_range_and_span_it() -> None:
    s = generate("head", 200, size=32, seed=4)
    R = torch.stack([x.extrinsics[:, :3] for x in s]).double()
    # R = diag(1, -1, -1) R_z(roll) R_y(yaw) R_x(pitch): its last row is
    # -(-sin yaw, cos yaw sin pitch, cos yaw cos pitch).
    yaw = torch.rad2deg(torch.asin(R[:, 2, 0]))
    pitch = torch.rad2deg(torch.atan2(-R[:, 2, 1], -R[:, 2, 2]))
    assert yaw.abs().max() <= YAW + 1e-3 and pitch.abs().max() <= PITCH + 1e-3
    assert yaw.min() < -0.8 * YAW and yaw.max() > 0.8 * YAW
    assert pitch.min() < -0.7 * PITCH and pitch.max() > 0.7 * PITCH


def test_the_far_ear_is_hidden_when_the_head_turns_away() -> None:
    s = generate("head", 120, size=64, seed=6)
    left, right = NAMES.index("left_ear"), NAMES.index("right_ear")
    turned = 0
    for x in s:
        yaw = math.degrees(math.asin(float(x.extrinsics[2, 0])))
        if abs(yaw) < 45:
            continue
        turned += 1
        far = left if x.kp3d[left, 2] > x.kp3d[right, 2] else right
        assert not x.vis[far]
        assert x.vis[NAMES.index("nose_tip")]
    assert turned > 10


def test_depth_varies_with_the_view() -> None:
    # The point of the category: the nose tip's depth relative to the ears changes with yaw.
    s = generate("head", 64, size=32, seed=9)
    nose, le, re = NAMES.index("nose_tip"), NAMES.index("left_ear"), NAMES.index("right_ear")
    rel = np.array([float(x.kp3d[le, 2] - x.kp3d[re, 2]) for x in s])
    assert rel.std() > 0.03 and (rel > 0).any() and (rel < 0).any()
    assert all(x.kp3d[nose, 2] < x.kp3d[[le, re], 2].max() for x in s)


def test_multi_view_and_pairs_are_one_rigid_head() -> None:
    for x in generate("head", 2, size=32, seed=3, views=3):
        E = x.extrinsics
        for a, b in ((0, 1), (0, 2)):
            R = E[b, :, :3] @ E[a, :, :3].T
            t = E[b, :, 3] - R @ E[a, :, 3]
            assert torch.allclose(x.kp3d[a] @ R.T + t, x.kp3d[b], atol=1e-4)
    for x in generate("head", 8, size=32, seed=1, pairs=True):
        y0 = math.degrees(math.asin(float(x.extrinsics[0, 2, 0])))
        y1 = math.degrees(math.asin(float(x.extrinsics[1, 2, 0])))
        assert 10 - 1e-3 <= abs(y1 - y0) <= 45 + 1e-3 and abs(y1) <= YAW + 1e-3


def test_articulated_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="head has no joints"):
        generate("head", 1, articulation=0.5)
    with pytest.raises(ConfigError, match="head draws its own head rotation"):
        generate("head", 1, azimuth=(-90, 90))
