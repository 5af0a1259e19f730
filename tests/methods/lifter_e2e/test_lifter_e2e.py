"""lifter-e2e: config, category subsets in every loss, the context path, training steps."""

import dataclasses

import pytest
import torch

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.methods import get_method
from kp3d.methods.lifter_e2e import LifterE2E, LifterE2EConfig
from kp3d.nn.keypoint_transformer import Detection

K, Z, SIZE = 7, 2, 32
OWN = (range(3), range(3, 7))  # category 0 owns keypoints 0..2, category 1 owns 3..6


def _config(**changes) -> LifterE2EConfig:
    base = LifterE2EConfig(
        n_keypoints=K,
        n_categories=Z,
        image_size=SIZE,
        d_model=16,
        n_heads=2,
        ffn=32,
        width=32,
        n_basis=3,
        context_dim=4,
        detector_steps=0,
        cycle_start=0,
        pretrained=False,
    )
    return dataclasses.replace(base, **changes)


def _batch(n: int = 6, seed: int = 0) -> Sample:
    """Random images with the joint keypoint layout: a sample sees its category's keypoints
    (a few occluded), the others invisible at 0."""
    g = torch.Generator().manual_seed(seed)
    category = torch.arange(n) % Z
    kp2d = torch.zeros(n, K, 2)
    vis = torch.zeros(n, K, dtype=torch.bool)
    for b in range(n):
        own = list(OWN[int(category[b])])
        kp2d[b, own] = 4 + 24 * torch.rand(len(own), 2, generator=g)
        vis[b, own] = True
        vis[b, own[-1]] = b % 3 != 0  # occluded now and then
    return Sample(
        image=torch.rand(n, 3, SIZE, SIZE, generator=g), kp2d=kp2d, vis=vis, category=category
    )


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="cycle_start"):
        _config(detector_steps=10, cycle_start=5)
    with pytest.raises(ConfigError, match="matching"):
        _config(matching="greedy")
    with pytest.raises(ConfigError, match="image_size"):
        _config(image_size=16)
    with pytest.raises(ConfigError, match="n_heads"):
        _config(d_model=16, n_heads=3)
    with pytest.raises(ConfigError, match="backbone_tap"):
        _config(backbone_tap=16)
    with pytest.raises(ConfigError, match="reprojection_points"):
        _config(reprojection_points="some")
    with pytest.raises(ConfigError, match="reprojection_target"):
        _config(reprojection_target="truth")
    with pytest.raises(ConfigError, match="location_head"):
        _config(location_head="argmax")
    with pytest.raises(ConfigError, match="backbone_tap must be > 2"):
        _config(location_head="refined", backbone_tap=2)


def test_registry_entry() -> None:
    spec = get_method("lifter-e2e")
    assert spec.inputs.name == "images" and spec.protocols == ("lifting",)
    assert spec.inputs.image_size(_config()) == SIZE


def _losses_on(model: LifterE2E, batch: Sample, det: Detection, step: int = 5):
    """The model's losses with the detector's outputs replaced by ``det``."""
    model.detector.forward = lambda image: det  # type: ignore[method-assign]
    try:
        return model.losses(batch, step).losses
    finally:
        del model.detector.forward


def _detection(n: int, seed: int) -> Detection:
    g = torch.Generator().manual_seed(seed)
    return Detection(
        location=(0.1 + 0.8 * torch.rand(n, K, 2, generator=g)).requires_grad_(),
        logit=torch.randn(n, K, generator=g).requires_grad_(),
        category_logits=torch.randn(n, Z, generator=g).requires_grad_(),
        context=torch.randn(n, 4, generator=g).requires_grad_(),
    )


