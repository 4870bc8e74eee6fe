"""The thread that owns one model for `seqcap serve` (seqcap/server.py): one job at a time, and
concurrent batchable jobs with the same key (the endpoint and its options) run together in one
predictor call (dynamic batching): /translate's sentences, /caption's images, /answer's questions."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any


@dataclass
class Job:
    """One request's work for a model's worker: `run(predictor)` for a plain job; for a batchable
    job its `items` (sentences, images, (image, question) pairs), the `key` it shares with the jobs
    it may run with (the endpoint and its options), and `batch(predictor, items)` -> one result per
    item, called on the items of every job of the batch in order (jobs of equal keys must have
    equivalent batch functions)."""

    future: Future
    run: Callable[[Any], Any] | None = None
    items: list | None = None
    key: tuple | None = None
    batch: Callable[[Any, list], list] | None = None


class ModelWorker:
    """A thread that owns one predictor: it runs one job at a time and runs the batchable jobs of
    one key together (up to max_batch items, gathering them for up to max_wait_ms).

    The gathering adapts to the load: it stops as soon as the batch holds as many items as were in
    flight (submitted, not yet answered) at the busiest moment of the last two batches' cycles, since
    the clients of those are the ones coming back; a lone client's request is run at once, and 32
    clients that alternated in two groups of 16 (the second arriving while the first is decoded) are
    gathered into one batch again. For the first two batches the expectation is max_batch."""

    def __init__(self, name: str, predictor, max_batch: int, max_wait_ms: float):
        self.name, self.predictor = name, predictor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.held: deque[Job] = deque()  # taken while batching but not compatible: next in line
        self.stats = {
            "requests": 0,
            "decode_calls": 0,
            "sentences": 0,  # items run in batchable calls: sentences, images or questions
            "largest_batch": 0,
            "batched_requests": 0,
        }
        self.in_flight = 0  # items of batchable jobs submitted and not yet answered
        self.peaks = [max_batch, max_batch]  # the most in flight in this cycle and the one before
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=f"seqcap-model-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        with self.lock:
            self.stats["requests"] += 1
            if job.items is not None:
                self.in_flight += len(job.items)
                self.peaks[0] = max(self.peaks[0], self.in_flight)
        self.queue.put(job)
        return job.future

    def close(self) -> None:
        """Stops the thread after the job in hand; queued jobs fail with "shutting down"."""
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _fail_rest(self, jobs: list[Job]) -> None:
        """Fails `jobs`, the held ones and every queued one: the server is closing."""
        rest = [*jobs, *self.held]
        self.held.clear()
        while True:
            try:
                rest.append(self.queue.get_nowait())
            except queue.Empty:
                break
        for j in rest:
            if j is not None and not j.future.done():
                j.future.set_exception(RuntimeError("the server is shutting down"))

    def _next(self, timeout: float | None) -> Job | None:
        if self.held:
            return self.held.popleft()
        return self.queue.get(timeout=timeout)

    def _loop(self) -> None:
        while True:
            job = self._next(None)
            if job is None:
                self._fail_rest([])
                return
            if job.run is None:
                jobs = self._gather(job)
                if jobs is None:
                    return
                self._run_batch(jobs)
                continue
            self._settle([job], lambda job=job: [job.run(self.predictor)])

    def _expected(self) -> int:
        """How many items the next batch waits for (the busiest moment of the last two cycles,
        at most max_batch); starts the next cycle's count."""
        with self.lock:
            expected = min(self.max_batch, max(self.peaks))
            self.peaks = [self.in_flight, self.peaks[0]]
        return expected

    def _gather(self, first: Job) -> list[Job] | None:
        """`first` and the jobs of its key that come within max_wait, up to max_batch items: it
        waits while fewer than the expected items (_expected) are in hand, then takes only what is
        already queued; None when the server is closing (the jobs then fail)."""
        jobs, size = [first], len(first.items)
        expected = self._expected()
        deadline = time.monotonic() + self.max_wait
        skipped: list[Job] = []
        while size < self.max_batch and self.max_wait > 0:
            remaining = deadline - time.monotonic() if size < expected else 0
            try:
                if self.held:
                    job = self.held.popleft()
                elif remaining > 0:
                    job = self.queue.get(timeout=remaining)
                else:
                    job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._fail_rest(jobs + skipped)
                return None
            if job.key == first.key and job.run is None and size + len(job.items) <= self.max_batch:
                jobs.append(job)
                size += len(job.items)
            else:
                skipped.append(job)
                if job.key == first.key and job.run is None:
                    break  # the batch is full
        self.held.extendleft(reversed(skipped))
        return jobs

    def _run_batch(self, jobs: list[Job]) -> None:
        """One batch call over every job's items, each job answered with its share. When the call
        fails for several jobs, each is run again alone, so one request's bad input fails that
        request only."""
        if len(jobs) > 1 and not self._settle(jobs, lambda: self._split(jobs), fail=False):
            for job in jobs:
                self._settle([job], lambda job=job: self._split([job]))
        elif len(jobs) == 1:
            self._settle(jobs, lambda: self._split(jobs))

    def _split(self, jobs: list[Job]) -> list:
        items = [x for j in jobs for x in j.items]
        results = jobs[0].batch(self.predictor, items)
        if len(results) != len(items):
            raise RuntimeError(f"a batch of {len(items)} items gave {len(results)} results")
        with self.lock:
            self.stats["sentences"] += len(items)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
            self.stats["batched_requests"] += len(jobs) if len(jobs) > 1 else 0
        out, start = [], 0
        for j in jobs:
            out.append(results[start : start + len(j.items)])
            start += len(j.items)
        return out

    def _settle(self, jobs: list[Job], work: Callable[[], list], fail: bool = True) -> bool:
        """Runs `work` (one value per job) and answers the jobs; on an exception the jobs fail with
        it (fail=True) or are left unanswered (fail=False). -> whether the work succeeded."""
        with self.lock:
            self.stats["decode_calls"] += 1
        try:
            values = work()
        except BaseException as e:  # handed to the request, which answers it; the worker goes on
            if fail:
                self._answered(jobs)
                for j in jobs:
                    answer(j.future, error=e)
            return False
        self._answered(jobs)
        for j, value in zip(jobs, values):
            answer(j.future, value)
        return True

    def _answered(self, jobs: list[Job]) -> None:
        with self.lock:
            self.in_flight -= sum(len(j.items) for j in jobs if j.items is not None)


def answer(future: Future, value: Any = None, error: BaseException | None = None) -> None:
    """Sets a job's result (or its error) unless its request was cancelled meanwhile: a cancelled
    future refuses both, and the worker thread must go on."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except InvalidStateError:
        pass
