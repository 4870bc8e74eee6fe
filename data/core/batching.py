"""Length-bucketed batches: sentences of similar length share a batch, so little is padding.

Batches are sized in sentences or in tokens (the longer side of each pair, padded). The order
of batches is shuffled each epoch from (seed, epoch), so runs are deterministic; under DDP each
process takes every world_size-th batch of the same list.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Literal

import torch
from torch.utils.data import Sampler

from data.core.resumable import StartAt
from data.core.vocab import BOS, EOS, PAD


class _EpochSetter:
    """Lightning calls `dataloader.batch_sampler.sampler.set_epoch(epoch)` at each epoch start
    (also after a resume); this forwards it to the batch sampler, whose shuffle depends on it."""

    def __init__(self, owner: BucketBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class BucketBatchSampler(StartAt, Sampler[list[int]]):
    """lengths: one size per example -> lists of indices, each a batch of similar lengths. A
    resumed loader starts an epoch part-way in (`start_next_at`, data/core/resumable.py)."""

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        batch_by: Literal["sentences", "tokens"] = "sentences",
        shuffle: bool = True,
        seed: int = 0,
        bucket_batches: int = 100,
        rank: int | None = None,
        world_size: int | None = None,
        even: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_by not in ("sentences", "tokens"):
            raise ValueError(f"batch_by must be 'sentences' or 'tokens', got {batch_by!r}")
        self.lengths, self.batch_size, self.batch_by = lengths, batch_size, batch_by
        self.shuffle, self.seed, self.bucket_batches = shuffle, seed, bucket_batches
        self.rank, self.world_size, self.even = rank, world_size, even
        self.epoch = 0
        self.sampler = _EpochSetter(self)

    def _dist(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        # sort within large chunks: similar lengths together, but not the same batches each epoch
        chunk = self.batch_size * self.bucket_batches if self.batch_by == "sentences" else 10_000
        if not self.shuffle:
            chunk = len(order) or 1
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: self.lengths[i])
            batches.extend(self._fill(part))
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _fill(self, indices: list[int]) -> list[list[int]]:
        if self.batch_by == "sentences":
            return [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        batches, batch, longest = [], [], 0
        for i in indices:  # a batch holds at most batch_size tokens, padding included
            longest_if = max(longest, self.lengths[i])
            if batch and longest_if * (len(batch) + 1) > self.batch_size:
                batches.append(batch)
                batch, longest_if = [], self.lengths[i]
            batch.append(i)
            longest = longest_if
        if batch:
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._dist()
        batches = self._batches()
        if world > 1:  # training: every process the same number of batches; eval: all of them
            usable = len(batches) - len(batches) % world if self.even else len(batches)
            batches = batches[rank:usable:world]
        return iter(batches[self.take_start() :])

    def __len__(self) -> int:
        rank, world = self._dist()
        n = len(self._batches())
        if world == 1:
            return n
        return n // world if self.even else len(range(rank, n, world))


def collate_pairs(items: list[dict]) -> dict:
    """Items with "src", "tgt" id lists (no specials) -> padded tensors for teacher forcing:
    src (B, S), src_lengths (B,), tgt_in (B, T) = <bos> y, tgt_out (B, T) = y <eos>;
    "index" and raw texts pass through as lists."""
    B = len(items)
    S = max(len(it["src"]) for it in items)
    T = max(len(it["tgt"]) for it in items) + 1
    src = torch.full((B, S), PAD, dtype=torch.long)
    tgt_in = torch.full((B, T), PAD, dtype=torch.long)
    tgt_out = torch.full((B, T), PAD, dtype=torch.long)
    for b, it in enumerate(items):
        s, t = it["src"], it["tgt"]
        src[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[b, : len(t) + 1] = torch.tensor([BOS] + t, dtype=torch.long)
        tgt_out[b, : len(t) + 1] = torch.tensor(t + [EOS], dtype=torch.long)
    batch = {
        "src": src,
        "src_lengths": torch.tensor([len(it["src"]) for it in items], dtype=torch.long),
        "tgt_in": tgt_in,
        "tgt_out": tgt_out,
        "index": [it["index"] for it in items],
    }
    for key in ("src_text", "tgt_text"):
        if key in items[0]:
            batch[key] = [it[key] for it in items]
    return batch