@pytest.mark.parametrize(
    ("matching", "points", "target"),
    [
        ("identity", "visible", "detected"),
        ("hungarian", "visible", "detected"),
        ("identity", "all", "detected"),
        ("hungarian", "all", "detected"),
        ("identity", "visible", "labelled"),
        ("identity", "all", "labelled"),
    ],
)
def test_category_subsets_mask_every_loss(matching: str, points: str, target: str) -> None:
    torch.manual_seed(0)
    config = _config(matching=matching, reprojection_points=points, reprojection_target=target)
    model = LifterE2E(config).train()
    batch = _batch()
    det = _detection(len(batch.category), 1)
    losses = _losses_on(model, batch, det)
    assert {"location", "visibility", "category", "reprojection", "camera", "shape"} <= set(losses)
    outside = ~model.support[batch.category]
    assert bool(outside.any())
    for name, value in losses.items():
        assert torch.isfinite(value), name
        grads = torch.autograd.grad(
            value, [det.location, det.logit], retain_graph=True, allow_unused=True
        )
        for g in grads:
            if g is not None:
                assert bool((g[outside] == 0).all()), name
    # Changing every output outside the subsets changes no loss.
    moved = det._replace(
        location=torch.where(outside[..., None], 1 - det.location, det.location).detach(),
        logit=torch.where(outside, -det.logit - 3, det.logit).detach(),
        category_logits=det.category_logits.detach(),
        context=det.context.detach(),
    )
    torch.manual_seed(5)
    a = _losses_on(model, batch, det._replace(**{k: v.detach() for k, v in det._asdict().items()}))
    torch.manual_seed(5)
    b = _losses_on(model, batch, moved)
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_the_labelled_target_reads_the_labels() -> None:
    """With ``reprojection_target="labelled"`` the lifter's reprojection compares with the
    labelled keypoints (moving a label moves it); with ``detected`` the labels reach only the
    detection losses; both are the same when the detector hits every label."""
    batch = _batch()
    det = _detection(len(batch.category), 2)
    pixels = torch.tensor([SIZE, SIZE], dtype=torch.float32)
    # Not a translation: the reprojection's translation is solved for.
    noise = 3 * torch.randn(batch.kp2d.shape, generator=torch.Generator().manual_seed(7))
    moved = dataclasses.replace(batch, kp2d=batch.kp2d + noise * batch.vis[..., None])
    exact = det._replace(
        location=(batch.kp2d / pixels).requires_grad_(),
        logit=torch.where(batch.vis, 5.0, -5.0).requires_grad_(),
    )
    values = {}
    for target in ("detected", "labelled"):
        torch.manual_seed(0)
        model = LifterE2E(_config(reprojection_target=target)).train()
        for name, b, d in (("a", batch, det), ("b", moved, det), ("exact", batch, exact)):
            torch.manual_seed(4)
            values[target, name] = _losses_on(model, b, d)["reprojection"]
    torch.testing.assert_close(values["detected", "a"], values["detected", "b"])
    assert not torch.allclose(values["labelled", "a"], values["labelled", "b"])
    torch.testing.assert_close(values["detected", "exact"], values["labelled", "exact"])


def test_the_support_comes_from_the_labels() -> None:
    model = LifterE2E(_config())
    model.losses(_batch(), 0)
    assert model.support.tolist() == [[k in OWN[z] for k in range(K)] for z in range(Z)]


def test_the_context_vector_reaches_the_lifter() -> None:
    torch.manual_seed(0)
    model = LifterE2E(_config(cycle_start=None))
    batch = _batch()
    losses = model.losses(batch, 1).losses
    head = model.detector.context_head
    assert head is not None
    g = torch.autograd.grad(losses["reprojection"], head.weight)[0]
    assert g.abs().sum() > 0
    # ... and nothing else in the detector moves the context: the detection losses do not.
    for name in ("location", "visibility"):
        assert torch.autograd.grad(losses[name], head.weight, allow_unused=True)[0] is None
    # The lifter's prediction depends on the context (on the labelled keypoints: an untrained
    # detector puts them all within a pixel or two of each other).
    model.eval()
    with torch.no_grad():
        context = model.detector(batch.image).context
        a = model.ensemble_predictions(batch.kp2d, batch.vis, context)["kp3d"]
        b = model.ensemble_predictions(batch.kp2d, batch.vis, context + 1)["kp3d"]
    assert not torch.allclose(a, b)


