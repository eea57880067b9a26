"""Dynamic batching: requests that arrive while the model is busy are answered together.

One thread owns the model. It takes the oldest request; if nothing else is queued it runs that one
at once (an idle server adds no wait); otherwise it takes what is queued, up to `max_batch_tokens`
padded positions and `max_batch_texts` texts, and, while others keep arriving, waits at most
`max_wait_ms` for more. The runtime then sorts the batch's texts by length and packs them, so a
batch of mixed requests pads little. The queue is bounded: a full queue refuses at once
(`Overloaded`) rather than building a backlog that would only time out.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..runtime.errors import EdgeNLPError


class Overloaded(EdgeNLPError):
    """The queue is full: the client should retry later."""


class ShuttingDown(EdgeNLPError):
    """The server is stopping and takes no new work."""


@dataclass
class Job:
    items: list
    """Prepared inputs (encodings), one per text."""
    tokens: int
    longest: int
    enqueued: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)
    started: float = 0.0
    batch_texts: int = 0


@dataclass(frozen=True)
class BatchSettings:
    enabled: bool = True
    max_batch_tokens: int = 16384
    """Padded positions one batch may hold (texts x the longest text)."""
    max_batch_texts: int = 16
    """Texts per model run: INT8 MiniLM on an AVX2 core answered more texts a second in runs of 4-16
    than one by one, and fewer in runs of 64 (the sweep in benchmarks/results/serve_load.json)."""
    max_wait_ms: float = 2.0
    """How long a busy server waits for more requests to fill a batch (never when idle)."""
    max_queue: int = 256
    """Requests waiting at most; one more is refused with 503."""


_NOTHING = object()


class Batcher:
    def __init__(
        self,
        run: Callable[[list], list],
        settings: BatchSettings = BatchSettings(),
        on_batch: Callable[[int, int], None] | None = None,
    ):
        """`run(items) -> answers` answers one batch of prepared inputs, in order; `on_batch(texts, requests)`
        hears of every batch run (for metrics)."""
        self.run = run
        self.settings = settings
        self.on_batch = on_batch or (lambda texts, requests: None)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=settings.max_queue)
        self._gate = threading.Lock()  # a request is either queued before the stop marker or refused
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="edgenlp-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, items: Sequence, lengths: Sequence[int]) -> Job:
        job = Job(list(items), tokens=sum(lengths), longest=max(lengths))
        with self._gate:
            if self._closing:
                raise ShuttingDown("the server is shutting down: send the request to another instance")
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise Overloaded(f"{self.settings.max_queue} requests are already waiting: retry shortly") from None
        return job

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new work, answer everything already queued, then stop the thread."""
        with self._gate:
            self._closing = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _fits(self, batch: list[Job], job: Job) -> bool:
        texts = sum(len(j.items) for j in batch) + len(job.items)
        longest = max([job.longest, *(j.longest for j in batch)])
        return texts <= self.settings.max_batch_texts and texts * longest <= self.settings.max_batch_tokens

    def _collect(self, first: Job) -> tuple[list[Job], object]:
        """The batch that starts with `first`, and what was taken but not added (a job, the stop marker)."""
        batch = [first]
        if not self.settings.enabled:
            return batch, _NOTHING
        deadline = time.perf_counter() + self.settings.max_wait_ms / 1000
        while True:
            if self._queue.empty() and len(batch) == 1:
                return batch, _NOTHING  # idle: answer at once
            try:
                job = (
                    self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                    if self._queue.empty()
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                return batch, _NOTHING
            if job is None or not self._fits(batch, job):
                return batch, job
            batch.append(job)

    def _loop(self) -> None:
        pending = _NOTHING
        while True:
            first = self._queue.get() if pending is _NOTHING else pending
            if first is None:
                return  # the stop marker comes after every request accepted before close()
            batch, pending = self._collect(first)
            self._answer(batch)

    def _answer(self, batch: list[Job]) -> None:
        items = [item for job in batch for item in job.items]
        started = time.perf_counter()
        for job in batch:
            job.started, job.batch_texts = started, len(items)
        try:
            answers = self.run(items)
        except BaseException as exc:  # every waiting request hears of the failure; the thread lives on
            for job in batch:
                job.future.set_exception(exc)
            return
        self.on_batch(len(items), len(batch))
        start = 0
        for job in batch:
            job.future.set_result(answers[start : start + len(job.items)])
            start += len(job.items)
