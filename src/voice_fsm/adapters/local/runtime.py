"""Running blocking inference off the event loop, with bounded concurrency.

Each embedded engine owns one `InferenceLane`: a semaphore that lets a fixed number of calls
run at once (the models are shared by every session and already use several threads each) and
a way to stream a blocking generator's items back to the event loop. Cancelling the consumer
asks the worker thread to stop at its next item, so a cancelled turn frees its lane quickly.

A free slot goes to the most urgent waiter (the lowest `priority`), first come first served
among equals: background work (`BACKGROUND`, a live transcript's interim decodes) never runs
before a decode somebody waits for. `idle_for` says how long the lane has had nothing running
or waiting, so background work can start only on an idle lane and leave it idle part of the
time (a call in a worker thread cannot be interrupted: an urgent call that comes while
background work runs still waits for it).

Lanes report how many callers wait for a slot and how long each waited to the `LaneWatcher`s
in `watchers` (the metrics add one); with none, waiting for a slot costs one list check more.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

_DONE = object()

URGENT = 0
"""The default priority: somebody waits for the result."""
BACKGROUND = 10
"""Work nobody waits for (a live transcript's interim decode): runs after every urgent call."""


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
        self._concurrency = concurrency
        self._free = concurrency
        # (priority, arrival, future): the future's result is the slot, handed over directly.
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._idle_since: float | None = time.monotonic()
        self.last_run_s = 0.0
        """How long the last call that finished took, in its worker (waiting not included)."""

    def idle_for(self) -> float | None:
        """Seconds since the lane last had nothing running or waiting; None while it has."""
        if self._idle_since is None:
            return None
        return time.monotonic() - self._idle_since

    async def _acquire(self, priority: int) -> None:
        """Take a slot, telling the watchers (if any) about the queue and the wait."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            self._idle_since = None
            for watcher in list(watchers):
                watcher.lane_queue_wait(self.name, 0.0)
            return
        start = time.perf_counter()
        slot = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._arrivals), slot)
        heapq.heappush(self._waiters, entry)
        self._idle_since = None
        self._tell_depth()
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self._release()  # handed a slot in the same moment: pass it on
            else:
                if entry in self._waiters:  # else `_wake` already dropped it
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                    self._tell_depth()
                self._wake()
            raise
        waited = time.perf_counter() - start
        for watcher in list(watchers):
            watcher.lane_queue_wait(self.name, waited)

    def _release(self) -> None:
        self._free += 1
        self._wake()

    def _wake(self) -> None:
        """Hand the free slots to the most urgent waiters; note when the lane turns idle."""
        while self._free > 0 and self._waiters:
            _priority, _arrival, slot = heapq.heappop(self._waiters)
            self._tell_depth()
            if not slot.done():  # a cancelled waiter's entry may still be here
                self._free -= 1
                slot.set_result(None)
        if self._free == self._concurrency and not self._waiters and self._idle_since is None:
            self._idle_since = time.monotonic()

    def _tell_depth(self) -> None:
        for watcher in list(watchers):
            watcher.lane_queue_depth(self.name, len(self._waiters))

    async def run(self, fn: Callable[[StopFlag], T], *, priority: int = URGENT) -> T:
        """Run `fn(stop)` in a thread and return its result; a lower `priority` goes first."""
        stop = StopFlag()
        await self._acquire(priority)
        start = time.monotonic()
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
            self.last_run_s = time.monotonic() - start
            self._release()

    async def stream(
        self, produce: Callable[[StopFlag], Iterator[T]], *, priority: int = URGENT
    ) -> AsyncIterator[T]:
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

        await self._acquire(priority)
        start = time.monotonic()
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
            self.last_run_s = time.monotonic() - start
            self._release()


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
