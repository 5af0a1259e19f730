from pathlib import Path

import numpy as np
import pytest
import torch

from kp3d.data.adapters import open_dataset
from kp3d.data.adapters.keypoints_npz import detect, open
from kp3d.data.schema import collate
from kp3d.errors import ConfigError, DataError

N, K = 5, 4


def write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "kp2d": rng.normal(size=(N, K, 2)).astype(np.float32),
        "vis": rng.random((N, K)) > 0.3,
        "category": rng.integers(0, 3, N),
        "kp3d": rng.normal(size=(N, K, 3)),
    }


def test_round_trip_keeps_values_and_zeroes_invisible(tmp_path: Path) -> None:
    a = arrays()
    a["kp2d"][~a["vis"]] = np.nan  # invisible coordinates may hold anything
    ds = open(write(tmp_path / "k.npz", **a))
    assert len(ds) == N and ds.num_keypoints == K and ds.num_categories == a["category"].max() + 1
    s = ds[2]
    assert s.kp2d.shape == (K, 2) and s.kp2d.dtype == torch.float32
    assert s.vis.dtype == torch.bool and torch.equal(s.vis, torch.from_numpy(a["vis"][2]))
    expected = np.where(a["vis"][2][:, None], a["kp2d"][2], 0)
    np.testing.assert_array_equal(s.kp2d.numpy(), expected)
    np.testing.assert_allclose(s.kp3d.numpy(), a["kp3d"][2], rtol=1e-6)
    assert s.category.item() == a["category"][2] and s.name == "k.npz[2]"
    batch = collate([ds[i] for i in range(N)])
    assert batch.kp2d.shape == (N, K, 2) and batch.category.shape == (N,)


def test_only_kp2d_means_all_visible_one_category(tmp_path: Path) -> None:
    ds = open(write(tmp_path / "k.npz", kp2d=np.zeros((N, K, 2))))
    s = ds[-1]
    assert s.vis.all() and s.category is None and s.kp3d is None and ds.num_categories == 1


def test_integer_visibility_and_names(tmp_path: Path) -> None:
    names = np.array([f"img{i}.jpg" for i in range(N)])
    ds = open(
        write(
            tmp_path / "k.npz", kp2d=np.zeros((N, K, 2)), vis=np.ones((N, K), np.int64), name=names
        )
    )
    assert ds[0].vis.dtype == torch.bool and ds[3].name == "img3.jpg"


def test_detect_and_registry(tmp_path: Path) -> None:
    good = write(tmp_path / "k.npz", kp2d=np.zeros((N, K, 2)))
    other = write(tmp_path / "o.npz", points=np.zeros(3))
    (tmp_path / "k.txt").write_text("kp2d")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert detect(good) and not detect(other) and not detect(tmp_path / "k.txt")
    assert not detect(tmp_path / "broken.npz") and not detect(tmp_path)
    assert len(open_dataset(good, format="keypoints_npz")) == N


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kp2d": None}, "no 'kp2d'"),
        ({"kp2d": np.zeros((N, K, 3))}, r"\(N, K, 2\)"),
        ({"kp2d": np.zeros((N, 2))}, r"\(N, K, 2\)"),
        ({"vis": np.ones((N, K + 1), bool)}, "'vis' must have shape"),
        ({"vis": np.full((N, K), 2)}, "'vis' must be bool"),
        ({"category": np.zeros(N + 1, np.int64)}, "'category' must have shape"),
        ({"category": np.zeros(N)}, "integers"),
        ({"category": -np.ones(N, np.int64)}, ">= 0"),
        ({"kp3d": np.zeros((N, K, 2))}, "'kp3d' must have shape"),
        ({"name": np.arange(N)}, "'name' must hold strings"),
    ],
)
def test_malformed_files_name_file_and_problem(tmp_path: Path, change: dict, message: str) -> None:
    a = arrays() | change
    path = write(tmp_path / "bad.npz", **{k: v for k, v in a.items() if v is not None})
    with pytest.raises(DataError, match=message) as e:
        open(path)
    assert "bad.npz" in str(e.value)


def test_non_finite_values_are_located(tmp_path: Path) -> None:
    a = arrays()
    a["vis"][:] = True
    a["kp2d"][3, 1, 0] = np.nan
    with pytest.raises(DataError, match="sample 3, keypoint 1"):
        open(write(tmp_path / "nan2d.npz", **a))
    a = arrays()
    a["kp3d"][1, 2, 2] = np.inf
    with pytest.raises(DataError, match=r"nan3d\.npz.*sample 1, keypoint 2"):
        open(write(tmp_path / "nan3d.npz", **a))


def test_unreadable_file_and_pickles_are_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.npz"):
        open(tmp_path / "broken.npz")
    np.savez(tmp_path / "obj.npz", kp2d=np.array([object()], dtype=object))
    with pytest.raises(DataError, match="obj.npz"):
        open(tmp_path / "obj.npz")


def test_splits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no splits"):
        open(write(tmp_path / "k.npz", kp2d=np.zeros((N, K, 2))), split="train")


def test_index_out_of_range(tmp_path: Path) -> None:
    ds = open(write(tmp_path / "k.npz", kp2d=np.zeros((N, K, 2))))
    with pytest.raises(IndexError):
        ds[N]


def test_batched_fetch_equals_collated_items_and_feeds_a_dataloader(tmp_path: Path) -> None:
    ds = open(write(tmp_path / "k.npz", **arrays()))
    idx = [3, 0, -1, 3]
    fetched = ds.__getitems__(idx)
    expected = collate([ds[i] for i in idx])
    for f in ("kp2d", "vis", "kp3d", "category"):
        a, b = getattr(fetched, f), getattr(expected, f)
        assert a.dtype == b.dtype and torch.equal(a, b), f
    assert fetched.name == expected.name
    assert collate(fetched) is fetched
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    first = next(iter(loader))
    assert torch.equal(first.kp2d, collate([ds[0], ds[1]]).kp2d)
    assert first.name == ["k.npz[0]", "k.npz[1]"]
    with pytest.raises(IndexError):
        ds.__getitems__([0, N])
