"""MCP servers as a tool source, through the official `mcp` SDK (the `mcp` extra).

Each server is one `McpToolSource`: a background task connects (stdio or streamable HTTP),
lists the tools, re-lists them on notifications/tools/list_changed, and reconnects with
exponential backoff when the connection ends. The tools listed last stay offered meanwhile and
answer "unavailable", so the language model hears why instead of the tool vanishing mid-turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from mcp import ClientSession, types
from mcp.shared.exceptions import McpError
from mcp.shared.session import RequestResponder

from voice_fsm.adapters.base import ToolSpec
from voice_fsm.tool_settings import McpServer
from voice_fsm.tools.calls import ToolFailure
from voice_fsm.tools.mcp_connection import StderrPipe, describe, open_transport, safe_label, watched

# What every provider's function tools accept as a name.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128
MAX_LIST_PAGES = 16
MAX_DESCRIPTION = 1_024
# The SDK's code for a streamable HTTP session the server no longer knows (it restarted).
SESSION_TERMINATED = 32600
STABLE_S = 10.0

ServerMessage = (
    RequestResponder[types.ServerRequest, types.ClientResult] | types.ServerNotification | Exception
)


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool of an MCP server; calls go through whatever connection the source has now."""

    spec: ToolSpec
    source: str
    owner: McpToolSource = field(repr=False, compare=False)

    async def call(self, arguments: dict[str, Any]) -> Any:
        return await self.owner.call_tool(self.spec.name, arguments)


def tool_output(result: types.CallToolResult) -> Any:
    """What the language model gets: the structured content when there is some (the caller
    writes it as JSON), else the text parts joined. An error result is a `ToolFailure`."""
    parts: list[str] = []
    for item in result.content:
        if isinstance(item, types.TextContent):
            parts.append(item.text)
        elif isinstance(item, types.EmbeddedResource) and isinstance(
            item.resource, types.TextResourceContents
        ):
            parts.append(item.resource.text)
        else:
            parts.append(f"[{item.type} content omitted]")
    text = "\n".join(parts)
    if result.isError:
        raise ToolFailure("failed", text or "The tool failed.")
    structured = result.structuredContent
    if structured is not None:
        # FastMCP wraps a plain return value as {"result": value}: the value is what was meant.
        if set(structured) == {"result"}:
            return structured["result"]
        return structured
    return text


