"""Dynamic batching: concurrent requests are gathered into one model call instead of served one at a time.

Requests wait in one bounded queue (a full queue answers 503 at once rather than letting latency grow without
bound). A single consumer takes the oldest request, then keeps taking requests for up to max_wait_ms or until
max_batch_size of them share its batch key (same variant, same kind, for chat also the same sampling settings);
requests with another key wait, in order, for the next batch. The batch runs in a worker thread, so the event loop
keeps accepting and queueing requests meanwhile: while one batch computes, the next one fills, which is where the
gain comes from under load. max_batch_size=1 turns batching off (one request per call, in arrival order).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ftkit.serve.protocol import ApiError


@dataclass
class _Item:
    key: Hashable
    payload: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """run(key, payloads) -> results (same order) is called in a worker thread, one batch at a time."""

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], list[Any]],
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[Hashable, int], None] | None = None,
    ) -> None:
        self.run, self.max_batch_size, self.max_wait = run, max_batch_size, max_wait_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.deferred: list[_Item] = []  # taken from the queue while filling a batch of another key
        self.waiting = 0  # requests submitted and not yet in a running batch
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def submit(self, key: Hashable, payload: Any, reserved: int = 0) -> Any:
        """Queue one request and wait for its result; 503 when max_queue requests (plus `reserved`) wait already."""
        if self.waiting + reserved >= self.max_queue:
            raise ApiError(
                503,
                f"The server is at capacity ({self.max_queue} requests waiting); retry shortly",
                type="server_overloaded",
                code="queue_full",
            )
        future = asyncio.get_running_loop().create_future()
        self.waiting += 1
        self.queue.put_nowait(_Item(key, payload, future))
        return await future

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
            batch = [first, *self._take_deferred(first.key, self.max_batch_size - 1)]
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
            self.waiting -= len(batch)
            batch = [item for item in batch if not item.future.done()]  # callers that went away
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(first.key, len(batch))
            try:
                results = await asyncio.to_thread(self.run, first.key, [item.payload for item in batch])
            except Exception as error:  # noqa: BLE001 (each caller gets the error; the loop keeps serving)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
