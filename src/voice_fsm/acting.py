"""One round of tool calls in a reply: the machine goes to acting, each call runs (on the
server, or on the client through `tool.call` / `tool.result`), its result is sent and kept for
the history, and the machine goes back to thinking for the language model's next round.

Calls run side by side. A filler phrase may be spoken while they run (`filler`, once a turn,
only when nothing was said yet). Cancelling the round (barge-in, `response.cancel`) cancels
every call: server tools' tasks and MCP requests stop, a client is told `tool.cancelled`; the
calls that had finished stay in the turn's history, the others leave no trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from voice_fsm.adapters.base import ChatMessage, ToolCall, ToolSpec
from voice_fsm.client_tools import ClientTools
from voice_fsm.events import ServerEvent, ToolCallEvent, ToolResultEvent, ToolTiming
from voice_fsm.stage_results import Acted, Acting, StageResult
from voice_fsm.tool_events import RunsOn
from voice_fsm.tool_settings import ToolSettings
from voice_fsm.tools.calls import ToolResult
from voice_fsm.turn import Turn

Send = Callable[[ServerEvent], Awaitable[None]]
Checkpoint = Callable[
    [Callable[[asyncio.Task[None], asyncio.Future[None]], StageResult]], Awaitable[None]
]


class ServerTools(Protocol):
    """The server's tools (`tools.toolbox.Toolbox`)."""

    def specs(self) -> list[ToolSpec]: ...

    def has(self, name: str) -> bool: ...

    async def run(
        self, call: ToolCall, *, timeout_s: float, max_result_chars: int
    ) -> ToolResult: ...


@dataclass
class TurnTools:
    """What a turn's reply may call, and how the calls reach the machine and the client."""

    server: ServerTools | None
    client: ClientTools
    settings: ToolSettings
    checkpoint: Checkpoint

    def specs(self) -> list[ToolSpec]:
        server = self.server.specs() if self.server is not None else []
        return [*server, *self.client.specs()]

    def runs_on(self, name: str) -> RunsOn:
        """Who runs a call of `name` (an unknown name is answered by the server)."""
        return "client" if self.client.has(name) else "server"


async def act(
    turn: Turn,
    tools: TurnTools,
    calls: Sequence[ToolCall],
    text: str,
    *,
    send: Send,
    filler: Callable[[], None] | None,
) -> list[ChatMessage]:
    """Run one round of `calls` (the model wrote `text` before them); the messages the
    language model gets next: its text and calls, then each result."""
    await tools.checkpoint(Acting)
    on_client = [call.call_id for call in calls if tools.runs_on(call.name) == "client"]
    tools.client.expect(on_client)
    for call in calls:
        event = ToolCallEvent(
            turn=turn.number,
            call_id=call.call_id,
            name=call.name,
            arguments=call.arguments,
            runs_on=tools.runs_on(call.name),
        )
        await send(event)
    results: dict[str, ToolResult] = {}
    running = {asyncio.create_task(_run(turn, tools, call, send)): call for call in calls}
    try:
        await _wait(running, results, tools.settings.filler_after_ms, filler, turn, send)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        tools.client.forget(on_client)
        finished = [call for call in calls if call.call_id in results]
        turn.tool_steps.extend(_history(finished, results))
    await tools.checkpoint(Acted)
    return _history(calls, results, text)


async def _wait(
    running: dict[asyncio.Task[ToolResult], ToolCall],
    results: dict[str, ToolResult],
    filler_after_ms: int,
    filler: Callable[[], None] | None,
    turn: Turn,
    send: Send,
) -> None:
    loop = asyncio.get_running_loop()
    filler_at = loop.time() + filler_after_ms / 1000 if filler and filler_after_ms else None
    pending = set(running)
    while pending:
        timeout = None if filler_at is None else max(0.0, filler_at - loop.time())
        done, pending = await asyncio.wait(
            pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done and filler_at is not None and filler is not None:
            filler_at = None
            filler()
        for task in done:
            result = task.result()
            results[result.call_id] = result
            running.pop(task)
            await send(_result_event(turn, result))


async def _run(turn: Turn, tools: TurnTools, call: ToolCall, send: Send) -> ToolResult:
    settings = tools.settings
    runs_on = tools.runs_on(call.name)
    if runs_on == "client":
        result = await tools.client.call(
            call,
            turn=turn.number,
            timeout_s=settings.client_timeout_s,
            max_result_chars=settings.max_result_chars,
            send=send,
        )
    elif tools.server is not None and tools.server.has(call.name):
        result = await tools.server.run(
            call, timeout_s=settings.timeout_s, max_result_chars=settings.max_result_chars
        )
    else:
        offered = ", ".join(spec.name for spec in tools.specs()) or "none"
        message = f"There is no tool named {call.name!r}. The tools are: {offered}."
        result = ToolResult(call.call_id, call.name, ok=False, error=message, kind="unknown-tool")
    timing = ToolTiming(
        name=call.name, runs_on=runs_on, ok=result.ok, kind=result.kind, ms=result.duration_ms
    )
    turn.tool_timings.append(timing)
    return result


def _result_event(turn: Turn, result: ToolResult) -> ToolResultEvent:
    return ToolResultEvent(
        turn=turn.number,
        call_id=result.call_id,
        name=result.name,
        ok=result.ok,
        output=result.output if result.ok else None,
        error=None if result.ok else result.error,
        duration_ms=result.duration_ms,
    )


def _history(
    calls: Sequence[ToolCall], results: dict[str, ToolResult], text: str = ""
) -> list[ChatMessage]:
    """The conversation's history leaves the text out: the reply that follows keeps all the
    turn's text (what was heard of it), so the history does not say it twice."""
    if not calls:
        return []
    messages = [ChatMessage("assistant", text, tool_calls=tuple(calls))]
    for call in calls:
        messages.append(
            ChatMessage("tool", results[call.call_id].content, tool_call_id=call.call_id)
        )
    return messages
