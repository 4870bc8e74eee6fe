"""EpochShuffle: the training order of `DataLoader(shuffle=True, generator=seeded)`, for any epoch.

A DataLoader with a seeded generator draws, each epoch, one number for its workers' base seed, the
epoch's permutation and a second one (RandomSampler's empty remainder), all from that generator:
epoch e's order depends on the e epochs before it, so a run resumed at epoch e (a fresh generator)
would see epoch 0's order again. EpochShuffle replays those draws from the seed up to the epoch
Lightning sets (`set_epoch`, called at every epoch start, also after a resume): the orders of the
DataLoader's straight run of whole epochs, and a resumed run sees the batches a straight one would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """n examples -> a permutation of range(n) that depends on (seed, epoch) alone."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        for epoch in range(self.epoch + 1):  # RandomSampler's draws: the workers' base seed, the
            torch.empty((), dtype=torch.int64).random_(generator=generator)  # permutation, and one
            order = torch.randperm(self.n, generator=generator)  # more (its 0-long remainder)
            if epoch < self.epoch:
                torch.randperm(self.n, generator=generator)
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.n
