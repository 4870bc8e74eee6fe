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
import pickle
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import torch

from data.core.parallel import DataError

T = TypeVar("T")
R = TypeVar("R")

_work: Callable | None = None  # in a worker: the function it runs (set by _start, inherited by fork)


def usable(workers: int, device: torch.device | str) -> int:
    """How many workers a request for `workers` gets: that many on the CPU where fork exists, else 1.
    ValueError for fewer than 1, or more than one on a GPU (one process owns a GPU's work)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and torch.device(device).type != "cpu":
        raise ValueError(f"worker processes decode on the CPU only; on {device} use one (got {workers})")
    return workers if "fork" in multiprocessing.get_all_start_methods() else 1


def _start(work: Callable) -> None:
    """A worker's initializer: one torch thread, and `work` (handed over by fork, not pickled)."""
    global _work
    _work = work
    torch.set_num_threads(1)


def _call(item) -> bytes:
    """work(item) pickled here, by value: torch's own pickler would send each tensor as a file
    descriptor of shared memory, and thousands of results would exhaust the parent's descriptors.
    An exception that could not be rebuilt in the parent comes back as a RuntimeError naming it."""
    try:
        return pickle.dumps(_work(item), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        try:
            pickle.loads(pickle.dumps(e))
        except Exception:
            raise RuntimeError(f"{type(e).__name__}: {e}") from None
        raise


def map_in_workers(work: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """work(item) for every item, in order. With workers > 1 (and fork available) each item runs in
    one of `workers` forked processes of one torch thread, handed out one at a time as workers come
    free: give the longest items first, so that no worker is left with a long one at the end. An
    exception in a worker is raised here; a worker that dies (killed, out of memory) raises
    RuntimeError; leaving the iterator early cancels the items not started."""
    if workers <= 1 or len(items) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(work, items)
        return
    pool = ProcessPoolExecutor(
        min(workers, len(items)), mp_context=multiprocessing.get_context("fork"),
        initializer=_start, initargs=(work,),
    )  # fmt: skip
    try:
        for result in pool.map(_call, items):
            yield pickle.loads(result)
    except BrokenProcessPool:
        raise RuntimeError(
            "a worker process died (killed, or out of memory?): run again with fewer --workers"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def add_workers_argument(parser) -> None:
    """--workers N of the decoding CLIs (translate, evaluate)."""
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="decode in N forked processes of one thread each (CPU only; about one per core is fastest)",
    )  # fmt: skip


def check_workers(workers: int, device: torch.device) -> None:
    """--workers for a CLI: DataError (exit 2, one line) where usable() refuses it."""
    try:
        usable(workers, device)
    except ValueError as e:
        raise DataError(f"--workers {workers}: {e}") from None
