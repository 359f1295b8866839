"""The transport side of an MCP server: opening stdio or streamable HTTP with the official SDK,
noticing that the connection ended, and the stdio server's stderr into our log."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import IO, Any, TextIO
from urllib.parse import urlsplit

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.shared.message import SessionMessage

from voice_fsm.tool_settings import McpServer

MAX_STDERR_LINE = 2_000
"""Longer stderr lines are cut: a server printing a blob must not flood the log."""
MAX_ERROR_CHARS = 300

ReadStream = MemoryObjectReceiveStream[SessionMessage | Exception]
WriteStream = MemoryObjectSendStream[SessionMessage]


def safe_label(server: McpServer) -> str:
    """The server's name for logs: a URL loses its credentials and query, where tokens hide."""
    if server.name or server.url is None:
        return server.label
    parts = urlsplit(server.url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def describe(exc: BaseException, server: McpServer) -> str:
    """A short reason for the log: the first real error of an exception group, with the URL
    (which may carry a token) replaced by its safe form. Never the environment's values."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        real = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (real or list(exc.exceptions))[0]
    text = exc.error.message if isinstance(exc, McpError) else str(exc)
    if server.url:
        text = text.replace(server.url, safe_label(server))
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]


@asynccontextmanager
async def open_transport(
    server: McpServer, errlog: TextIO | None
) -> AsyncIterator[tuple[ReadStream, WriteStream]]:
    """The SDK's stdio or streamable HTTP client, as its two message streams."""
    if server.command is not None:
        params = StdioServerParameters(
            command=server.command[0],
            args=server.command[1:],
            # The SDK merges these onto its minimal safe environment (PATH, HOME, USER...): the
            # server gets nothing else of ours, none of our secrets.
            env=dict(server.env),
        )
        stdio = stdio_client(params, errlog=errlog) if errlog else stdio_client(params)
        async with stdio as (read, write):
            yield read, write
        return
    assert server.url is not None  # McpServer guarantees one of the two
    async with streamable_http_client(server.url) as (read, write, _session_id):
        yield read, write


@asynccontextmanager
async def watched(read: ReadStream, on_end: Callable[[], None]) -> AsyncIterator[ReadStream]:
    """`read` passed through a task that calls `on_end` when the transport stops delivering
    (a stdio server that exited): the SDK's session just stops reading, silently."""
    send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

    async def pump() -> None:
        try:
            async with send:
                async for message in read:
                    await send.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            on_end()

    async with anyio.create_task_group() as group:
        group.start_soon(pump)
        try:
            yield receive
        finally:
            group.cancel_scope.cancel()
            # Ours to close (the streamable HTTP client leaves its read stream to the reader),
            # and the session's reader may not have started to own `receive`.
            read.close()
            receive.close()


class StderrLines(asyncio.Protocol):
    """A stdio server's stderr, one log line per line, each cut to MAX_STDERR_LINE."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._buffer = bytearray()
        self._skipping = False  # the rest of a line already logged cut

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if not self._skipping:
                self._line(line)
            self._skipping = False
        if len(self._buffer) > MAX_STDERR_LINE:
            if not self._skipping:
                self._line(bytes(self._buffer))
            self._skipping = True
            self._buffer.clear()

    def eof_received(self) -> bool | None:
        if self._buffer and not self._skipping:
            self._line(bytes(self._buffer))
        self._buffer.clear()
        return None

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if text.strip():
            self._emit(text[:MAX_STDERR_LINE])


class StderrPipe:
    """A pipe that stdio servers write their stderr into, read by the event loop for as long
    as the source lives (across restarts of the server)."""

    def __init__(self) -> None:
        self.errlog: TextIO | None = None
        self._transport: asyncio.BaseTransport | None = None

    async def open(self, emit: Callable[[str], None]) -> None:
        read_fd, write_fd = os.pipe()
        reader: IO[Any] = os.fdopen(read_fd, "rb", buffering=0)
        self.errlog = os.fdopen(write_fd, "w")
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_read_pipe(lambda: StderrLines(emit), reader)

    def close(self) -> None:
        if self.errlog is not None:
            self.errlog.close()
            self.errlog = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
