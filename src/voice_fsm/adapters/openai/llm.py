"""Language model through OpenAI's ``POST /chat/completions`` (or a compatible server)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI, omit
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)

from voice_fsm.adapters.base import ChatMessage, ReplyEvent, ToolCall, ToolSpec
from voice_fsm.adapters.openai.errors import translating
from voice_fsm.adapters.openai.http import OpenAIHttpAdapter
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.provider_requests import note
from voice_fsm.settings import LlmSettings

MAX_TOOL_CALLS = 32
"""Calls one reply may make; a server streaming more is broken, not busy."""
MAX_ARGUMENT_CHARS = 256_000
"""The JSON arguments of one call; far above any tool's, and bounds what a server can make
us buffer."""


class OpenAILanguageModel(OpenAIHttpAdapter[LlmSettings]):
    def __init__(
        self, settings: LlmSettings, client: AsyncOpenAI, secrets: tuple[str, ...] = ()
    ) -> None:
        super().__init__(settings, client, secrets, stage=Stage.LLM)
        # The SDK imports a resource's modules on first use (about 0.2 s): pay it at start-up,
        # not in the first user's turn.
        _ = client.chat.completions

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Stream the reply's text deltas, then its tool calls once the choice has finished
        (their arguments come in pieces until then); the usage chunk (no choices) is skipped."""
        settings = self._settings
        effort = settings.reasoning_effort
        self._request_starts()
        with translating(Stage.LLM, self._secrets):
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=[_message_param(m) for m in messages],
                # OpenAI rejects an empty array: the field is left out when nothing is offered.
                tools=[_tool_param(t) for t in tools] if tools else omit,
                stream=True,
                stream_options={"include_usage": True},
                max_completion_tokens=settings.max_output_tokens,
                # Left out when unset, for servers and models that reject the field.
                reasoning_effort=effort if effort is not None else omit,
                temperature=settings.temperature if settings.temperature is not None else omit,
            )
            note(Stage.LLM, stream.response.headers.get("x-request-id"))
            calls = _PendingCalls()
            try:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    delta = choice.delta
                    if delta.content:
                        yield delta.content
                    for piece in delta.tool_calls or ():
                        calls.add(piece)
                    # OpenAI says "tool_calls"; some compatible servers say "stop". Either way
                    # the calls are complete: the session need not wait for the usage chunk.
                    if choice.finish_reason is not None:
                        for call in calls.take():
                            yield call
                for call in calls.take():  # a server that never said it had finished
                    yield call
            finally:
                await stream.close()


@dataclass(slots=True)
class _Call:
    index: int
    order: int
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    size: int = 0


class _PendingCalls:
    """Tool calls being streamed: pieces matched to their call by `index`.

    Compatible servers differ from OpenAI: some send a whole call in one piece, some leave
    out `type` or `index`, some repeat the id on every piece, and some give parallel calls
    the same index but their own ids. A piece with an id other than its index's call's
    starts a new call, so all of these come out as OpenAI's would.
    """

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._by_index: dict[int, _Call] = {}

    def add(self, piece: Any) -> None:
        index = getattr(piece, "index", None)
        call_id = getattr(piece, "id", None) or None
        function = getattr(piece, "function", None)
        current = self._current(index if isinstance(index, int) else None)
        if current is None or (call_id and current.call_id and call_id != current.call_id):
            current = self._start(index if isinstance(index, int) else len(self._calls))
        if call_id and current.call_id is None:
            current.call_id = str(call_id)
        name = getattr(function, "name", None)
        if name and current.name is None:
            current.name = str(name)
        arguments = getattr(function, "arguments", None)
        if arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments)  # a server that sent an object, not its JSON
        if arguments:
            current.size += len(arguments)
            if current.size > MAX_ARGUMENT_CHARS:
                raise _broken(
                    f"the arguments of a tool call passed {MAX_ARGUMENT_CHARS} characters"
                )
            current.arguments.append(arguments)

    def take(self) -> list[ToolCall]:
        """The calls so far, complete, in the order the model made them; forgets them."""
        calls = sorted(self._calls, key=lambda call: (call.index, call.order))
        self._calls, self._by_index = [], {}
        return [_finished(call) for call in calls]

    def _current(self, index: int | None) -> _Call | None:
        if index is None:  # no index: the pieces of one call follow each other
            return self._calls[-1] if self._calls else None
        return self._by_index.get(index)

    def _start(self, index: int) -> _Call:
        if len(self._calls) >= MAX_TOOL_CALLS:
            raise _broken(f"the reply made more than {MAX_TOOL_CALLS} tool calls")
        call = _Call(index=index, order=len(self._calls))
        self._calls.append(call)
        self._by_index[index] = call
        return call


def _finished(call: _Call) -> ToolCall:
    if not call.name:
        raise _broken("the model streamed a tool call without a function name")
    # Servers that leave out the id still need one to pair the call with its result.
    call_id = call.call_id or "call_" + uuid.uuid4().hex[:24]
    # A call with no arguments may come as an empty string: it means an empty object.
    return ToolCall(call_id=call_id, name=call.name, arguments="".join(call.arguments) or "{}")


def _broken(why: str) -> ProviderError:
    message = f"OpenAI language model sent a broken reply: {why}."
    return ProviderError(ErrorCode.PROVIDER_ERROR, message, stage=Stage.LLM)


def _tool_param(tool: ToolSpec) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def _message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "user":
        return {"role": "user", "content": message.content}
    if message.role == "tool":
        if message.tool_call_id is None:
            raise ValueError("a tool message needs the id of the call it answers")
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if not message.tool_calls:
        return {"role": "assistant", "content": message.content}
    calls: list[ChatCompletionMessageFunctionToolCallParam] = [
        {
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in message.tool_calls
    ]
    # OpenAI's own replies carry null content when the model wrote nothing before its calls.
    return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
