import torch

from kp3d.data.synth import generate, get_category, scene
from kp3d.data.synth.face import IBUG_EDGES, IBUG_NAMES, FaceCategory
from kp3d.data.synth.sfm import load_sfm
from kp3d.geometry.cameras import project_pinhole


def test_names_and_edges() -> None:
    assert len(IBUG_NAMES) == 68 and IBUG_NAMES[0] == "jaw_1" and IBUG_NAMES[-1] == "inner_lip_8"
    assert all(0 <= a < 68 and 0 <= b < 68 for a, b in IBUG_EDGES)


def test_tiny_model_faces_have_consistent_ground_truth(tiny_sfm) -> None:
    cat = FaceCategory(load_sfm(tiny_sfm.folder))
    mapped = {n - 1 for n in tiny_sfm.mapping}
    contour = set(range(17)) - {8}
    assert set(cat.absent) == set(range(68)) - mapped - contour
    assert set(cat.view_dependent) == contour
    samples = generate("face", 4, size=48, seed=0, sfm_dir=tiny_sfm.folder)
    absent = list(cat.absent)
    for x in samples:
        assert x.kp2d.shape == (68, 2) and x.category.item() == 2
        assert not x.vis[absent].any()
        assert (x.kp2d[absent] == 0).all() and (x.kp3d[absent] == 0).all()
        defined = [k for k in range(68) if k not in absent]
        assert torch.allclose(
            project_pinhole(x.kp3d[defined], x.intrinsics), x.kp2d[defined], atol=1e-3
        )
        # Landmarks are surface points: a visible one has its own depth (within a few mm) in
        # one of the pixels around it.
        vis = [k for k in defined if x.vis[k]]
        assert vis
        for k in vis:
            d = x.depth[0]
            u, v = x.kp2d[k].floor().long().tolist()
            patch = d[max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2]
            assert (patch == 0).any() or ((patch - x.kp3d[k, 2]).abs() < 0.02).any()


def test_face_mask_covers_a_large_part_of_the_image(tiny_sfm) -> None:
    x = generate("face", 2, size=32, seed=1, sfm_dir=tiny_sfm.folder)
    assert all(0.2 < s.mask.mean() < 0.95 for s in x)


def test_fixed_landmarks_are_consistent_across_views(tiny_sfm) -> None:
    cat = get_category("face", sfm_dir=tiny_sfm.folder)
    fixed = [k for k in range(68) if k not in cat.absent and k not in cat.view_dependent]
    for x in generate("face", 2, size=32, seed=2, sfm_dir=tiny_sfm.folder, pairs=True):
        E = x.extrinsics
        R = E[1, :, :3] @ E[0, :, :3].T
        t = E[1, :, 3] - R @ E[0, :, 3]
        assert torch.allclose(x.kp3d[0, fixed] @ R.T + t, x.kp3d[1, fixed], atol=1e-5)


def test_the_real_model_renders_plausible_faces(shared_sfm) -> None:
    cat = get_category("face", sfm_dir=shared_sfm)
    assert cat.absent == (60, 64)  # iBUG 61 and 65: no vertex in the model
    # A frontal face: identity rotation in the model frame.
    p = scene.stack_params([cat.sample(scene.rng_for(0, 0), 1, False)])
    p["view_ypr"] = torch.zeros(1, 1, 3)
    r = cat.render(p, 64)
    kp, z = r.kp2d[0, 0], r.kp3d[0, 0, :, 2]
    assert torch.allclose(r.extrinsics[0, 0, :, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])))
    # The subject's right eye (iBUG 37) on the image's left, the chin (9) below the nose (31),
    # the nose tip nearest the camera, and everything defined visible.
    assert kp[36, 0] < kp[45, 0]
    assert kp[8, 1] > kp[30, 1] > kp[27, 1]
    assert z[30] == z[[k for k in range(68) if k not in (60, 64)]].min()
    assert r.vis[0, 0].sum() == 66
    # Contour landmarks go round the face from the right temple over the chin to the left.
    jaw = kp[:17]
    assert (jaw[:8, 0] < jaw[8, 0]).all() and (jaw[9:, 0] > jaw[8, 0]).all()
    assert (jaw[:8, 1].diff() > 0).all() and (jaw[9:, 1].diff() < 0).all()


def test_real_model_head_rotations_stay_in_range(shared_sfm) -> None:
    cat = get_category("face", sfm_dir=shared_sfm)
    ypr = torch.stack(
        [torch.from_numpy(cat.sample(scene.rng_for(5, i), 2, True)["view_ypr"]) for i in range(50)]
    ).rad2deg()
    assert ypr[..., 0].abs().max() <= 70 and ypr[..., 1].abs().max() <= 30
    assert ypr[..., 2].abs().max() <= 20 and ypr[..., 0].abs().max() > 50
