import itertools

import pytest
import torch

from kp3d.data.schema import Sample
from kp3d.engine.data import StreamSampler, epoch_permutation, make_loader


def _take(sampler: StreamSampler, n: int) -> list[int]:
    return list(itertools.islice(iter(sampler), n))


def test_each_epoch_is_a_fresh_permutation() -> None:
    stream = _take(StreamSampler(7, batch_size=3, seed=1), 21)
    epochs = [stream[i : i + 7] for i in (0, 7, 14)]
    assert all(sorted(e) == list(range(7)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3
    assert epochs[1] == epoch_permutation(7, 1, 1).tolist()
    assert epoch_permutation(7, 1, 1).tolist() != epoch_permutation(7, 2, 1).tolist()


def test_starting_mid_stream_equals_skipping() -> None:
    whole = _take(StreamSampler(5, batch_size=4, seed=3), 40)
    assert _take(StreamSampler(5, batch_size=4, seed=3, start=12), 28) == whole[12:]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_disjoint_slices_that_make_the_single_process_batch(world: int) -> None:
    b, steps = 2, 5
    single = _take(StreamSampler(9, batch_size=b * world, seed=0), b * world * steps)
    ranks = [
        _take(StreamSampler(9, batch_size=b, seed=0, rank=r, world_size=world), b * steps)
        for r in range(world)
    ]
    for t in range(steps):
        joined = list(itertools.chain.from_iterable(r[t * b : (t + 1) * b] for r in ranks))
        assert joined == single[t * b * world : (t + 1) * b * world]
    # Within the first epoch's 9 positions every sample goes to exactly one rank.
    first_epoch = [i for t in range(steps) for r in ranks for i in r[t * b : (t + 1) * b]][:9]
    assert sorted(first_epoch) == list(range(9))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        StreamSampler(0, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="rank"):
        StreamSampler(3, batch_size=1, seed=0, rank=2, world_size=2)


class _Indexed(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> Sample:
        return Sample(kp2d=torch.full((1, 2), float(i)), name=str(i))


def test_loader_batches_follow_the_stream_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    batches = iter(make_loader(_Indexed(), batch_size=3, seed=4, start=6, workers=0))
    first = next(batches)
    assert torch.equal(torch.get_rng_state(), state)
    expected = _take(StreamSampler(5, batch_size=3, seed=4, start=6), 3)
    assert first.kp2d[:, 0, 0].long().tolist() == expected
    assert first.name == [str(i) for i in expected]
