"""ResumableLoader: a training DataLoader whose place in the epoch Lightning saves and restores.

Lightning stores `loader.state_dict()` in every checkpoint and calls `loader.load_state_dict(...)`
before iterating again when it resumes (a loader without them is "not resumable": it would start
the interrupted epoch over). The state is two numbers, (epoch, batches served in it): our orders
depend on (seed, epoch) alone (BucketBatchSampler, EpochShuffle, the LM's chunk streams), so the
resumed loader sets the epoch and starts `batches` in, without loading the batches it skips.

What does the skipping (the loader's "position owner": its batch sampler, its sampler, or its
iterable dataset) has `epoch`, `set_epoch(e)` and `start_next_at(n)`: the next iteration starts
at item n (a batch of a batch sampler or a chunk stream, an example of a sampler), once; a
`set_epoch` to another epoch cancels it (a checkpoint written at the end of an epoch resumes at
the start of the next one).

The loader also never draws from the global torch random stream (a DataLoader without a
generator draws its workers' base seed from it at every epoch): the training's dropout masks
then do not depend on where in the epoch a run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


class StartAt:
    """Mixin for a position owner: `epoch`, `set_epoch`, `start_next_at` and `take_start()`,
    which the owner's `__iter__` calls to learn where this iteration starts."""

    epoch: int = 0
    _start: int = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._start = 0
        self.epoch = epoch

    def start_next_at(self, n: int) -> None:
        self._start = n

    def take_start(self) -> int:
        start, self._start = self._start, 0
        return start


def make_loader(dataset, *, train: bool, seed: int, **kwargs) -> DataLoader:
    """The data modules' loaders: a ResumableLoader for training (a checkpoint holds its place in
    the epoch), a plain DataLoader for validation and test."""
    if train:
        return ResumableLoader(dataset, seed=seed, **kwargs)
    return DataLoader(dataset, **kwargs)


class ResumableLoader(DataLoader):
    """DataLoader(*args, seed=..., **kwargs) with `state_dict()` / `load_state_dict()`:
    {"epoch": e, "batches": b}, b the batches this loader has handed out in epoch e."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(*args, **kwargs)
        self.seed = seed
        self._served = 0
        self._start = 0

    def _owner(self) -> StartAt:
        for owner in (self.batch_sampler, self.sampler, self.dataset):
            if isinstance(owner, StartAt):
                return owner
        raise TypeError("a ResumableLoader needs a batch sampler, sampler or dataset that is a StartAt")

    def _items_per_batch(self) -> int:
        """Items of the owner in one batch: 1 for a batch sampler or a dataset of batches, the
        batch size for an example sampler that the DataLoader batches."""
        owner = self._owner()
        return self.batch_size if owner is self.sampler and self.batch_size else 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": int(self._owner().epoch), "batches": int(self._served)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        owner, batches = self._owner(), int(state["batches"])
        owner.set_epoch(int(state["epoch"]))
        if batches >= len(self):  # the epoch was over: the next one starts at its beginning
            batches = 0
        owner.start_next_at(batches * self._items_per_batch())
        self._start = batches

    def __iter__(self) -> Iterator:
        # a generator: nothing runs before the first batch is asked for, after Lightning's set_epoch
        owner = self._owner()
        self._served, self._start = (self._start if owner._start else 0), 0
        self.generator.manual_seed(self.seed * 1_000_003 + owner.epoch)  # the workers' seeds: (seed, epoch)
        for batch in super().__iter__():
            self._served += 1
            yield batch
