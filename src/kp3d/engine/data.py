"""The training data stream: an endless, seeded, resumable and shardable order of samples."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from kp3d.data.schema import Sample, collate


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the ``n`` samples in ``epoch``: a permutation seeded by ``(seed, epoch)``."""
    entropy = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    g = torch.Generator().manual_seed((int(entropy[0]) << 31) ^ int(entropy[1]))
    return torch.randperm(n, generator=g)


class StreamSampler(Sampler[int]):
    """Sample indices of an endless stream, cut into global batches and shared between ranks.

    The stream is the concatenation of per-epoch permutations (:func:`epoch_permutation`), so
    every epoch is reshuffled and every batch is full (a batch may straddle two epochs). Global
    batch ``t`` is stream items ``[t G, (t + 1) G)`` with ``G = batch_size x world_size``; rank
    ``r`` takes the ``r``-th slice of ``batch_size`` items. Over the ranks the slices are
    disjoint and together equal the single-process batch of size ``G``, and within an epoch
    every sample goes to exactly one rank (the guarantee of ``DistributedSampler``).

    The order is a pure function of ``seed``: resuming at stream position ``start`` (samples
    drawn so far, over all ranks) needs no saved generator state.
    """

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < 1:
            raise ValueError("StreamSampler: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"StreamSampler: rank {rank} outside [0, {world_size})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size

    def __iter__(self) -> Iterator[int]:
        global_batch = self.batch_size * self.world_size
        pos = self.start + self.rank * self.batch_size
        epoch, order = -1, []
        while True:
            for p in range(pos, pos + self.batch_size):
                e, i = divmod(p, self.n)
                if e != epoch:
                    epoch, order = e, epoch_permutation(self.n, self.seed, e).tolist()
                yield order[i]
            pos += global_batch


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker (base seed + id); numpy and random would otherwise be copies.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset[Sample],
    *,
    batch_size: int,
    seed: int,
    start: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader[Sample]:
    """A DataLoader of batch :class:`Sample`\\ s following :class:`StreamSampler` from ``start``.

    Datasets must be deterministic functions of the index (randomness belongs in the method's
    ``training_step``, on the restored RNG streams), otherwise a resumed run differs.
    """
    sampler = StreamSampler(
        len(dataset),
        batch_size=batch_size,
        seed=seed,
        start=start,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if workers else None,
        persistent_workers=workers > 0,
        # Its own generator: creating the iterator would otherwise draw from the global stream
        # that a resumed run restores.
        generator=torch.Generator().manual_seed(seed),
    )
