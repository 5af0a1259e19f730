"""Several kp3d synth sets read as one multi-category set (the joint keypoint layout)."""

import shutil
from pathlib import Path

import pytest
import torch

from kp3d.data.adapters import detect_format, open_dataset
from kp3d.data.adapters import synth as synth_adapter
from kp3d.data.adapters.synth_mix import SynthMix
from kp3d.data.schema import collate
from kp3d.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mix")
    # Folder names in the opposite order of the categories: the categories decide the order.
    synth_adapter.write(root / "a_quadruped", "quadruped", 3, size=32, seed=1)
    synth_adapter.write(root / "b_creature", "creature", 2, size=32, seed=2)
    return root


def test_layout_labels_and_ground_truth(mix: Path) -> None:
    assert detect_format(mix) == "synth_mix"
    d = open_dataset(mix)
    assert isinstance(d, SynthMix)
    assert len(d) == 5 and d.category_names == ["creature", "quadruped"]
    assert d.num_categories == 2 and d.offsets == [0, 16, 34]
    assert d.keypoint_names[0].startswith("creature/")
    assert d.keypoint_names[16].startswith("quadruped/")
    creature = synth_adapter.open(mix / "b_creature")
    quadruped = synth_adapter.open(mix / "a_quadruped")
    for i, (source, z, lo, hi) in enumerate(
        [(creature, 0, 0, 16)] * 2 + [(quadruped, 1, 16, 34)] * 3
    ):
        s, ref = d[i], source[i if z == 0 else i - 2]
        assert int(s.category) == z
        assert torch.equal(s.kp2d[lo:hi], ref.kp2d) and torch.equal(s.vis[lo:hi], ref.vis)
        assert torch.equal(s.kp3d[lo:hi], ref.kp3d) and torch.equal(s.image, ref.image)
        other = torch.ones(34, dtype=torch.bool)
        other[lo:hi] = False
        assert not s.vis[other].any() and bool((s.kp2d[other] == 0).all())
        assert bool(s.kp3d[other].isnan().all())
    batch = collate([d[0], d[4]])
    assert batch.kp2d.shape == (2, 34, 2) and batch.category.tolist() == [0, 1]


def test_resizing_and_errors(mix: Path, tmp_path: Path) -> None:
    assert open_dataset(mix, size=48)[0].image.shape == (3, 48, 48)
    with pytest.raises(ConfigError, match="splits"):
        open_dataset(mix, format="synth_mix", split="test")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(mix / "b_creature", one / "creature")
    with pytest.raises(DataError, match="at least two"):
        open_dataset(one, format="synth_mix")
    shutil.copytree(mix / "b_creature", one / "creature2")
    assert detect_format(one) == "synth_mix"
    with pytest.raises(DataError, match="a mix needs two"):
        open_dataset(one)
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    shutil.copytree(mix / "b_creature", sizes / "creature")
    synth_adapter.write(sizes / "quadruped", "quadruped", 1, size=40, seed=1)
    with pytest.raises(ConfigError, match="image sizes"):
        open_dataset(sizes)
    assert len(open_dataset(sizes, size=32)) == 3
