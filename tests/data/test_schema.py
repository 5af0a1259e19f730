import pytest
import torch

from kp3d.data.schema import Sample, collate


def _sample(name: str, k: int = 4, with_mask: bool = False) -> Sample:
    return Sample(
        image=torch.rand(3, 8, 8),
        mask=torch.ones(1, 8, 8) if with_mask else None,
        kp2d=torch.rand(k, 2) * 8,
        vis=torch.ones(k, dtype=torch.bool),
        name=name,
    )


def test_collate_stacks_present_fields_and_keeps_absent_ones_none() -> None:
    batch = collate([_sample("a"), _sample("b")])
    assert batch.image.shape == (2, 3, 8, 8)
    assert batch.kp2d.shape == (2, 4, 2)
    assert batch.vis.dtype == torch.bool
    assert batch.mask is None and batch.kp3d is None
    assert batch.name == ["a", "b"]
    assert batch.present() == ("image", "kp2d", "vis")


def test_collate_rejects_mixed_fields_naming_samples() -> None:
    with pytest.raises(ValueError, match="'b'"):
        collate([_sample("a"), _sample("b", with_mask=True)])


def test_collate_rejects_shape_mismatch_naming_field() -> None:
    with pytest.raises(ValueError, match="kp2d"):
        collate([_sample("a", k=4), _sample("b", k=5)])


def test_collate_empty_is_an_error() -> None:
    with pytest.raises(ValueError):
        collate([])


def test_to_casts_only_floating_fields() -> None:
    s = _sample("a").to("cpu", torch.float64)
    assert s.image.dtype == torch.float64
    assert s.vis.dtype == torch.bool
