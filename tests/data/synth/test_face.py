import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from kp3d.data.adapters import synth as adapter
from kp3d.data.synth import APPEARANCES, effective_appearance, generate, get_category, scene
from kp3d.data.synth.face import IBUG_EDGES, IBUG_NAMES, LOOKS, FaceCategory
from kp3d.data.synth.sfm import load_sfm
from kp3d.errors import ConfigError
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


# -- appearance ----------------------------------------------------------------------------------


def test_every_appearance_has_its_ranges(tiny_sfm) -> None:
    assert set(LOOKS) == set(APPEARANCES) == {"default", "shifted"}
    with pytest.raises(ConfigError, match="must be one of default, shifted.*got 'bright'"):
        FaceCategory(load_sfm(tiny_sfm.folder), appearance="bright")  # type: ignore[arg-type]


def test_default_appearance_is_the_unchanged_generator(tiny_sfm) -> None:
    default = get_category("face", sfm_dir=tiny_sfm.folder)
    assert get_category("face", sfm_dir=tiny_sfm.folder, appearance="default") is default
    assert effective_appearance(default) == "default" and default.look is LOOKS["default"]
    for pairs in (False, True):
        a = generate("face", 3, size=32, seed=6, sfm_dir=tiny_sfm.folder, pairs=pairs)
        b = generate(
            "face", 3, size=32, seed=6, sfm_dir=tiny_sfm.folder, pairs=pairs, appearance="default"
        )
        for x, y in zip(a, b):
            assert all(torch.equal(getattr(x, f), getattr(y, f)) for f in x.present())


def head_frame(x) -> torch.Tensor:
    """A sample's landmarks in the head's own frame, ``R^T (X - t)``: (V, K, 3)."""
    R, t = x.extrinsics[..., :3], x.extrinsics[..., 3]
    return (x.kp3d - t[:, None]) @ R


def test_shifted_keeps_the_faces_and_poses(tiny_sfm) -> None:
    default = get_category("face", sfm_dir=tiny_sfm.folder)
    shifted = get_category("face", sfm_dir=tiny_sfm.folder, appearance="shifted")
    assert shifted is not default and effective_appearance(shifted) == "shifted"
    for i in range(4):
        a = default.sample(scene.rng_for(2, i), 2, True)
        b = shifted.sample(scene.rng_for(2, i), 2, True)
        assert a.keys() == b.keys()
        # Identity, expression, head rotations (both views) and fields of view: the same draws.
        for k in ("verts", "view_ypr", "view_fov", "view_bg_angle"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        for k in ("albedo", "view_fill", "view_shift", "view_light", "view_bg_colors"):
            assert not np.allclose(a[k], b[k]), k

    fixed = [k for k in range(68) if k not in default.absent and k not in default.view_dependent]
    a = generate("face", 4, size=32, seed=2, sfm_dir=tiny_sfm.folder, pairs=True)
    b = generate(
        "face", 4, size=32, seed=2, sfm_dir=tiny_sfm.folder, pairs=True, appearance="shifted"
    )
    for x, y in zip(a, b):
        # The same rotations; only the camera's distance and offset follow the framing, so the
        # fixed landmarks are the same points of the head in its own frame.
        assert torch.equal(x.extrinsics[..., :3], y.extrinsics[..., :3])
        assert not torch.allclose(x.extrinsics[..., 3], y.extrinsics[..., 3])
        torch.testing.assert_close(
            head_frame(x)[:, fixed], head_frame(y)[:, fixed], atol=1e-5, rtol=0
        )
        assert not torch.allclose(x.kp2d, y.kp2d)
        assert (x.image - y.image).abs().mean() > 0.05


def box_extent(samples: list) -> np.ndarray:
    """The longer side of each face's mask box, as a fraction of the image side."""
    out = []
    for x in samples:
        m = x.mask[0] > 0
        rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
        out.append(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1).item())
    return np.array(out) / samples[0].mask.shape[-1]


def test_shifted_faces_are_smaller_and_further_off_centre(tiny_sfm) -> None:
    kw = {"size": 48, "seed": 0, "sfm_dir": tiny_sfm.folder}
    default = box_extent(generate("face", 16, **kw))
    shifted = box_extent(generate("face", 16, **kw, appearance="shifted"))
    # Boxes fill 70-90% of the image by default, 45-65% shifted (+- a pixel or two).
    assert default.min() > 0.65 and shifted.max() < 0.7
    assert shifted.mean() < default.mean() - 0.15
    cat = get_category("face", sfm_dir=tiny_sfm.folder, appearance="shifted")
    p = [cat.sample(scene.rng_for(1, i), 1, False) for i in range(32)]
    shift = np.stack([q["view_shift"][0] for q in p])
    assert np.abs(shift).max() <= 0.1 and np.abs(shift).max() > 0.07  # default: +-0.04


def test_shifted_light_comes_harshly_from_the_side_and_above(tiny_sfm) -> None:
    cat = get_category("face", sfm_dir=tiny_sfm.folder, appearance="shifted")
    p = [cat.sample(scene.rng_for(3, i), 1, False) for i in range(32)]
    light = np.stack([q["view_light"][0] for q in p])  # camera frame: y down, z forward
    np.testing.assert_allclose(np.linalg.norm(light, axis=1), 1, atol=1e-6)
    # (s U(0.8, 1.5), U(-1.5, -0.4), -U(0.1, 0.5)): sideways beyond grazing, from above.
    assert (np.abs(light[:, 0]) > 1.5 * np.abs(light[:, 2])).all() and (light[:, 1] < 0).all()
    assert (light[:, 0] > 0).any() and (light[:, 0] < 0).any()
    ambient = np.array([q["view_ambient"][0] for q in p])
    diffuse = np.array([q["view_diffuse"][0] for q in p])
    assert 0.1 <= ambient.min() and ambient.max() <= 0.25
    assert 0.9 <= diffuse.min() and diffuse.max() <= 1.2


@pytest.mark.parametrize("appearance", [None, "shifted"])
def test_write_records_the_appearance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_sfm, appearance: str | None
) -> None:
    # Threads stand in for worker processes, chunks of 2: each worker gets the option.
    class Pool(ThreadPoolExecutor):
        def __init__(self, workers, mp_context=None, initializer=None):
            super().__init__(workers)

    monkeypatch.setattr(adapter, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr("kp3d.data.synth.CHUNK", 2)
    kw = {"size": 32, "seed": 5, "sfm_dir": tiny_sfm.folder, "appearance": appearance}
    out = adapter.write(tmp_path / "faces", "face", 4, workers=2, **kw)
    options = json.loads((out / "meta.json").read_text())["options"]
    assert options["appearance"] == (appearance or "default")  # the value used
    assert options["articulation"] is None and options["azimuth"] is None
    kp3d = np.load(out / "annotations.npz")["kp3d"][:, 0]
    ref = generate("face", 4, **kw)
    np.testing.assert_array_equal(kp3d, np.stack([x.kp3d.numpy() for x in ref]))
    got = adapter.open(out)
    assert all((x.image - y.image).abs().max() <= 0.5 / 255 + 1e-6 for x, y in zip(got, ref))
