"""Running blocking inference off the event loop, with bounded concurrency.

Each embedded engine owns one `InferenceLane`: a semaphore that lets a fixed number of calls
run at once (the models are shared by every session and already use several threads each) and
a way to stream a blocking generator's items back to the event loop. Cancelling the consumer
asks the worker thread to stop at its next item, so a cancelled turn frees its lane quickly.

Lanes report how many callers wait for a slot and how long each waited to the `LaneWatcher`s
in `watchers` (the metrics add one); with none, waiting for a slot costs one list check more.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

_DONE = object()


class Cancelled(Exception):
    """Raised inside a worker thread when its consumer went away."""


class StopFlag:
    """Checked by blocking code between steps; set when the consumer is cancelled."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled


class LaneWatcher(Protocol):
    """Told of the lanes' queues; called on the event loop, must be quick and never raise."""

    def lane_queue_depth(self, engine: str, depth: int) -> None:
        """`depth` callers of `engine`'s lane now wait for a slot (not counting those running)."""

    def lane_queue_wait(self, engine: str, seconds: float) -> None:
        """A caller of `engine`'s lane got its slot after waiting `seconds`."""


watchers: list[LaneWatcher] = []
"""Every lane reports to these; empty unless metrics are recorded."""


class InferenceLane:
    """At most `concurrency` calls of one engine at a time, each in a worker thread."""

    def __init__(self, name: str, concurrency: int = 1) -> None:
        self.name = name
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting = 0

    async def _acquire(self) -> None:
        """Take a slot, telling the watchers (if any) about the queue and the wait."""
        if not watchers:
            await self._slots.acquire()
            return
        start = time.perf_counter()
        self._waiting += 1
        self._tell_depth()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._tell_depth()
        waited = time.perf_counter() - start
        for watcher in list(watchers):
            watcher.lane_queue_wait(self.name, waited)

    def _tell_depth(self) -> None:
        for watcher in list(watchers):
            watcher.lane_queue_depth(self.name, self._waiting)

    async def run(self, fn: Callable[[StopFlag], T]) -> T:
        """Run `fn(stop)` in a thread and return its result."""
        stop = StopFlag()
        await self._acquire()
        try:
            task = asyncio.ensure_future(asyncio.to_thread(fn, stop))
            # A cancelled caller leaves the worker's outcome (`Cancelled`, most often) to
            # nobody: retrieve it, or asyncio reports "Task exception was never retrieved".
            task.add_done_callback(_retrieve)
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                stop.set()
                # Hold the slot until the thread has really stopped: the model is not free
                # before that, and the next caller must not run beside it (a second
                # cancellation too: the thread cannot be stopped sooner).
                while not task.done():
                    try:
                        await asyncio.wait({task})
                    except asyncio.CancelledError:
                        continue
                raise
        finally:
            self._slots.release()

    async def stream(self, produce: Callable[[StopFlag], Iterator[T]]) -> AsyncIterator[T]:
        """Iterate the blocking generator `produce(stop)` in a thread, yielding its items here."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = StopFlag()

        def pump() -> None:
            try:
                for item in produce(stop):
                    if stop.is_set:
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except Cancelled:
                pass
            except BaseException as err:  # handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, _Failure(err))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        await self._acquire()
        try:
            worker = asyncio.ensure_future(asyncio.to_thread(pump))
            try:
                while True:
                    item = await queue.get()
                    if item is _DONE:
                        break
                    if isinstance(item, _Failure):
                        raise item.error
                    yield item  # type: ignore[misc]
            finally:
                stop.set()
                await asyncio.wait({worker})
        finally:
            self._slots.release()


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
