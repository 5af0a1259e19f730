import math

import pytest
import torch

from kp3d.data.synth.mesh import capsule_template
from kp3d.data.synth.raster import interpolate, rasterize


def brute_force(verts: torch.Tensor, faces: torch.Tensor, H: int, W: int, eps: float = 1e-6):
    """Per pixel, per face, in float64 Python loops: the nearest triangle containing the pixel
    centre. Returns face ids, depth, perspective-correct barycentrics and an 'ambiguous' mask
    (a pixel centre within eps of an edge, or two faces within eps in depth), where a correct
    rasteriser may legitimately disagree."""
    v = verts.double()
    face = torch.full((H, W), -1, dtype=torch.int64)
    depth = torch.zeros(H, W, dtype=torch.float64)
    bary = torch.zeros(H, W, 3, dtype=torch.float64)
    ambiguous = torch.zeros(H, W, dtype=torch.bool)
    layers = torch.zeros(H, W, dtype=torch.int64)

    def area(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])

    for j in range(H):
        for i in range(W):
            p = (i + 0.5, j + 0.5)
            hits = []
            for f, (a, b, c) in enumerate(faces.tolist()):
                A, B, C = v[a], v[b], v[c]
                total = area(A, B, C)
                if total == 0:
                    continue
                lam = [area(p, B, C) / total, area(A, p, C) / total, area(A, B, p) / total]
                if min(abs(x) for x in lam) < eps and min(lam) > -eps:
                    ambiguous[j, i] = True
                if min(lam) < 0:
                    continue
                w = [lam[0] / A[2], lam[1] / B[2], lam[2] / C[2]]
                z = 1 / sum(w)
                hits.append((float(z), f, [x * z for x in w]))
            layers[j, i] = len(hits)
            if not hits:
                continue
            hits.sort()
            if len(hits) > 1 and hits[1][0] - hits[0][0] < eps:
                ambiguous[j, i] = True
            depth[j, i], face[j, i] = hits[0][0], hits[0][1]
            bary[j, i] = torch.tensor(hits[0][2], dtype=torch.float64)
    return face, depth, bary, ambiguous, layers


