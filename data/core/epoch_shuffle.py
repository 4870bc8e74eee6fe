"""EpochShuffle: the training order of `DataLoader(shuffle=True, generator=seeded)`, for any epoch.

A DataLoader with a seeded generator draws, each epoch, one number for its workers' base seed, the
epoch's permutation and a second one (RandomSampler's empty remainder), all from that generator:
epoch e's order depends on the e epochs before it, so a run resumed at epoch e (a fresh generator)
would see epoch 0's order again. EpochShuffle replays those draws from the seed up to the epoch
Lightning sets (`set_epoch`, called at every epoch start, also after a resume): the orders of the
DataLoader's straight run of whole epochs, and a resumed run sees the batches a straight one would.

Under DDP (the CLI turns Lightning's sampler injection off: `use_distributed_sampler: False`) each
process takes its share itself: EpochShuffle every world-th example of the epoch's permutation from
its rank on, the same number on every process (the last n % world of the permutation sit that epoch
out), and `eval_sampler` a DistributedSampler without shuffling for validation and test (padded to
equal shares; the gathered outputs are deduplicated by key, seq2seq/training/module.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from data.core.resumable import StartAt


def process_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): the ones given, else torch.distributed's, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def eval_sampler(dataset: Dataset, rank: int | None = None, world_size: int | None = None):
    """None in one process (the loader's own order); under DDP this process's share, in order."""
    rank, world = process_rank(rank, world_size)
    return DistributedSampler(dataset, world, rank, shuffle=False) if world > 1 else None


class EpochShuffle(StartAt, Sampler[int]):
    """n examples -> a permutation of range(n) that depends on (seed, epoch) alone; under DDP this
    process's share of it (rank / world_size: torch.distributed's unless given). A resumed loader
    starts an epoch part-way in (`start_next_at`, data/core/resumable.py)."""

    def __init__(self, n: int, seed: int = 0, rank: int | None = None, world_size: int | None = None):
        self.n, self.seed, self.epoch = n, seed, 0
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        for epoch in range(self.epoch + 1):  # RandomSampler's draws: the workers' base seed, the
            torch.empty((), dtype=torch.int64).random_(generator=generator)  # permutation, and one
            order = torch.randperm(self.n, generator=generator)  # more (its 0-long remainder)
            if epoch < self.epoch:
                torch.randperm(self.n, generator=generator)
        rank, world = process_rank(self.rank, self.world_size)
        if world > 1:
            order = order[rank : self.n - self.n % world : world]
        return iter(order[self.take_start() :].tolist())

    def __len__(self) -> int:
        return self.n // process_rank(self.rank, self.world_size)[1]
