"""The tools a session's client runs: declared in `session.update`, called with `tool.call`,
answered with `tool.result`. A client answers only the calls it was sent: it can never run a
server tool, nor answer a call twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Sequence

from voice_fsm.adapters.base import ToolCall, ToolSpec
from voice_fsm.errors import ErrorCode, InputError
from voice_fsm.events import ClientTool, ServerEvent, ToolCancelled, ToolResultCommand
from voice_fsm.tools.calls import ToolResult


class ClientTools:
    def __init__(self) -> None:
        self._declared: dict[str, ToolSpec] = {}
        self._pending: dict[str, asyncio.Future[ToolResultCommand]] = {}

    def declare(self, tools: Sequence[ClientTool], server_names: Collection[str]) -> None:
        """Replace the declared tools. Raises InputError (nothing changes) for a name the
        server's own tools have."""
        taken = sorted({tool.name for tool in tools} & set(server_names))
        if taken:
            raise InputError(
                ErrorCode.INVALID_MESSAGE,
                f"session.update: the server has its own tool named {', '.join(taken)}; "
                "a client tool needs another name.",
            )
        self._declared = {
            tool.name: ToolSpec(tool.name, tool.description, dict(tool.parameters))
            for tool in tools
        }

    def specs(self) -> list[ToolSpec]:
        return list(self._declared.values())

    def has(self, name: str) -> bool:
        return name in self._declared

    def expect(self, call_ids: Collection[str]) -> None:
        """Wait for answers to these calls from now on, before the client hears of them: a
        front end can tell when every call of a round is out (`waiting`)."""
        loop = asyncio.get_running_loop()
        for call_id in call_ids:
            self._pending.setdefault(call_id, loop.create_future())

    def forget(self, call_ids: Collection[str]) -> None:
        """Stop waiting for these calls (their round has ended)."""
        for call_id in call_ids:
            self._pending.pop(call_id, None)

    def waiting(self) -> set[str]:
        """The calls the client has yet to answer."""
        return {call_id for call_id, future in self._pending.items() if not future.done()}

    def answer(self, result: ToolResultCommand) -> None:
        """The client's `tool.result`. Raises InputError for a call it was not sent or that
        has ended (answered, timed out, cancelled)."""
        waiting = self._pending.get(result.call_id)
        if waiting is None or waiting.done():
            raise InputError(
                ErrorCode.INVALID_MESSAGE,
                f"tool.result: no call {result.call_id!r} is waiting for the client's answer.",
            )
        waiting.set_result(result)

    async def call(
        self,
        call: ToolCall,
        *,
        turn: int,
        timeout_s: float,
        max_result_chars: int,
        send: Callable[[ServerEvent], Awaitable[None]],
    ) -> ToolResult:
        """Wait for the client's answer to `call` (its `tool.call` is sent by the caller).
        Timed out or cancelled: the client is told `tool.cancelled`."""
        self.expect([call.call_id])
        waiting = self._pending[call.call_id]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            answer = await asyncio.wait_for(waiting, timeout_s)
        except TimeoutError:
            await send(ToolCancelled(turn=turn, call_id=call.call_id))
            message = f"The client did not answer within {timeout_s:g} s."
            return _failed(call, "timeout", message, int((loop.time() - started) * 1000))
        except asyncio.CancelledError:
            await send(ToolCancelled(turn=turn, call_id=call.call_id))
            raise
        finally:
            self._pending.pop(call.call_id, None)
        ms = int((loop.time() - started) * 1000)
        if answer.error is not None:
            return _failed(call, "failed", answer.error, ms)
        output = answer.output
        try:
            text = output if isinstance(output, str) else json.dumps(output)
        except (TypeError, ValueError):  # cannot happen for parsed JSON; kept for safety
            return _failed(call, "bad-output", "The client's output is not JSON.", ms)
        if len(text) > max_result_chars:
            message = f"The result is {len(text)} characters, over the {max_result_chars} allowed."
            return _failed(call, "too-large", message, ms)
        return ToolResult(call.call_id, call.name, ok=True, output=text, duration_ms=ms)


def _failed(call: ToolCall, kind: str, message: str, ms: int = 0) -> ToolResult:
    return ToolResult(call.call_id, call.name, ok=False, error=message, kind=kind, duration_ms=ms)
