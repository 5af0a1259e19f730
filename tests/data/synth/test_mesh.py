from collections import Counter

import pytest
import torch

from kp3d.data.synth.mesh import capsule_template, vertex_normals


@pytest.mark.parametrize("rings,segments", [(2, 3), (4, 8), (6, 12)])
def test_capsule_template_is_closed_and_outward(rings: int, segments: int) -> None:
    t = capsule_template(rings, segments)
    assert torch.allclose(t.unit.norm(dim=-1), torch.ones(len(t.unit)))
    # Closed 2-manifold: every undirected edge is used by exactly two faces, once each way.
    directed = Counter(
        (int(a), int(b)) for f in t.faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))
    )
    assert all(c == 1 for c in directed.values())
    assert all((b, a) in directed for a, b in directed)
    # A capsule (stretched along y) has positive signed volume with outward winding.
    p = t.unit * 0.5 + (t.side * 0.7)[:, None] * torch.tensor([0.0, 1.0, 0.0])
    tri = p[t.faces].double()
    volume = (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum() / 6
    expected = 3.14159265 * 0.25 * 1.4 + 4 / 3 * 3.14159265 * 0.125
    assert 0 < volume < expected  # inscribed polyhedron
    if segments >= 12:
        assert volume > 0.9 * expected
    assert t.side.abs().eq(1).all()


def test_capsule_template_rejects_bad_resolution() -> None:
    with pytest.raises(ValueError, match="even"):
        capsule_template(3, 8)
    with pytest.raises(ValueError, match="segments"):
        capsule_template(4, 2)


def test_vertex_normals_of_a_sphere_are_radial() -> None:
    t = capsule_template(12, 24)
    verts = torch.stack((t.unit * 2.0, t.unit * 0.5 + 3.0))
    n = vertex_normals(verts, t.faces)
    assert n.shape == verts.shape
    assert torch.allclose(n.norm(dim=-1), torch.ones(2, len(t.unit)), atol=1e-5)
    assert (n * t.unit).sum(-1).min() > 0.98
    # A vertex used by no face gets a zero normal, not NaN.
    extra = torch.cat((verts, torch.zeros(2, 1, 3)), 1)
    assert torch.equal(vertex_normals(extra, t.faces)[:, -1], torch.zeros(2, 3))
