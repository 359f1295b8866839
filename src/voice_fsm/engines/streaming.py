"""One admitted request's stream from an adapter: its first item pulled before the response
starts (so a failure or an engine that cannot be reached still gets a proper status), the
rest as the response's body, and the engine's admission released when the stream ends however
it ends (done, failed, or the client gone).

Once the body has begun, a failure can no longer change the status: server-sent events end
with the API's error event (which the openai SDK raises), raw audio ends with a broken
connection, so a client never takes a cut stream for a whole one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Generic, TypeVar

from voice_fsm.engines.api_errors import ApiError, engine_failed
from voice_fsm.engines.metrics import Admission

T = TypeVar("T")


@dataclass
class Opened(Generic[T]):
    items: AsyncIterator[T]
    first: list[T]
    """The first item, or nothing when the stream was empty."""
    admission: Admission
    what: str
    """The engine, as errors name it ("speech-to-text")."""


async def open_stream(admission: Admission, items: AsyncIterator[T], what: str) -> Opened[T]:
    """Pull the first item of `items`; on failure close it, release the admission and raise
    the API's error."""
    try:
        first = [await anext(items)]
    except StopAsyncIteration:
        first = []
    except BaseException as err:
        await _close(items)
        admission.finish("cancelled" if isinstance(err, asyncio.CancelledError) else "error")
        if isinstance(err, ApiError):
            raise
        if isinstance(err, Exception):
            raise engine_failed(what, err) from err
        raise
    return Opened(items, first, admission, what)


async def each(opened: Opened[T]) -> AsyncGenerator[T, None]:
    """Every item, the first included; closes the stream and releases the admission."""
    outcome = "cancelled"
    try:
        for item in opened.first:
            yield item
        async for item in opened.items:
            yield item
        outcome = "ok"
    except ApiError:
        outcome = "error"
        raise
    except Exception as err:
        outcome = "error"
        raise engine_failed(opened.what, err) from err
    finally:
        await _close(opened.items)
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


async def _close(items: AsyncIterator[object]) -> None:
    """Close an adapter's stream (an async generator: every adapter's is one)."""
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()
