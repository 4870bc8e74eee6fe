"""EpochShuffle (data/core/epoch_shuffle.py): the orders of a seeded shuffling DataLoader, from the epoch
alone, so a resumed captioning run sees the batches of a straight one."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from data.core.epoch_shuffle import EpochShuffle, eval_sampler


def epochs_of(loader: DataLoader, sampler: EpochShuffle | None, epochs) -> list[list[int]]:
    orders = []
    for epoch in epochs:
        if sampler is not None:
            sampler.set_epoch(epoch)
        orders.append([i for batch in loader for i in batch.tolist()])
    return orders


def test_the_orders_are_those_of_a_seeded_shuffling_dataloader_and_depend_on_the_epoch_alone():
    data = list(range(37))
    straight = DataLoader(data, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(3))
    expected = epochs_of(straight, None, range(4))
    assert len({tuple(o) for o in expected}) == 4 and all(sorted(o) == data for o in expected)
    sampler = EpochShuffle(len(data), seed=3)
    loader = DataLoader(data, batch_size=5, sampler=sampler, generator=torch.Generator().manual_seed(3))
    assert epochs_of(loader, sampler, range(4)) == expected
    resumed = EpochShuffle(len(data), seed=3)  # a fresh sampler set to epoch 2, as after a resume
    loader = DataLoader(data, batch_size=5, sampler=resumed, generator=torch.Generator().manual_seed(3))
    assert epochs_of(loader, resumed, [2, 3]) == expected[2:]
    state = torch.get_rng_state()
    list(loader)
    assert torch.equal(state, torch.get_rng_state())  # the global generator (dropout's) is untouched


def test_under_ddp_every_process_takes_an_equal_disjoint_share_of_the_epoch():
    whole = list(EpochShuffle(37, seed=3))
    shares = [EpochShuffle(37, seed=3, rank=r, world_size=3) for r in range(3)]
    for share in shares:
        share.set_epoch(0)
    got = [list(s) for s in shares]
    assert [len(g) for g in got] == [12, 12, 12] == [len(s) for s in shares]  # the same step count
    assert sorted(i for g in got for i in g) == sorted(whole[:36])  # the last 37 % 3 sit out
    assert got[1] == whole[1:36:3]
    assert eval_sampler(list(range(5))) is None  # one process: the loader's own order
    evals = [list(eval_sampler(list(range(5)), r, 2)) for r in range(2)]
    assert evals == [[0, 2, 4], [1, 3, 0]]  # in order, padded to equal shares, every example seen
