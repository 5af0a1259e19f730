"""``benchmarks/faces3d.py`` (issue 24): the head yaw read from the face generator's cameras, the
3DDFA yaw bins and the image-frame <-> normalised maps of the supervised row. No shared data."""

import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

from kp3d.methods import get_method

BenchmarkModule = Callable[[str], ModuleType]


def test_head_yaw_is_the_generators_yaw(benchmark_module: BenchmarkModule) -> None:
    from kp3d.data.synth import scene

    faces3d = benchmark_module("faces3d")
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    yaws = torch.tensor([-65.0, -40.0, -5.0, 0.0, 12.0, 33.0, 59.0, 70.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    rows = []
    for yaw in torch.deg2rad(yaws):
        pitch, roll = (torch.rand(2, generator=g, dtype=torch.float64) - 0.5) * math.radians(40)
        R = flip @ scene.rot_z(roll) @ scene.rot_y(yaw) @ scene.rot_x(pitch)
        rows.append(torch.cat([R, torch.ones(3, 1, dtype=torch.float64)], -1))
    got = faces3d.head_yaw_deg(torch.stack(rows))
    torch.testing.assert_close(got, yaws.abs(), atol=1e-9, rtol=0)


def test_score_bins_per_image_errors_like_a_loop(benchmark_module: BenchmarkModule) -> None:
    faces3d = benchmark_module("faces3d")
    g = torch.Generator().manual_seed(1)
    n_fit, n_test, L, K, size = 40, 30, 6, 5, 64

    def faces(n: int) -> object:
        lm = torch.rand(n, L, 3, generator=g, dtype=torch.float64) * size
        return faces3d.Faces(
            torch.zeros(n, 3, 8, 8), lm[..., :2], lm, torch.rand(n, generator=g) * 80
        )

    fit, test = faces(n_fit), faces(n_test)
    fp = torch.rand(n_fit, K, 3, generator=g, dtype=torch.float64) * size
    tp = torch.rand(n_test, K, 3, generator=g, dtype=torch.float64) * size
    out = faces3d.score(fp, fit, tp, test, size)

    from kp3d.metrics import nme_3d

    per_image = nme_3d(
        fp / size, fit.kp3d_image / size, tp / size, test.kp3d_image / size
    ).per_image
    means = []
    for lo, hi in faces3d.BINS:
        members = [float(per_image[i]) for i in range(n_test) if lo <= test.yaw_deg[i] < hi]
        assert out[f"n_{lo:.0f}_{hi:.0f}"] == len(members)
        if members:
            assert out[f"yaw_{lo:.0f}_{hi:.0f}"] == pytest.approx(sum(members) / len(members))
            means.append(sum(members) / len(members))
    assert out["bin_mean"] == pytest.approx(sum(means) / len(means))
    assert out["nme3d"] == pytest.approx(float(per_image.mean()))


def test_normalised_units_match_the_closed_form(benchmark_module: BenchmarkModule) -> None:
    faces3d = benchmark_module("faces3d")
    size = 64
    points = torch.rand(3, 7, 3, dtype=torch.float64) * size
    norm = faces3d.normalised(points, size)
    torch.testing.assert_close(norm[..., :2], 2 * points[..., :2] / size - 1)
    torch.testing.assert_close(norm[..., 2], 2 * points[..., 2] / size)
    torch.testing.assert_close(faces3d.image_frame(norm, size), points)


def test_a_missing_face_model_fails_loudly(benchmark_module: BenchmarkModule, tmp_path) -> None:
    faces3d = benchmark_module("faces3d")
    with pytest.raises(SystemExit, match="Surrey Face Model"):
        faces3d.make_sets(tmp_path / "none", tmp_path / "out", n_train=4, n_test=4, size=32)
    assert not (tmp_path / "out").exists()


def test_image_methods_train_with_their_own_defaults(
    benchmark_module: BenchmarkModule,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    train_configs: dict[str, Any],
) -> None:
    # unsup3d's defaults (Adam 1e-4, batches of 64) differ from the engine's: a complete
    # TrainConfig would replace them.
    bench = benchmark_module("faces3d")
    monkeypatch.setattr("kp3d.engine.load_run", lambda run_dir: SimpleNamespace(model=None))
    monkeypatch.setattr("kp3d.data.adapters.open_dataset", lambda path, size: [])
    args = SimpleNamespace(size=32, k=8, seed=3, minutes=0.5)
    for method in ("unsup3d", "autolink3d"):
        bench.train_image_method(method, tmp_path, tmp_path / method, args)
        cfg, defaults = train_configs[method], get_method(method).train_defaults
        assert (cfg.lr, cfg.batch_size) == (defaults["lr"], defaults["batch_size"])
        assert (cfg.seed, cfg.minutes, cfg.clock) == (3, 0.5, "cpu")
