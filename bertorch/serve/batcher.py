"""Dynamic batching: requests from many clients share one forward pass, run off the event loop.

Handlers `await batcher.submit(key, inputs, costs)`; one worker thread waits for the oldest queued item
to be `max_wait_ms` old (or for a full batch), takes up to `max_batch_size` items whose padded size
(items x longest cost) stays within `max_batch_tokens`, picks them closest in length to the oldest
item, calls `run(key, inputs)` once, and hands each request its own slice of the results. Items with
different keys (models of a multi-task student) never share a batch.

The oldest item always goes into the next batch, so grouping by length cannot starve a long input.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

LENGTH_WINDOW = 8  # look this many batches deep into the queue for items of a similar length


class QueueFull(Exception):
    """More requests are waiting than --max_concurrent allows (the server answers 429)."""


class Closed(Exception):
    """The batcher is draining or stopped and takes no new work (the server answers 503)."""


@dataclass(eq=False)
class Job:
    """One request: its items, the future its handler awaits, and the results filled in so far."""
    key: Hashable
    inputs: list
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    results: list = field(default_factory=list)
    remaining: int = 0
    settled: bool = False  # answered, failed or cancelled: its queued items are dropped


@dataclass(eq=False)
class Item:
    job: Job
    index: int
    cost: int        # tokens this input takes in a padded batch
    arrived: float   # time.monotonic() when queued


def take_batch(pending: list[Item], max_items: int, max_tokens: int) -> list[Item]:
    """Remove and return the next batch: the oldest item, then the queued items of its key nearest to it
    in length (ties by arrival), while the batch has at most `max_items` items and `max_tokens` padded
    tokens. An item over `max_tokens` on its own still runs, alone."""
    head = pending[0]
    window = [it for it in pending[1:max_items * LENGTH_WINDOW] if it.job.key == head.job.key]
    window.sort(key=lambda it: abs(it.cost - head.cost))  # stable: equal distances keep arrival order
    batch, width = [head], head.cost
    for it in window:
        if len(batch) == max_items:
            break
        if max(width, it.cost) * (len(batch) + 1) <= max_tokens:
            batch.append(it)
            width = max(width, it.cost)
    taken = set(map(id, batch))
    pending[:] = [it for it in pending if id(it) not in taken]
    return batch


def _resolve(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class DynamicBatcher:
    """`run(key, inputs) -> results` (one per input) is called from one worker thread, one batch at a time.
    `observe(batch_size, padded_tokens, queue_seconds, run_seconds)` is told about every batch."""

    def __init__(self, run: Callable[[Hashable, list], Sequence[Any]], max_batch_size: int = 32,
                 max_batch_tokens: int = 16384, max_wait_ms: float = 5.0, max_concurrent: int = 512,
                 observe: Callable[[int, int, list[float], float], None] | None = None):
        self.run, self.observe = run, observe
        self.max_items, self.max_tokens = max_batch_size, max_batch_tokens
        self.max_wait, self.max_concurrent = max_wait_ms / 1000.0, max_concurrent
        self.pending: list[Item] = []
        self.jobs = 0           # requests queued or running
        self.draining = False   # no new work; what is queued runs without waiting for company
        self.flush_until = float("-inf")  # inputs queued by then run without waiting (see _ready)
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="bertorch-serve-batcher", daemon=True)
        self.thread.start()

    async def submit(self, key: Hashable, inputs: list, costs: Sequence[int]) -> list:
        """Queue one request's inputs and wait for their results, in input order."""
        if not inputs:
            return []
        loop = asyncio.get_running_loop()
        job = Job(key, list(inputs), loop, loop.create_future(), [None] * len(inputs), len(inputs))
        now = time.monotonic()
        with self.cond:
            if self.draining:
                raise Closed("the server is shutting down")
            if self.jobs >= self.max_concurrent:
                raise QueueFull(f"{self.jobs} requests are already waiting (--max_concurrent {self.max_concurrent})")
            self.jobs += 1
            self.pending += [Item(job, i, int(c), now) for i, c in enumerate(costs)]
            self.cond.notify()
        try:
            return await job.future
        finally:
            self._settle(job)  # a no-op once answered; if cancelled, its queued items are dropped

    @property
    def queued_items(self) -> int:
        with self.cond:
            return len(self.pending)

    def drain(self) -> None:
        """Stop taking requests; run what is queued now, without waiting `max_wait_ms` for more."""
        with self.cond:
            self.draining = True
            self.cond.notify_all()

    async def close(self, timeout: float | None = None) -> None:
        """Drain, then wait for the worker to answer everything queued and stop."""
        self.drain()
        await asyncio.to_thread(self.thread.join, timeout)

    def _ready(self) -> bool:
        """Run now: when draining, when `max_batch_size` inputs are queued, when the oldest input was already
        queued at the last full queue (it was left out of that batch for lack of room, not of company),
        or when it has waited `max_wait_ms`."""
        if self.draining or len(self.pending) >= self.max_items:
            self.flush_until = self.pending[-1].arrived
            return True
        head = self.pending[0].arrived
        return head <= self.flush_until or time.monotonic() >= head + self.max_wait

    def _work(self) -> None:
        while True:
            with self.cond:
                while True:
                    self.pending = [it for it in self.pending if not it.job.settled]
                    if not self.pending:
                        if self.draining:
                            return
                        self.cond.wait()
                    elif self._ready():
                        break
                    else:
                        self.cond.wait(max(0.0, self.pending[0].arrived + self.max_wait - time.monotonic()))
                batch = take_batch(self.pending, self.max_items, self.max_tokens)
            self._run_batch(batch)

    def _run_batch(self, batch: list[Item]) -> None:
        key, start = batch[0].job.key, time.monotonic()
        try:
            results = list(self.run(key, [it.job.inputs[it.index] for it in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"the model returned {len(results)} results for {len(batch)} inputs")
        except Exception as e:  # every request in the batch gets the error (a 500), the worker goes on
            for job in {id(it.job): it.job for it in batch}.values():
                if self._settle(job):
                    self._answer(job, error=e)
            return
        if self.observe is not None:
            self.observe(len(batch), len(batch) * max(it.cost for it in batch),
                         [start - it.arrived for it in batch], time.monotonic() - start)
        for it, result in zip(batch, results):
            job = it.job
            job.results[it.index] = result
            job.remaining -= 1
            if job.remaining == 0 and self._settle(job):
                self._answer(job)

    def _settle(self, job: Job) -> bool:
        """Mark the job done exactly once (worker and cancelled handler may race); True the first time."""
        with self.cond:
            if job.settled:
                return False
            job.settled = True
            self.jobs -= 1
            return True

    @staticmethod
    def _answer(job: Job, error: BaseException | None = None) -> None:
        try:
            job.loop.call_soon_threadsafe(_resolve, job.future, job.results, error)
        except RuntimeError:  # the caller's event loop is gone: nobody is waiting for this answer
            pass