class McpToolSource:
    """The tools of one MCP server (implements `ToolSource`)."""

    def __init__(
        self,
        server: McpServer,
        *,
        log: Any = None,
        start_wait_s: float = 5.0,
        connect_timeout_s: float = 15.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        ping_interval_s: float = 15.0,
    ) -> None:
        self._server = server
        self.label = safe_label(server)
        self._log = log if log is not None else structlog.get_logger("voice_fsm.tools.mcp")
        self._start_wait_s = start_wait_s
        self._connect_timeout_s = connect_timeout_s
        self._backoff_s = backoff_s
        self._ping_interval_s = ping_interval_s
        self._tools: tuple[McpTool, ...] = ()
        self._session: ClientSession | None = None
        self._group: TaskGroup | None = None  # the live connection's, for cancel notices
        self._relist = asyncio.Event()
        self._listed = asyncio.Event()
        self._ended: anyio.Event | None = None
        self._stderr = StderrPipe()
        self._task: asyncio.Task[None] | None = None
        self._connected_at: float | None = None

    @property
    def unavailable(self) -> ToolFailure:
        return ToolFailure(
            "unavailable", f"The tool server {self.label} is not available right now."
        )

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._server.command is not None:
            await self._stderr.open(self._on_stderr)
        self._task = asyncio.create_task(self._run(), name=f"mcp:{self.label}")
        # Wait a little for the first listing, so the tools are there when the first session
        # opens; a slow or broken server goes on connecting in the background.
        try:
            await asyncio.wait_for(self._listed.wait(), self._start_wait_s)
        except TimeoutError:
            self._log.warning("mcp.not_listed_yet", server=self.label)

    def tools(self) -> Sequence[McpTool]:
        return self._tools

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # The SDK closes the server's stdin, waits for it to exit, then terminates its
            # process group; bounded so that shutdown never hangs on a stubborn server.
            await asyncio.wait({task}, timeout=10)
            if not task.done():
                self._log.error("mcp.close_timeout", server=self.label)
        self._stderr.close()

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        session = self._session
        if session is None:
            raise self.unavailable
        # The id the SDK will give this request: call_tool takes it before its first await. The
        # SDK does not tell the server when a call is cancelled; the spec says to, with this id.
        request_id = session._request_id
        try:
            result = await session.call_tool(name, arguments)
        except asyncio.CancelledError:
            self._notify_cancelled(session, request_id)
            raise
        except McpError as exc:
            if exc.error.code in (types.CONNECTION_CLOSED, SESSION_TERMINATED):
                self._connection_lost(session)
                raise self.unavailable from exc
            raise ToolFailure("failed", exc.error.message) from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise self.unavailable from exc
        return tool_output(result)

    def _notify_cancelled(self, session: ClientSession, request_id: int) -> None:
        group = self._group
        if group is None or self._session is not session:
            return

        async def send() -> None:
            notice = types.CancelledNotification(
                params=types.CancelledNotificationParams(requestId=request_id, reason="cancelled")
            )
            with anyio.move_on_after(2):
                with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                    await session.send_notification(types.ClientNotification(notice))

        # Sent from the connection's task group: the cancelled caller returns at once.
        with contextlib.suppress(RuntimeError):  # the connection is closing
            group.start_soon(send)

    def _connection_lost(self, session: ClientSession) -> None:
        if self._session is session and self._ended is not None:
            self._ended.set()

    async def _run(self) -> None:
        low, high = self._backoff_s
        delay = low
        while True:
            self._connected_at = None
            try:
                await self._connect_once()
                reason = "the connection ended"
            except Exception as exc:
                reason = describe(exc, self._server)
            finally:
                self._session = None
                self._group = None
            # A server that had been up a while failed afresh: retry soon. One that dies as soon
            # as it is up keeps backing off instead of being restarted in a tight loop.
            up_since = self._connected_at
            if up_since is not None and time.monotonic() - up_since > STABLE_S:
                delay = low
            self._log.warning("mcp.unavailable", server=self.label, error=reason, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, high)

    async def _connect_once(self) -> None:
        ended = self._ended = anyio.Event()
        self._relist.clear()
        async with (
            open_transport(self._server, self._stderr.errlog) as (read, write),
            watched(read, ended.set) as messages,
            ClientSession(
                messages,
                write,
                message_handler=self._on_message,
                client_info=types.Implementation(name="voice-fsm", version="1"),
            ) as session,
        ):
            with anyio.fail_after(self._connect_timeout_s):
                await session.initialize()
                await self._list(session)
            self._connected_at = time.monotonic()
            self._log.info("mcp.connected", server=self.label, tools=len(self._tools))
            async with anyio.create_task_group() as group:
                self._session, self._group = session, group
                self._listed.set()
                group.start_soon(self._relist_loop, session)
                if self._server.url is not None:
                    # An idle HTTP connection gives no sign that the server went away.
                    group.start_soon(self._ping_loop, session)
                await ended.wait()
                group.cancel_scope.cancel()

    async def _list(self, session: ClientSession) -> None:
        listed: list[McpTool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
            listed.extend(self._tool(tool) for tool in page.tools if self._usable(tool))
            cursor = page.nextCursor
            if not cursor or len(listed) >= MAX_TOOLS:
                break
        self._tools = tuple(listed[:MAX_TOOLS])

    def _usable(self, tool: types.Tool) -> bool:
        if TOOL_NAME.match(tool.name):
            return True
        self._log.warning("mcp.tool_skipped", server=self.label, tool=tool.name[:80])
        return False

    def _tool(self, tool: types.Tool) -> McpTool:
        description = (tool.description or tool.title or tool.name)[:MAX_DESCRIPTION]
        spec = ToolSpec(name=tool.name, description=description, parameters=tool.inputSchema)
        return McpTool(spec=spec, source=f"mcp:{self.label}", owner=self)

    async def _relist_loop(self, session: ClientSession) -> None:
        while True:
            await self._relist.wait()
            self._relist.clear()
            with anyio.fail_after(self._connect_timeout_s):
                await self._list(session)
            self._log.info("mcp.tools_changed", server=self.label, tools=len(self._tools))

    async def _ping_loop(self, session: ClientSession) -> None:
        while True:
            await anyio.sleep(self._ping_interval_s)
            with anyio.fail_after(self._connect_timeout_s):
                await session.send_ping()

    async def _on_message(self, message: ServerMessage) -> None:
        # Runs in the session's receive loop: it may not wait for a reply itself, so the
        # re-listing happens in _relist_loop.
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            self._relist.set()
        elif isinstance(message, Exception):
            # Mostly the late answer to a call we cancelled.
            self._log.debug("mcp.message_error", server=self.label, error=str(message)[:300])

    def _on_stderr(self, line: str) -> None:
        self._log.info("mcp.stderr", server=self.label, line=line)
