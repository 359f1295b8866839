"""Keeping the connection of a finished event stream for the next request.

The openai SDK stops reading a server-sent event stream at ``data: [DONE]`` and closes the
response at once. The end of the HTTP body (the chunked encoding's last chunk) is then still
unread, so httpcore cannot return the connection to its pool and drops it: every streamed
reply costs the next turn a new connection, against OpenAI a TCP and TLS handshake of about
100 ms or more on the critical path (openai/openai-python#3440, left to the transport layer
by its maintainers). The same goes for a streamed transcription, which the adapter closes at
its ``transcript.text.done`` event. `ConnectionReuseTransport` reads that end before closing
when the stream did reach its last event; a stream closed early (a cancelled reply) is
dropped at once, as before.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import suppress

import httpx

DONE = b"data: [DONE]"
LAST_EVENT = re.compile(rb'"type":\s*"transcript\.text\.done"')
"""A transcription stream's last event (it sends no ``[DONE]``)."""
DRAIN_TIMEOUT_S = 0.25
"""How long to wait for the end of a body after ``[DONE]``. A server ends the response right
after it; one that does not loses its connection after this wait, as it would without us."""


class ConnectionReuseTransport(httpx.AsyncBaseTransport):
    """Wraps a transport; its event streams end by reading the body's end after their last
    event."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_DrainedAfterDone(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _DrainedAfterDone(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream
        self._parts: AsyncIterator[bytes] | None = None
        self._tail = b""  # the end of what was read, to see whether it ended with [DONE]
        self._last_event_seen = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._parts = aiter(self._stream)
        async for part in self._parts:
            if LAST_EVENT.search(self._tail + part):
                self._last_event_seen = True
            self._tail = (self._tail + part)[-64:]
            yield part

    async def aclose(self) -> None:
        try:
            ended = self._last_event_seen or self._tail.rstrip().endswith(DONE)
            if self._parts is not None and ended:
                with suppress(httpx.HTTPError, TimeoutError):
                    async with asyncio.timeout(DRAIN_TIMEOUT_S):
                        async for _ in self._parts:
                            pass
        finally:
            await self._stream.aclose()
