"""Decoding in worker processes on the CPU: `--workers N` of translate and evaluate.

Beam search over a batch is a chain of small products and vocabulary-wide steps, and torch's
intra-op threads share each of them out; past one or two threads they mostly wait for each other.
N processes of one thread each, every one decoding its own batches, keep N cores busy instead
(CTranslate2's ``inter_threads``). The workers are forked from the process that loaded the model,
so they share its weights (copy-on-write) and start in milliseconds; each runs torch on one thread
(after a fork, a libgomp that ran a parallel region in the parent hangs in the child's first one
with more than one thread: one thread never starts one).

Fork exists on Linux and macOS; elsewhere (Windows), and for one worker, the work runs in this
process as it would without workers.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_work: Callable | None = None  # the function the forked workers call (inherited, never pickled)


def usable(workers: int, device: torch.device | str) -> int:
    """How many workers a request for `workers` gets: that many on the CPU where fork exists, else 1.
    ValueError for fewer than 1, or more than one on a GPU (one process owns a GPU's work)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and torch.device(device).type != "cpu":
        raise ValueError(f"worker processes decode on the CPU only; on {device} use one (got {workers})")
    return workers if "fork" in multiprocessing.get_all_start_methods() else 1


def _one_thread() -> None:
    torch.set_num_threads(1)


def _call(item):
    return _work(item)


def map_in_workers(work: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """work(item) for every item, in order. With workers > 1 (and fork available) each item runs in
    one of `workers` forked processes of one torch thread, handed out one at a time as workers come
    free: give the longest items first, so that no worker is left with a long one at the end. An
    exception in a worker is raised here; leaving the iterator early stops the workers."""
    if workers <= 1 or len(items) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(work, items)
        return
    global _work
    _work = work
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(min(workers, len(items)), initializer=_one_thread) as pool:
            yield from pool.imap(_call, items, chunksize=1)
    finally:
        _work = None


def add_workers_argument(parser) -> None:
    """--workers N of the decoding CLIs (translate, evaluate)."""
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="decode in N forked processes of one thread each (CPU only; about one per core is fastest)",
    )  # fmt: skip


def check_workers(workers: int, device: torch.device) -> None:
    """--workers for a CLI: DataError (exit 2, one line) where usable() refuses it."""
    from data.core.parallel import DataError

    try:
        usable(workers, device)
    except ValueError as e:
        raise DataError(f"--workers {workers}: {e}") from None
