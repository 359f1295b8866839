"""Running blocking inference off the event loop, with bounded concurrency.

Each embedded engine owns one `InferenceLane`: a semaphore that lets a fixed number of calls
run at once (the models are shared by every session and already use several threads each) and
a way to stream a blocking generator's items back to the event loop. Cancelling the consumer
asks the worker thread to stop at its next item, so a cancelled turn frees its lane quickly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

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


class InferenceLane:
    """At most `concurrency` calls of one engine at a time, each in a worker thread."""

    def __init__(self, name: str, concurrency: int = 1) -> None:
        self.name = name
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, fn: Callable[[StopFlag], T]) -> T:
        """Run `fn(stop)` in a thread and return its result."""
        stop = StopFlag()
        async with self._slots:
            task = asyncio.ensure_future(asyncio.to_thread(fn, stop))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                stop.set()
                # Hold the slot until the thread has really stopped: the model is not free
                # before that, and the next caller must not run beside it.
                await asyncio.wait({task})
                raise

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

        async with self._slots:
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


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
