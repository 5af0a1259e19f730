import numpy as np
import pytest
import torch

from kp3d.data.synth import get_category, render_indices, scene
from kp3d.data.synth.creature import SPEC as CREATURE
from kp3d.data.synth.quadruped import SPEC as QUADRUPED


@pytest.mark.parametrize("spec", [CREATURE, QUADRUPED], ids=lambda s: s.name)
def test_spec_is_a_valid_tree(spec) -> None:
    names = [j.name for j in spec.joints]
    assert len(set(names)) == len(names)
    assert spec.joints[0].parent == -1
    assert all(0 <= j.parent < i for i, j in enumerate(spec.joints) if i > 0)
    assert all(0 <= p.a < len(names) and (p.b is None or 0 <= p.b < len(names)) for p in spec.parts)
    assert len(spec.edges) == len(names) - 1
    # Every left joint has a right twin and vice versa.
    assert {n.replace("left", "right") for n in names if "left" in n} == {
        n for n in names if "right" in n
    }


def test_the_two_procedural_categories_have_different_keypoint_sets() -> None:
    c, q = get_category("creature"), get_category("quadruped")
    assert len(c.keypoint_names) == 16 and len(q.keypoint_names) == 18
    assert set(c.keypoint_names) != set(q.keypoint_names)


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_forward_kinematics_keeps_bone_lengths(name: str) -> None:
    cat = get_category(name)
    p = scene.stack_params([cat.sample(scene.rng_for(0, i), 1, False) for i in range(4)])
    joints, frames = cat.pose(p)
    assert torch.equal(joints[:, 0], torch.zeros(4, 3))
    assert torch.allclose(
        frames @ frames.transpose(-1, -2), torch.eye(3).expand_as(frames), atol=1e-5
    )
    spec = cat.spec
    for i, j in enumerate(spec.joints[1:], start=1):
        groups = sorted({x.group for x in spec.joints})
        expect = (
            j.length
            * p["group_scale"][:, groups.index(j.group)]
            * p["bone_scale"][:, i]
            * p["size"]
        )
        got = (joints[:, i] - joints[:, j.parent]).norm(dim=-1)
        assert torch.allclose(got, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_every_joint_lies_inside_the_body(name: str) -> None:
    cat = get_category(name)
    p = scene.stack_params([cat.sample(scene.rng_for(1, i), 1, False) for i in range(4)])
    joints, frames = cat.pose(p)
    verts, _, radius = cat.dress(joints, frames, p)
    assert (radius > 0).all()  # each joint is on some part's axis, within its radius
    # Closest mesh vertex within about one body radius of every joint.
    d = torch.cdist(joints, verts).amin(-1)
    assert (d <= 1.6 * radius).all()


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_a_real_learning_problem_pose_varies_and_parts_occlude(name: str) -> None:
    r = render_indices(get_category(name), range(24), size=64, seed=0)
    vis = r.vis[:, 0]
    assert 0.55 < vis.float().mean() < 0.97
    assert (~vis).any(-1).float().mean() > 0.3  # many images have an occluded joint
    # Pose varies: joints relative to the root, in the camera frame, differ across instances.
    rel = r.kp3d[:, 0, 1:] - r.kp3d[:, 0, :1]
    assert (rel.std(0).norm(dim=-1) > 0.05).all()
    # The object fills a good part of the frame.
    uv = r.kp2d[:, 0]
    extent = (uv.amax(1) - uv.amin(1)).amax(-1) / 64
    assert (extent > 0.3).all() and (extent < 1.0).all()


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_visibility_agrees_with_the_depth_buffer(name: str) -> None:
    r = render_indices(get_category(name), range(16), size=64, seed=2)
    kp, z, depth, vis = r.kp2d[:, 0], r.kp3d[:, 0, :, 2], r.depth[:, 0], r.vis[:, 0]
    seen = scene.at_pixels(kp, depth)
    inside = ((kp >= 0) & (kp < 64)).all(-1)
    # Visible joints project onto the object (rarely onto a background pixel next to a thin limb).
    assert (seen[vis] > 0).float().mean() > 0.9
    # An occluded joint inside the image has a surface in front of it at its pixel.
    hidden = inside & ~vis
    assert hidden.any()
    assert ((seen[hidden] > 0) & (seen[hidden] < z[hidden])).all()


def test_views_share_the_instance_and_differ_in_camera() -> None:
    r = render_indices(get_category("creature"), range(3), size=48, seed=0, views=3)
    assert r.image.shape == (3, 3, 3, 48, 48)
    R = r.extrinsics[..., :3]
    assert not torch.allclose(R[:, 0], R[:, 1])
    # World joints recovered from each view agree (same pose, different cameras).
    X = (r.kp3d - r.extrinsics[..., None, :, 3]) @ R  # R^T (x - t), row vectors
    assert torch.allclose(X[:, 0], X[:, 1], atol=1e-4) and torch.allclose(
        X[:, 0], X[:, 2], atol=1e-4
    )
    np.testing.assert_array_equal(r.kp2d.shape, (3, 3, 16, 2))


def test_articulation_scales_the_angle_ranges_about_their_middle() -> None:
    import dataclasses

    from kp3d.data.synth.articulated import ArticulatedCategory

    def spread(a: float) -> np.ndarray:
        gen = ArticulatedCategory(dataclasses.replace(CREATURE, articulation=a))
        rng = np.random.default_rng(0)
        angles = np.stack([gen.sample(rng, 1, False)["angles"] for _ in range(400)])
        return angles.max(0) - angles.min(0)  # (J, 3) observed range

    full = np.radians(
        [
            [j.flex[1] - j.flex[0], j.abduct[1] - j.abduct[0], j.twist[1] - j.twist[0]]
            for j in CREATURE.joints
        ]
    )
    assert np.allclose(spread(1.0), full, atol=0.05 * full.max())
    assert np.allclose(spread(0.3), 0.3 * full, atol=0.05 * full.max())
    assert np.all(spread(0.0) == 0)
    with pytest.raises(ValueError, match="articulation"):
        dataclasses.replace(CREATURE, articulation=1.5)
