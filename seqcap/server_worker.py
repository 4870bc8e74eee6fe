"""The thread that owns one model for `seqcap serve` (seqcap/server.py): one job at a time, and
concurrent translate jobs with the same search options decoded together (dynamic batching)."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass
class Job:
    """One request's work for a model's worker: `run(predictor)` for a plain job; for a batchable
    translate job the sentences and the search options (`key`) it shares with others."""

    future: Future
    run: Callable[[Any], Any] | None = None
    sentences: list[str] | None = None
    key: tuple | None = None


class ModelWorker:
    """A thread that owns one predictor: it runs one job at a time and translates compatible
    /translate jobs together (up to max_batch sentences, waiting up to max_wait_ms for them)."""

    def __init__(self, name: str, predictor, max_batch: int, max_wait_ms: float):
        self.name, self.predictor = name, predictor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.held: deque[Job] = deque()  # taken while batching but not compatible: next in line
        self.stats = {
            "requests": 0,
            "decode_calls": 0,
            "sentences": 0,
            "largest_batch": 0,
            "batched_requests": 0,
        }
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=f"seqcap-model-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        with self.lock:
            self.stats["requests"] += 1
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
            if job.run is not None:
                self._settle([job], lambda job=job: [job.run(self.predictor)])
                continue
            jobs = self._gather(job)
            if jobs is None:
                return
            self._settle(jobs, lambda jobs=jobs: self._translate(jobs))

    def _gather(self, first: Job) -> list[Job] | None:
        """`first` and the compatible translate jobs that come within max_wait, up to max_batch
        sentences; None when the server is closing (the jobs then fail)."""
        jobs, size = [first], len(first.sentences)
        deadline = time.monotonic() + self.max_wait
        skipped: list[Job] = []
        while size < self.max_batch and self.max_wait > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not self.held:
                break
            try:
                job = self.held.popleft() if self.held else self.queue.get(timeout=max(remaining, 0))
            except queue.Empty:
                break
            if job is None:
                self._fail_rest(jobs + skipped)
                return None
            if job.key == first.key and size + len(job.sentences) <= self.max_batch:
                jobs.append(job)
                size += len(job.sentences)
            else:
                skipped.append(job)
                if job.key == first.key:
                    break  # the batch is full
        self.held.extendleft(reversed(skipped))
        return jobs

    def _translate(self, jobs: list[Job]) -> list:
        """One Translator.translate call over every job's sentences -> each job's share."""
        sentences = [s for j in jobs for s in j.sentences]
        beam_size, alpha, n_best, attention = jobs[0].key
        results = self.predictor.translate(
            sentences, beam_size=beam_size, alpha=alpha, n_best=n_best,
            batch_size=self.max_batch, return_attention=attention,
        )  # fmt: skip
        with self.lock:
            self.stats["sentences"] += len(sentences)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(sentences))
            self.stats["batched_requests"] += len(jobs) if len(jobs) > 1 else 0
        out, start = [], 0
        for j in jobs:
            out.append(results[start : start + len(j.sentences)])
            start += len(j.sentences)
        return out

    def _settle(self, jobs: list[Job], work: Callable[[], list]) -> None:
        with self.lock:
            self.stats["decode_calls"] += 1
        try:
            values = work()
        except BaseException as e:  # handed to the request, which answers it; the worker goes on
            for j in jobs:
                j.future.set_exception(e)
            return
        for j, value in zip(jobs, values):
            j.future.set_result(value)
