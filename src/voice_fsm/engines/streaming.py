"""One admitted request's stream from an adapter: its first item pulled before the response
starts (so a failure or an engine that cannot be reached still gets a proper status), the
rest as the response's body, and the engine's admission released when the stream ends however
it ends (done, failed, or the client gone).

The adapter's stream is read by a task of its own (`Pump`), never by the response: Starlette
cancels a streaming response whose client left through an anyio cancel scope, which cancels
every later await too, and an adapter's cleanup must await its worker thread (the engine is
not free before that; the next request would run the model beside it and crash llama.cpp).
The pump is cancelled once, the plain asyncio way, and awaited in a shielded scope.

Once the body has begun, a failure can no longer change the status: server-sent events end
with the API's error event (which the openai SDK raises), raw audio ends with a broken
connection, so a client never takes a cut stream for a whole one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from typing import Generic, TypeVar

import anyio
from starlette.requests import Request

from voice_fsm.engines.api_errors import ApiError, engine_failed
from voice_fsm.engines.metrics import Admission

T = TypeVar("T")

BUFFERED = 64
"""Items read ahead of a slow client; then the engine waits for it."""


class _End:
    pass


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


class Pump(Generic[T]):
    """Reads `items` in its own task into a bounded queue."""

    def __init__(self, items: AsyncIterator[T]) -> None:
        self._queue: asyncio.Queue[T | _End | _Failed] = asyncio.Queue(BUFFERED)
        self._task = asyncio.create_task(self._run(items))

    async def _run(self, items: AsyncIterator[T]) -> None:
        try:
            async for item in items:
                await self._queue.put(item)
            await self._queue.put(_End())
        except Exception as err:
            await self._queue.put(_Failed(err))
        finally:
            close = getattr(items, "aclose", None)  # every adapter's stream is a generator
            if close is not None:
                await close()

    async def next(self) -> T:
        """The next item; raises StopAsyncIteration at the end, or what the stream raised."""
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # asked again, the same answer
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    async def close(self) -> None:
        """Stop reading and wait until the adapter has let its engine go."""
        self._task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({self._task})


class Opened(Generic[T]):
    def __init__(self, pump: Pump[T], first: list[T], admission: Admission, what: str) -> None:
        self.pump = pump
        self.first = first
        """The first item, or nothing when the stream was empty."""
        self.admission = admission
        self.what = what
        """The engine, as errors name it ("speech-to-text")."""


async def open_stream(
    request: Request, admission: Admission, items: AsyncIterator[T], what: str
) -> Opened[T]:
    """Start reading `items` and wait for the first (most of that wait is the engine's queue);
    on failure stop, release the admission and raise the API's error. A client that leaves
    meanwhile takes its place in the queue with it: nobody would read what the engine made."""
    pump = Pump(items)
    first = asyncio.ensure_future(pump.next())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({first, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not first.done():
            raise ApiError(499, "The client closed the request.", code="client_closed")
        return Opened(pump, [first.result()], admission, what)
    except StopAsyncIteration:
        return Opened(pump, [], admission, what)
    except BaseException as err:
        first.cancel()
        await pump.close()
        gave_up = isinstance(err, asyncio.CancelledError) or gone.done()
        admission.finish("cancelled" if gave_up else "error")
        if isinstance(err, ApiError):
            raise
        if isinstance(err, Exception):
            raise engine_failed(what, err) from err
        raise
    finally:
        gone.cancel()


async def _disconnected(request: Request) -> None:
    """Return when the client has gone (the body was read: nothing else can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def each(opened: Opened[T]) -> AsyncGenerator[T, None]:
    """Every item, the first included; stops the stream and releases the admission."""
    outcome = "cancelled"
    try:
        for item in opened.first:
            yield item
        while True:
            try:
                item = await opened.pump.next()
            except StopAsyncIteration:
                break
            yield item
        outcome = "ok"
    except ApiError:
        outcome = "error"
        raise
    except Exception as err:
        outcome = "error"
        raise engine_failed(opened.what, err) from err
    finally:
        await opened.pump.close()
        opened.admission.finish(outcome)


async def collect(opened: Opened[T]) -> list[T]:
    async with aclosing(each(opened)) as items:
        return [item async for item in items]


async def server_sent(
    opened: Opened[T], render: Callable[[T], Iterable[bytes]], end: Callable[[], Iterable[bytes]]
) -> AsyncIterator[bytes]:
    """The stream as server-sent events: `render` for each item, `end` after the last; a
    failure on the way ends it with the API's error event instead."""
    try:
        async with aclosing(each(opened)) as items:
            async for item in items:
                for chunk in render(item):
                    yield chunk
        for chunk in end():
            yield chunk
    except ApiError as err:
        yield err.sse()


async def raw(opened: Opened[bytes], header: bytes = b"") -> AsyncIterator[bytes]:
    """The stream as raw bytes after `header`; a failure breaks the connection (raises)."""
    if header:
        yield header
    async with aclosing(each(opened)) as items:
        async for item in items:
            if item:
                yield item