def test_detector_warmup_and_cycle_schedule() -> None:
    model = LifterE2E(_config(detector_steps=2, cycle_start=3))
    batch = _batch()
    assert set(model.losses(batch, 1).losses) == {"location", "visibility", "category"}
    assert "reprojection" in model.losses(batch, 2).losses
    assert "camera" not in model.losses(batch, 2).losses
    assert "camera" in model.losses(batch, 3).losses
    model.train()
    model.on_step(3)
    lifter_norms = [m for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert lifter_norms and not any(m.training for m in lifter_norms)


def test_no_3d_labels_are_read() -> None:
    torch.manual_seed(0)
    model = LifterE2E(_config())
    batch = _batch()
    a = model.losses(batch.replace(kp3d=torch.full((6, K, 3), float("nan"))), 1).losses
    assert all(torch.isfinite(v) for v in a.values())


def test_param_groups_cover_every_parameter_once() -> None:
    model = LifterE2E(_config(backbone_lr_scale=0.25))
    groups = model.param_groups()
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) == len([p for p in model.parameters() if p.requires_grad])
    backbone = {id(p) for p in model.detector.backbone.parameters()}
    for g in groups:
        inside = {id(p) in backbone for p in g.params}
        assert len(inside) == 1
        assert g.lr_scale == (0.25 if inside == {True} else 1.0)


@pytest.mark.parametrize("head", ["regression", "heatmap", "refined"])
def test_two_training_steps_change_the_model_and_predict(head: str) -> None:
    torch.manual_seed(0)
    model = LifterE2E(_config(detector_steps=1, cycle_start=1, location_head=head)).train()
    opt = torch.optim.AdamW(
        [{"params": g.params, "lr": 1e-3 * g.lr_scale} for g in model.param_groups()]
    )
    batch = _batch(8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(2):
        model.on_step(step)
        out = model.training_step(batch, step)
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert "reprojection" in out.logs and "category_accuracy" in out.logs
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("detector.backbone") for k in changed)
    assert any(k.startswith("net.") for k in changed)
    if head != "regression":
        assert {"detector.heat_query.weight", "detector.heat_key.weight"} <= set(changed)
    if head == "refined":
        assert {"detector.refine_query.weight", "detector.fine_project.weight"} <= set(changed)
    pred = model.eval().predict(batch)
    assert pred.kp2d.shape == (8, K, 2) and pred.kp3d.shape == (8, K, 3)
    assert pred.image_size == (SIZE, SIZE)
    category = pred.extras["category"]
    own = model.support[category]
    assert bool((pred.vis[~own] == 0).all())
    assert torch.isfinite(pred.kp3d).all()
    assert set(model.artifacts()) == {"canonical_shape", "shape_basis", "coefficient_layer"}
    diagnosis = model.diagnose(batch)
    assert 0 <= diagnosis.values["category_accuracy"] <= 1
    assert isinstance(diagnosis.warnings, list)


def test_diagnose_checks_flatness_only_once_the_lifter_trains() -> None:
    """A detector-only run (the benchmark's two-stage detector) never trains its lifter: no
    flatness warning about it. From ``detector_steps`` on, and for a model loaded without
    training, the check runs."""
    torch.manual_seed(0)
    model = LifterE2E(_config(detector_steps=5, cycle_start=5)).eval()
    batch = _batch(8)
    assert "near_flat" in model.diagnose(batch).values  # loaded, not trained here
    model.on_step(4)
    early = model.diagnose(batch)
    assert "near_flat" not in early.values and early.warnings == []
    model.on_step(5)
    assert "near_flat" in model.diagnose(batch).values