def random_scene(seed: int, n_faces: int, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Large random triangles that overlap and interpenetrate (per-vertex depths differ)."""
    g = torch.Generator().manual_seed(seed)
    uv = torch.rand(n_faces * 3, 2, generator=g) * torch.tensor([W + 6.0, H + 6.0]) - 3
    z = 1 + 4 * torch.rand(n_faces * 3, 1, generator=g)
    verts = torch.cat((uv, z), -1)[None]
    faces = torch.arange(n_faces * 3).view(n_faces, 3)
    return verts, faces


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_overlapping_triangles(seed: int) -> None:
    H, W = 11, 14
    verts, faces = random_scene(seed, 7, H, W)
    frags = rasterize(verts, faces, (H, W), tile=4)
    face, depth, bary, ambiguous, layers = brute_force(verts[0], faces, H, W)
    ok = ~ambiguous
    assert ambiguous.float().mean() < 0.05
    assert torch.equal(frags.face[0][ok], face[ok])
    assert torch.equal(frags.mask[0][ok], face[ok] >= 0)
    assert torch.allclose(frags.depth[0][ok].double(), depth[ok], atol=1e-5)
    assert torch.allclose(frags.bary[0][ok].double(), bary[ok], atol=1e-5)
    # The test is only meaningful if triangles really occlude each other somewhere.
    assert (layers >= 2).sum() > 10


def test_occlusion_order_follows_depth_not_face_order() -> None:
    # Two identical screen triangles; the later one is nearer and must win everywhere.
    tri = torch.tensor([[1.0, 1.0], [15.0, 2.0], [3.0, 12.0]])
    verts = torch.cat(
        (torch.cat((tri, torch.full((3, 1), 5.0)), 1), torch.cat((tri, torch.full((3, 1), 2.0)), 1))
    )[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, faces, (14, 16))
    assert frags.mask.any()
    assert (frags.face[frags.mask] == 1).all()
    assert torch.allclose(frags.depth[frags.mask], torch.tensor(2.0))
    frags = rasterize(verts.flip(1), faces, (14, 16))  # now face 0 is the near one
    assert (frags.face[frags.mask] == 0).all()


def test_interpenetrating_triangles_split_per_pixel() -> None:
    # A tilted triangle pierces a flat one: each wins where it is nearer.
    verts = torch.tensor(
        [
            [
                [0.0, 0, 3],
                [20, 0, 3],
                [0, 20, 3],
                [20, 20, 3],
                [0, 0, 1],
                [20, 0, 5],
                [0, 20, 1],
                [20, 20, 5],
            ]
        ]
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2], [4, 5, 6], [5, 7, 6]])
    frags = rasterize(verts, faces, (20, 20))
    u = torch.arange(20) + 0.5
    tilted_depth = 1 / ((1 - u / 20) / 1 + (u / 20) / 5)  # 1/z is affine in screen space
    expect_tilted = (tilted_depth < 3)[None, :].expand(20, 20)
    assert torch.equal(frags.face[0] >= 2, expect_tilted)


def test_pixel_centres_are_at_half_integers() -> None:
    # A fronto-parallel square from u, v = 10.2 to 19.8 covers exactly the pixels whose
    # centres (i + 0.5) lie inside: columns and rows 10..19.
    verts = torch.tensor(
        [[[10.2, 10.2, 2.0], [19.8, 10.2, 2.0], [19.8, 19.8, 2.0], [10.2, 19.8, 2.0]]]
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    mask = rasterize(verts, faces, (32, 32)).mask[0]
    expect = torch.zeros(32, 32, dtype=torch.bool)
    expect[10:20, 10:20] = True
    assert torch.equal(mask, expect)


@pytest.mark.parametrize("tile", [1, 3, 8, 64, (8, 1), (1, 5), None])
def test_result_does_not_depend_on_tile_size(tile: int | tuple[int, int] | None) -> None:
    verts, faces = random_scene(5, 30, 37, 29)
    ref = rasterize(verts, faces, (37, 29), tile=2)
    out = rasterize(verts, faces, (37, 29), tile=tile)
    for a, b in zip(ref, out):
        assert torch.equal(a, b)


def test_slivers_give_the_same_result_with_any_tiles() -> None:
    """Triangles 40 px wide and 1-2 px tall (a rough depth map seen from the side), where the
    default picks wide, flat tiles."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 60, generator=g) * 64
    y = torch.arange(60.0).repeat(2, 1) * 0.5 + torch.rand(2, 60, generator=g)
    verts = torch.stack((x, y, 1 + torch.rand(2, 60, generator=g)), -1)
    faces = torch.stack((torch.arange(58), torch.arange(1, 59), torch.arange(2, 60)), -1)
    ref = rasterize(verts, faces, (32, 64), tile=1)
    assert ref.mask.any()
    for tile in (None, (8, 1), (8, 2), 8):
        for a, b in zip(ref, rasterize(verts, faces, (32, 64), tile=tile)):
            assert torch.equal(a, b)


def test_batch_items_are_independent() -> None:
    v1, faces = random_scene(1, 10, 16, 16)
    v2, _ = random_scene(2, 10, 16, 16)
    both = rasterize(torch.cat((v1, v2)), faces, (16, 16))
    alone = rasterize(v2, faces, (16, 16))
    for a, b in zip(both, alone):
        assert torch.equal(a[1], b[0])


def sphere_screen(radius: float, centre: tuple[float, float, float], f: float, c: float):
    t = capsule_template(12, 24)
    X = t.unit * radius + torch.tensor(centre)
    uv = X[:, :2] / X[:, 2:] * f + c
    return torch.cat((uv, X[:, 2:]), -1)[None], t.faces, X


def test_backface_culling_keeps_the_visible_side_of_a_closed_mesh() -> None:
    verts, faces, _ = sphere_screen(1.0, (0.2, -0.1, 5.0), 40.0, 16.0)
    full = rasterize(verts, faces, (32, 32))
    culled = rasterize(verts, faces, (32, 32), cull_backfaces=True)
    assert torch.equal(full.mask, culled.mask)
    assert torch.equal(full.face, culled.face)
    # Turning the mesh inside out (reversed winding) culls the near side instead.
    flipped = rasterize(verts, faces.flip(-1), (32, 32), cull_backfaces=True)
    m = flipped.mask
    assert (flipped.depth[m] > full.depth[m]).all()
    assert flipped.depth[m].max() - full.depth[m].min() > 1.8


def test_depth_and_interpolation_on_a_sphere() -> None:
    verts, faces, X = sphere_screen(1.0, (0.0, 0.0, 4.0), 30.0, 16.0)
    frags = rasterize(verts, faces, (32, 32), cull_backfaces=True)
    pts = interpolate(frags, faces, X[None])  # camera-frame surface points
    m = frags.mask[0]
    # Interpolated positions lie (nearly, the mesh is polygonal) on the sphere and their z is
    # the depth buffer; their projection is the pixel centre.
    r = (pts[0][m] - torch.tensor([0.0, 0.0, 4.0])).norm(dim=-1)
    assert ((r > 0.97) & (r < 1.0 + 1e-5)).all()
    assert torch.allclose(pts[0][m][:, 2], frags.depth[0][m], atol=1e-5)
    jj, ii = m.nonzero(as_tuple=True)
    uv = pts[0][m][:, :2] / pts[0][m][:, 2:] * 30 + 16
    assert torch.allclose(uv, torch.stack((ii + 0.5, jj + 0.5), -1).float(), atol=1e-3)
    # Silhouette radius: a sphere of radius 1 at distance 4 subtends asin(1/4).
    radius_px = 30 * math.tan(math.asin(0.25))
    area = math.pi * radius_px**2
    assert abs(m.sum().item() - area) / area < 0.05


def test_empty_and_invalid_inputs() -> None:
    faces = torch.tensor([[0, 1, 2]])
    behind = torch.tensor([[[1.0, 1, -1], [5, 1, 2], [1, 5, 2]]])
    frags = rasterize(behind, faces, (8, 8))
    assert not frags.mask.any() and (frags.face == -1).all() and (frags.depth == 0).all()
    offscreen = torch.tensor([[[100.0, 100, 1], [105, 100, 1], [100, 105, 1]]])
    assert not rasterize(offscreen, faces, (8, 8)).mask.any()
    degenerate = torch.tensor([[[1.0, 1, 1], [5, 5, 1], [3, 3, 1]]])
    assert not rasterize(degenerate, faces, (8, 8)).mask.any()
    with pytest.raises(ValueError, match="verts"):
        rasterize(torch.zeros(3, 3), faces, (8, 8))
    with pytest.raises(ValueError, match="faces"):
        rasterize(behind, faces.int(), (8, 8))
    with pytest.raises(ValueError, match="tile"):
        rasterize(behind, faces, (8, 8), tile=0)
    with pytest.raises(ValueError, match="tile"):
        rasterize(behind, faces, (8, 8), tile=(4, 0))


def test_orthographic_mode_interpolates_linearly() -> None:
    verts = torch.tensor([[[0.0, 0, 1], [16, 0, 3], [0, 16, 1]]])
    frags = rasterize(verts, torch.tensor([[0, 1, 2]]), (16, 16), perspective=False)
    u = torch.arange(16) + 0.5
    row = frags.depth[0, 0][frags.mask[0, 0]]
    assert torch.allclose(row, 1 + 2 * u[: len(row)] / 16, atol=1e-5)


def test_shared_edges_through_pixel_centres_leave_no_cracks() -> None:
    # A jittered grid mesh whose vertices sit on pixel centres, so many shared edges pass
    # exactly through pixel centres: every pixel centre inside the grid is covered, once.
    g = torch.Generator().manual_seed(0)
    n = 9
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="xy"), -1).reshape(
        -1, 2
    )
    uv = ij * 3 + 2.5 + torch.randint(-1, 2, ij.shape, generator=g) * (ij % (n - 1) != 0)
    z = 2 + torch.rand(len(uv), 1, generator=g)
    verts = torch.cat((uv.float(), z), -1)[None]
    quads = [
        (r * n + c, r * n + c + 1, (r + 1) * n + c + 1, (r + 1) * n + c)
        for r in range(n - 1)
        for c in range(n - 1)
    ]
    faces = torch.tensor([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    frags = rasterize(verts, faces, (28, 28))
    inside = torch.zeros(28, 28, dtype=torch.bool)
    inside[2:27, 2:27] = True  # centres 2.5 .. 26.5 lie within the grid's outer square
    assert frags.mask[0][inside].all()
