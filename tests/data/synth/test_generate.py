import math

import numpy as np
import pytest
import torch

from kp3d.data.schema import collate
from kp3d.data.synth import (
    CATEGORIES,
    check_appearance,
    effective_appearance,
    generate,
    get_category,
    scene,
)
from kp3d.errors import ConfigError
from kp3d.geometry.cameras import project_pinhole
from kp3d.geometry.rotations import geodesic_distance


def fields_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in a.present())


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_single_view_samples_have_every_field(name: str) -> None:
    s = generate(name, 3, size=40, seed=0)
    assert len(s) == 3
    x = s[0]
    K = len(get_category(name).keypoint_names)
    assert x.image.shape == (3, 40, 40) and x.image.min() >= 0 and x.image.max() <= 1
    assert x.mask.shape == (1, 40, 40) and x.depth.shape == (1, 40, 40)
    assert torch.equal(x.mask > 0, x.depth > 0)
    assert x.kp2d.shape == (K, 2) and x.vis.shape == (K,) and x.vis.dtype == torch.bool
    assert x.kp3d.shape == (K, 3) and x.intrinsics.shape == (3, 3) and x.extrinsics.shape == (3, 4)
    assert x.view is None and x.instance.item() == 0 and x.category.item() == CATEGORIES.index(name)
    batch = collate(s)
    assert batch.image.shape == (3, 3, 40, 40)


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_keypoints_project_with_the_intrinsics(name: str) -> None:
    for x in generate(name, 4, size=48, seed=1):
        assert (x.kp3d[:, 2] > 0).all()
        assert torch.allclose(project_pinhole(x.kp3d, x.intrinsics), x.kp2d, atol=1e-3)


def test_determinism_by_seed_and_independence_from_batching() -> None:
    a = generate("creature", 5, size=32, seed=7)
    b = generate("creature", 5, size=32, seed=7)
    assert all(fields_equal(x, y) for x, y in zip(a, b))
    c = generate("creature", 5, size=32, seed=8)
    assert not torch.equal(a[0].image, c[0].image)
    # Sample i depends only on (seed, i): generating 2..4 alone gives the same samples.
    d = generate("creature", 3, size=32, seed=7, start=2)
    assert all(fields_equal(x, y) for x, y in zip(a[2:], d))
    assert [x.instance.item() for x in d] == [2, 3, 4]


def test_threads_are_restored() -> None:
    before = torch.get_num_threads()
    generate("creature", 1, size=32)
    assert torch.get_num_threads() == before


def relative(E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R_b R_a^T, t_b - R_b R_a^T t_a) from extrinsics (2, 3, 4) of views a=0, b=1."""
    Ra, ta, Rb, tb = E[0, :, :3], E[0, :, 3], E[1, :, :3], E[1, :, 3]
    R = Rb @ Ra.T
    return R, tb - R @ ta


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_multi_view_ground_truth_is_consistent(name: str) -> None:
    for x in generate(name, 2, size=32, seed=3, views=3):
        assert x.image.shape == (3, 3, 32, 32) and x.kp2d.shape[0] == 3
        assert torch.equal(x.view, torch.arange(3))
        E = x.extrinsics
        for a, b in ((0, 1), (0, 2), (2, 1)):
            R, t = relative(E[[a, b]])
            # X_b = R_b R_a^T (X_a - t_a) + t_b: one rigid motion maps view a's joints to b's.
            assert torch.allclose(x.kp3d[a] @ R.T + t, x.kp3d[b], atol=1e-4)
            assert torch.allclose(project_pinhole(x.kp3d[b], x.intrinsics[b]), x.kp2d[b], atol=1e-3)


def test_pairs_have_a_moderate_relative_rotation() -> None:
    angles = []
    for x in generate("creature", 6, size=32, seed=0, pairs=True):
        assert x.image.shape[0] == 2
        R = x.extrinsics[:, :, :3]
        angles.append(math.degrees(geodesic_distance(R[0], R[1]).item()))
    assert all(5 < a < 80 for a in angles), angles


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="32..256"):
        generate("creature", 1, size=16)
    with pytest.raises(ConfigError, match="views must be 1 or 2"):
        generate("creature", 1, views=3, pairs=True)
    with pytest.raises(ConfigError, match="n must be"):
        generate("creature", 0)
    with pytest.raises(ConfigError, match="valid: creature, quadruped, face"):
        generate("dragon", 1)
    with pytest.raises(ConfigError, match="Surrey Face Model"):
        generate("face", 1)


def pose_spread(name: str, articulation: float | None) -> float:
    """How much the shape of the pose varies over a set: the std over instances of the
    joint-to-joint distances (scale-normalised), which no camera or root rotation changes."""
    X = torch.stack(
        [x.kp3d for x in generate(name, 12, size=32, seed=0, articulation=articulation)]
    )
    D = torch.cdist(X, X)
    return (D / D.mean((1, 2), keepdim=True)).std(0).mean().item()


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_articulation_widens_the_spread_of_poses(name: str) -> None:
    narrow, default, wide = (pose_spread(name, a) for a in (0.1, None, 1.0))
    assert narrow < default < wide
    assert wide > 1.5 * narrow


@pytest.mark.parametrize("name", ["creature", "quadruped"])
def test_articulation_changes_only_the_joint_angles(name: str) -> None:
    default, full = get_category(name), get_category(name, articulation=1.0)
    assert default.spec.articulation == 0.3 and full.spec.articulation == 1.0
    assert get_category(name, articulation=1.0) is full  # cached per value
    lo, hi = full._angle_lo, full._angle_hi
    mid = (lo + hi) / 2
    for i in range(4):
        a = default.sample(scene.rng_for(5, i), 1, False)
        b = full.sample(scene.rng_for(5, i), 1, False)
        assert a.keys() == b.keys()
        for k in a.keys() - {"angles"}:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        # The same uniform draw, scaled about each range's middle by 1.0 / 0.3.
        np.testing.assert_allclose(b["angles"] - mid, (a["angles"] - mid) / 0.3, atol=1e-9)


def test_articulation_at_its_default_value_changes_nothing() -> None:
    a = generate("quadruped", 2, size=32, seed=3)
    b = generate("quadruped", 2, size=32, seed=3, articulation=0.3)
    assert all(fields_equal(x, y) for x, y in zip(a, b))


def test_articulation_is_validated() -> None:
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match=r"articulation must be in \[0, 1\].*got"):
            generate("creature", 1, size=32, articulation=bad)
    with pytest.raises(ConfigError, match="got 1.5"):
        get_category("quadruped", articulation=1.5)
    # Faces have no joints: refused before the model folder is even needed.
    with pytest.raises(ConfigError, match="face has no joints"):
        get_category("face", articulation=0.5)
    with pytest.raises(ConfigError, match="face has no joints"):
        generate("face", 1, sfm_dir="/nonexistent", articulation=0.5)


def camera_azimuth_deg(samples: list) -> np.ndarray:
    """Each camera's azimuth about the instance, from its extrinsics (world = the instance's
    frame, which faces +z with its left at +x): the direction from the object to the camera is
    minus the optical axis, the world->camera rotation's third row."""
    R = torch.stack([x.extrinsics[:3, :3] for x in samples]).double()
    back = -R[:, 2]
    return torch.rad2deg(torch.atan2(back[:, 0], back[:, 2])).numpy()


