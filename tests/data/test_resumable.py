"""ResumableLoader: the batches after a saved position are those an uninterrupted epoch gives,
for each kind of position owner (batch sampler, example sampler, chunk stream), without loading
the batches it skips; an epoch that was over resumes at the start of the next one."""

from __future__ import annotations

import pytest
import torch

from data.core.batching import BucketBatchSampler
from data.core.epoch_shuffle import EpochShuffle
from data.core.resumable import ResumableLoader
from data.datamodules.text import StreamChunks

N = 23


class Recorded(torch.utils.data.Dataset):
    """range(N), remembering which items were loaded."""

    def __init__(self):
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> int:
        self.loaded.append(i)
        return i


def bucket_loader() -> tuple[ResumableLoader, Recorded]:
    data = Recorded()
    sampler = BucketBatchSampler([i % 7 + 1 for i in range(N)], 4, seed=3)
    return ResumableLoader(data, batch_sampler=sampler, collate_fn=list, seed=3), data


def shuffle_loader() -> tuple[ResumableLoader, Recorded]:
    data = Recorded()
    return ResumableLoader(data, batch_size=4, sampler=EpochShuffle(N, seed=3), collate_fn=list, seed=3), data


def stream_loader() -> tuple[ResumableLoader, StreamChunks]:
    chunks = StreamChunks(torch.arange(2 * N).view(2, N), torch.arange(2 * N).view(2, N), 3)
    return ResumableLoader(chunks, batch_size=None, seed=3), chunks


def as_list(batch) -> list:
    return batch["input"].flatten().tolist() if isinstance(batch, dict) else list(batch)


def set_epoch(loader, e: int) -> None:
    """What Lightning does at an epoch's start (the owners that have set_epoch)."""
    for owner in (loader.batch_sampler, loader.sampler, loader.dataset):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(e)


def epoch(loader, e: int) -> list[list]:
    set_epoch(loader, e)
    return [as_list(b) for b in loader]


@pytest.mark.parametrize("make", [bucket_loader, shuffle_loader, stream_loader])
@pytest.mark.parametrize("stop", [1, 3])
def test_resumed_epoch_continues_where_the_saved_one_stopped(make, stop):
    full = epoch(make()[0], 2)
    first, _ = make()
    set_epoch(first, 2)
    it = iter(first)
    seen = [as_list(next(it)) for _ in range(stop)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": stop}

    second, data = make()
    second.load_state_dict(state)
    set_epoch(second, state["epoch"])  # Lightning sets the same epoch again before iterating
    rest = [as_list(b) for b in second]
    assert seen + rest == full
    assert second.state_dict()["batches"] == len(full)
    if isinstance(data, Recorded):  # the skipped batches were never loaded
        assert sorted(data.loaded) == sorted(i for batch in rest for i in batch)
    # and the epoch after is whole again
    assert epoch(second, 3) == epoch(make()[0], 3)


@pytest.mark.parametrize("make", [bucket_loader, shuffle_loader])
def test_an_epoch_that_was_over_resumes_at_the_next_one(make):
    done, _ = make()
    epoch(done, 1)
    state = done.state_dict()
    assert state["batches"] == len(done)
    resumed, _ = make()
    resumed.load_state_dict(state)
    assert epoch(resumed, 2) == epoch(make()[0], 2)  # Lightning moves on to epoch 2: all of it


def test_the_loader_draws_nothing_from_the_global_random_stream():
    loader, _ = shuffle_loader()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    epoch(loader, 0)
    assert torch.equal(torch.get_rng_state(), before)
