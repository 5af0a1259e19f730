"""autolink3d's ``norm`` setting end to end: the config field, the networks it builds, training.

(The blocks themselves are tested in test_blocks.py; multi-process equivalence with
``norm = group`` in tests/engine/test_distributed.py.)"""

from typing import get_args

import pytest
import torch

from kp3d.config import config_from_dict
from kp3d.data.schema import Sample
from kp3d.errors import ConfigError
from kp3d.methods import get_method
from kp3d.methods.autolink3d.config import AutoLink3DConfig, Norm
from kp3d.nn.blocks import NormKind

TINY = {
    "k": 4,
    "image_size": 32,
    "heatmap_size": 8,
    "mask_grid": 8,
    "width": 0.125,
    "n_basis": 2,
    "perceptual": "none",
    "w_pixel": 1.0,
}


def test_config_and_blocks_offer_the_same_choices():
    assert get_args(Norm) == get_args(NormKind)
    assert AutoLink3DConfig().norm == "batch"


def test_unknown_norm_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="norm: got 'instance'; valid choices: batch, group"):
        AutoLink3DConfig(norm="instance")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'batch', 'group'"):
        config_from_dict(AutoLink3DConfig, {"norm": "grop"}, source="test")
    assert config_from_dict(AutoLink3DConfig, {"norm": "group"}, source="test").norm == "group"


def test_group_norm_model_builds_and_trains_two_steps():
    spec = get_method("autolink3d")
    torch.manual_seed(0)
    model = spec.build(spec.config_cls(**TINY, norm="group")).train()
    batch_norm_model = spec.build(spec.config_cls(**TINY))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.detector.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.decoder.modules())
    # The same parameter names as the BatchNorm model, without its running statistics.
    assert model.state_dict().keys() < batch_norm_model.state_dict().keys()

    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = Sample(image=torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    for step in range(2):
        out = model.training_step(batch, step)
        assert torch.isfinite(out.loss)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    moved = [k for k, v in model.named_parameters() if not torch.equal(v, start[k])]
    assert any(k.startswith("detector.") for k in moved)
    assert any(k.startswith("decoder.") for k in moved)
    # A group-norm checkpoint loads into a fresh group-norm model.
    fresh = spec.build(spec.config_cls(**TINY, norm="group"))
    fresh.load_state_dict(model.state_dict())