def test_azimuth_limits_where_the_camera_goes() -> None:
    front = camera_azimuth_deg(generate("creature", 40, size=32, seed=2, azimuth=(-60, 60)))
    side = camera_azimuth_deg(generate("creature", 40, size=32, seed=2, azimuth=(60, 120)))
    around = camera_azimuth_deg(generate("creature", 40, size=32, seed=2))
    assert np.abs(front).max() <= 60 + 1e-6 and np.abs(side - 90).max() <= 30 + 1e-6
    # The ranges are covered, and the default goes behind the object too.
    assert front.min() < -30 and front.max() > 30
    assert (np.abs(around) > 120).any() and (np.abs(around) < 60).any()
    # The image agrees: from the left side (azimuth 90) the left hip (joint 10) is the nearer.
    z = torch.stack(
        [x.kp3d[[10, 13], 2] for x in generate("creature", 8, size=32, seed=2, azimuth=(75, 105))]
    )
    assert bool((z[:, 0] < z[:, 1]).all())


def test_azimuth_all_around_is_the_default_draw() -> None:
    a = generate("creature", 3, size=32, seed=4)
    b = generate("creature", 3, size=32, seed=4, azimuth=(0, 360))
    assert all(fields_equal(x, y) for x, y in zip(a, b))
    assert get_category("creature", azimuth=(-90, 90)).spec.azimuth == (-90.0, 90.0)
    assert get_category("creature").spec.azimuth == (0.0, 360.0)


def test_azimuth_is_validated() -> None:
    for bad in ((10, 10), (90, -90), (0, 361), (float("nan"), 90)):
        with pytest.raises(ConfigError, match=r"azimuth must be \(lo, hi\).*got"):
            get_category("creature", azimuth=bad)
    for bad in ((0, 90, 180), 90, ("front", 90)):
        with pytest.raises(ConfigError, match="two numbers"):
            generate("quadruped", 1, size=32, azimuth=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="face draws its own head rotation"):
        generate("face", 1, sfm_dir="/nonexistent", azimuth=(-90, 90))


def test_appearance_is_validated() -> None:
    check_appearance("face", None)
    check_appearance("face", "shifted")
    for name in ("creature", "quadruped", "head"):
        check_appearance(name, None)
        with pytest.raises(ConfigError, match=f"face category only; {name} has a single"):
            get_category(name, appearance="shifted")
    with pytest.raises(ConfigError, match="creature has a single appearance.*'default'"):
        generate("creature", 1, size=32, appearance="default")
    # An unknown value is refused before the model folder is even needed.
    with pytest.raises(ConfigError, match=r"one of default, shifted .*got 'bright'"):
        generate("face", 1, sfm_dir="/nonexistent", appearance="bright")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="got 'Shifted'"):
        get_category("face", appearance="Shifted")  # type: ignore[arg-type]
    assert effective_appearance(get_category("head")) is None
    assert effective_appearance(get_category("creature")) is None
