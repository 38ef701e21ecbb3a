"""Dynamic batching: concurrent requests are gathered into one model call instead of served one at a time.

Requests wait in one bounded queue (a full queue answers 503 at once rather than letting latency grow without
bound). A single consumer takes the oldest request, then keeps taking requests for up to max_wait_ms or until
max_batch_size of them share its batch key (same variant, same kind, for chat also the same sampling settings);
requests with another key wait, in order, for the next batch. The batch runs in a worker thread, so the event loop
keeps accepting and queueing requests meanwhile: while one batch computes, the next one fills, which is where the
gain comes from under load. max_batch_size=1 turns batching off (one request per call, in arrival order).

Failures stay contained: whatever goes wrong with one batch (the model call raises, returns the wrong number of
results, the on_batch hook raises) fails that batch's requests with a 500 and the consumer goes on to the next. A
request that waits longer than timeout_s gets a 504 and gives its queue slot back at once. Should the consumer
die anyway, every waiting request and every new one gets a 503 at once, and `failure` says why (for /health).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ftkit.serve.protocol import ApiError, log_failure, server_error

log = logging.getLogger("ftkit")


@dataclass
class _Item:
    key: Hashable
    payload: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)
    counted: bool = True  # still counted in DynamicBatcher.waiting (until its batch starts or its caller leaves)


class DynamicBatcher:
    """run(key, payloads) -> results (same order, one per payload) is called in a worker thread, one batch at a time."""

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], list[Any]],
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[Hashable, int], None] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.run, self.max_batch_size, self.max_wait = run, max_batch_size, max_wait_ms / 1000
        self.max_queue, self.on_batch, self.timeout = max_queue, on_batch, timeout_s
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.deferred: list[_Item] = []  # taken from the queue while filling a batch of another key
        self.current: list[_Item] = []  # the batch being filled or run, so a dying consumer can answer it
        self.waiting = 0  # requests submitted and not yet in a running batch (nor given up by their caller)
        self.task: asyncio.Task | None = None
        self.failure: str | None = None  # why the consumer stopped, once it has
        self.stopping = False

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())
        self.task.add_done_callback(self._ended)

    async def stop(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def submit(self, key: Hashable, payload: Any, reserved: int = 0) -> Any:
        """Queue one request and wait for its result; 503 when max_queue requests (plus `reserved`) wait already
        or the consumer is not running, 504 after timeout_s."""
        if not self.alive:
            raise self._unavailable()
        if self.waiting + reserved >= self.max_queue:
            raise ApiError(
                503,
                f"The server is at capacity ({self.max_queue} requests waiting); retry shortly",
                type="server_overloaded",
                code="queue_full",
            )
        item = _Item(key, payload, asyncio.get_running_loop().create_future())
        self.waiting += 1
        self.queue.put_nowait(item)
        try:
            return await asyncio.wait_for(item.future, self.timeout)
        except TimeoutError:
            raise ApiError(
                504,
                f"The request took longer than this server's limit of {self.timeout:g} s; retry later, or send "
                "fewer texts or a smaller max_tokens",
                type="timeout_error",
                code="request_timeout",
            ) from None
        finally:
            if not item.future.done():  # the caller went away: the consumer skips a done future
                item.future.cancel()
            self._release(item)  # its slot is free now, not when the consumer reaches it

    def _release(self, item: _Item) -> None:
        if item.counted:
            item.counted = False
            self.waiting -= 1

    def _unavailable(self) -> ApiError:
        return ApiError(
            503,
            "The server cannot answer requests: its batching worker has stopped (GET /health says why); "
            "the server must be restarted",
            type="server_error",
            code="service_unavailable",
        )

    def _ended(self, task: asyncio.Task) -> None:
        """The consumer stopped: record why, and answer every request still waiting so none hangs."""
        if task.cancelled():
            self.failure = "the server is shutting down" if self.stopping else "the batching worker was cancelled"
            if not self.stopping:
                log.error("the batching worker was cancelled; requests now get 503 (restart the server)")
        else:
            error = task.exception() or RuntimeError("the consumer loop returned")
            ident = log_failure(error, "the batching worker")
            self.failure = f"the batching worker died ({type(error).__name__}, error id {ident})"
        pending = [*self.current, *self.deferred]
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        self.current, self.deferred = [], []
        for item in pending:
            self._release(item)
            if not item.future.done():
                item.future.set_exception(self._unavailable())

    def _take_deferred(self, key: Hashable, room: int) -> list[_Item]:
        taken = [item for item in self.deferred if item.key == key][:room]
        self.deferred = [item for item in self.deferred if not any(item is t for t in taken)]
        return taken

    async def _get_within(self, seconds: float) -> _Item | None:
        """The next queued request, or None after `seconds`; never loses one that arrives as the time runs out
        (asyncio.wait_for around Queue.get can, on Python < 3.12)."""
        getter = asyncio.ensure_future(self.queue.get())
        done, _ = await asyncio.wait({getter}, timeout=seconds)
        if not done:
            getter.cancel()
            await asyncio.wait({getter})
            if getter.cancelled():
                return None
        return getter.result()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = self.deferred.pop(0) if self.deferred else await self.queue.get()
            batch = self.current = [first, *self._take_deferred(first.key, self.max_batch_size - 1)]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                try:
                    item = self.queue.get_nowait()  # whatever arrived while the last batch ran
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    item = await self._get_within(remaining)
                    if item is None:
                        break
                (batch if item.key == first.key else self.deferred).append(item)
            for item in batch:
                self._release(item)
            batch = self.current = [item for item in batch if not item.future.done()]  # callers that went away
            if batch:
                await self._run(first.key, batch)
            self.current = []

    async def _run(self, key: Hashable, batch: list[_Item]) -> None:
        """One batch: its requests get their results, or all of them an error; nothing escapes to the loop."""
        try:
            if self.on_batch is not None:
                self.on_batch(key, len(batch))
            results = await asyncio.to_thread(self.run, key, [item.payload for item in batch])
            if len(results) != len(batch):  # answering by position would hand requests each other's results
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)} requests")
        except ApiError as error:  # an answer the batch function chose (e.g. a 4xx): every request gets it
            failures = [error] * len(batch)
        except Exception as error:  # noqa: BLE001 (this batch fails with a 500; the consumer keeps serving)
            ident = log_failure(error, f"a batch of {len(batch)} requests ({key})")
            failures = [server_error(ident) for _ in batch]
        else:
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():  # a caller that timed out or left gets nothing
                    item.future.set_result(result)
            return
        for item, failure in zip(batch, failures, strict=True):
            if not item.future.done():
                item.future.set_exception(failure)
