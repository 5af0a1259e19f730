"""The face-robustness benchmark (issue 24) end to end on tiny data: a test-made face model and a
ytfaces68-style folder of its rendered faces stand in for ``../shared``. The numbers are
meaningless here; the plumbing (data, variants, three domains, merged table) is what is
tested."""

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

BenchmarkModule = Callable[[str], ModuleType]


def _fake_shared(root: Path, sfm_writer) -> Path:  # type: ignore[no-untyped-def]
    """``root/assets/sfm`` (a tiny face model) and ``root/data/ytfaces68`` (its faces as
    photos with 68-landmark CSVs)."""
    from kp3d.data.synth import generate

    sfm = root / "assets" / "sfm"
    sfm_writer(sfm)
    yt = root / "data" / "ytfaces68"
    for split, seed in (("training", 5), ("test", 6)):
        (yt / split).mkdir(parents=True)
        rows = []
        for i, s in enumerate(generate("face", 6, size=48, seed=seed, sfm_dir=sfm)):
            pixels = (s.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(yt / split / f"f{i}.png")
            rows.append([f"f{i}.png", *s.kp2d.flatten().tolist()])
        with (yt / f"{split}_landmarks.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", *(str(i) for i in range(2 * 68))])
            w.writerows(rows)
    return root


def test_a_missing_shared_folder_fails_loudly(
    benchmark_module: BenchmarkModule, tmp_path: Path
) -> None:
    bench = benchmark_module("face_robustness")
    with pytest.raises(SystemExit, match="assets/sfm is missing"):
        bench.main(["--shared", str(tmp_path), "--out", str(tmp_path / "out"), "--steps", "1"])


def test_scores_both_variants_on_three_domains(
    benchmark_module: BenchmarkModule, tmp_path: Path, sfm_writer
) -> None:  # type: ignore[no-untyped-def]
    bench = benchmark_module("face_robustness")
    shared = _fake_shared(tmp_path / "shared", sfm_writer)
    out = tmp_path / "out"
    argv = ["--shared", str(shared), "--out", str(out), "--methods", "autolink3d", "--k", "4"]
    argv += ["--steps", "1", "--size", "32", "--n-train", "8", "--n-test", "6", "--fit", "6"]
    argv += ["--set", "perceptual=none", "w_pixel=1", "augment.flip=0.25"]
    assert bench.main(argv) == 0

    rows = json.loads((out / "results.json").read_text())
    assert [(r["variant"], r["k"]) for r in rows] == [("augment", 4), ("plain", 4)]
    for r in rows:
        for column in bench.COLUMNS[3:9]:
            assert math.isfinite(r[column]) and r[column] > 0, column
    augment, plain = rows
    # --set overrides one value of the variant's table and applies to every variant.
    assert augment["config"]["augment"] == {**bench.AUGMENT, "flip": 0.25}
    assert plain["config"]["augment"] == {"flip": 0.25}
    # The shifted sets are the generator's other appearance, of their own seeds.
    meta = json.loads((out / "data" / "shifted_test" / "meta.json").read_text())
    assert meta["options"]["appearance"] == "shifted" and meta["seed"] == 3
    table = (out / "results.md").read_text()
    assert "shifted_nme68" in table and "| autolink3d | plain | 4 |" in table
    assert f"| {100 * plain['real_nme68']:.2f}% |" in table  # NMEs as percentages


def test_face_nme_matches_a_naive_regression(benchmark_module: BenchmarkModule) -> None:
    """NME-68 over the labelled landmarks against numpy's least squares and a loop; landmarks
    without a label (``absent``, zeros in the ground truth) take no part."""
    from types import SimpleNamespace

    import torch

    bench = benchmark_module("face_robustness")
    rng = np.random.default_rng(0)
    n_fit, n_test, k, size = 40, 12, 6, 64
    absent = [60, 64]

    def collected(n: int) -> SimpleNamespace:
        kp = rng.uniform(0, size, (n, k, 2))
        lm = np.einsum("lk,nkd->nld", rng.normal(size=(68, k)) / k, kp) + rng.normal(
            0, 1.0, (n, 68, 2)
        )
        lm[:, absent] = 0.0
        return SimpleNamespace(
            pred=SimpleNamespace(kp2d=torch.tensor(kp)),
            gt=SimpleNamespace(kp2d=torch.tensor(lm)),
            image_size=(size, size),
        )

    fit, test = collected(n_fit), collected(n_test)
    got = bench.face_nme(fit, test, absent=absent)

    keep = [i for i in range(68) if i not in absent]
    X = fit.pred.kp2d.numpy().reshape(n_fit, -1) / size
    Y = fit.gt.kp2d.numpy()[:, keep].reshape(n_fit, -1) / size
    W = np.linalg.lstsq(X, Y, rcond=None)[0]
    pred = (test.pred.kp2d.numpy().reshape(n_test, -1) / size @ W).reshape(n_test, -1, 2)
    gt = test.gt.kp2d.numpy()[:, keep] / size
    per_image = []
    for i in range(n_test):
        d = np.linalg.norm(gt[i, 36] - gt[i, 45])
        per_image.append(np.mean([np.linalg.norm(pred[i, j] - gt[i, j]) for j in range(66)]) / d)
    assert got["nme68"] == pytest.approx(np.mean(per_image), rel=1e-6)
    assert 0 < got["nme5"] < np.inf
