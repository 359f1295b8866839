"""Language model through OpenAI's ``POST /chat/completions`` (or a compatible server: any
host but OpenAI's, given what llama-cpp-python's server needs, docs/llama-cpp-server.md)."""

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
from voice_fsm.model_lifecycle import OPENAI_API_HOST
from voice_fsm.provider_requests import note
from voice_fsm.settings import LlmSettings

MAX_TOOL_CALLS = 32
"""Calls one reply may make; a server streaming more is broken, not busy."""
MAX_ARGUMENT_CHARS = 256_000
"""The JSON arguments of one call; far above any tool's, and bounds what a server can make
us buffer."""
WRITTEN_CALL_ID = "call_text_"
"""The id of a call read from the reply's text: its round goes back to the server as text."""
OPEN_TAG, CLOSE_TAG = "<tool_call>", "</tool_call>"


class OpenAILanguageModel(OpenAIHttpAdapter[LlmSettings]):
    def __init__(
        self, settings: LlmSettings, client: AsyncOpenAI, secrets: tuple[str, ...] = ()
    ) -> None:
        super().__init__(settings, client, secrets, stage=Stage.LLM)
        self._compatible = client.base_url.host != OPENAI_API_HOST
        # The SDK imports a resource's modules on first use (about 0.2 s): pay it at start-up,
        # not in the first user's turn.
        _ = client.chat.completions

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Stream the reply's text deltas, then its tool calls once the choice has finished
        (their arguments come in pieces until then); the usage chunk (no choices) is skipped."""
        settings, compatible = self._settings, self._compatible
        effort = settings.reasoning_effort
        if messages and messages[-1].role == "tool" and _written(messages[-1].tool_call_id):
            tools = ()  # offered tools, a small model answered its results in JSON: one round
        self._request_starts()
        with translating(Stage.LLM, self._secrets):
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=_message_params(messages, compatible),
                # OpenAI rejects an empty array: the field is left out when nothing is offered.
                tools=[_tool_param(t) for t in tools] if tools else omit,
                stream=True,
                stream_options={"include_usage": True},
                max_completion_tokens=settings.max_output_tokens,
                # llama-cpp-python's server reads only this older name; OpenAI's reasoning
                # models refuse it.
                max_tokens=settings.max_output_tokens if compatible else omit,
                # Left out when unset, for servers and models that reject the field.
                reasoning_effort=effort if effort is not None else omit,
                temperature=settings.temperature if settings.temperature is not None else omit,
            )
            note(Stage.LLM, stream.response.headers.get("x-request-id"))
            calls = _PendingCalls()
            written = _WrittenCalls({t.name for t in tools} if compatible else set())
            answered = False
            try:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    delta = choice.delta
                    answered = answered or bool(delta.content or delta.tool_calls)
                    if delta.content and (text := written.feed(delta.content)):
                        yield text
                    for piece in delta.tool_calls or ():
                        calls.add(piece)
                    # OpenAI says "tool_calls"; some compatible servers say "stop". Either way
                    # the calls are complete: the session need not wait for the usage chunk.
                    if choice.finish_reason is not None:
                        answered = True
                        for event in [*written.finish(), *calls.take()]:
                            yield event
                for event in [*written.finish(), *calls.take()]:  # no finish_reason came
                    yield event
            finally:
                await stream.close()
        if not answered:
            # llama-cpp-python's server, failing once the stream has begun (a conversation
            # longer than its context window), ends it with HTTP 200 and not one event.
            raise _broken("the server ended the stream without a word or a reason (see its log)")


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


class _WrittenCalls:
    """The reply's text, held back while it may be tool calls the model wrote as text: one or
    more JSON objects ``{"name": <an offered tool>, "arguments": {...}}``, perhaps between
    `<tool_call>` tags (Qwen's and Hermes' format; llama-cpp-python's server leaves the tags,
    special tokens, out). A reply that starts otherwise is streamed as it comes."""

    def __init__(self, offered: set[str]) -> None:
        self._offered = offered
        self._held: list[str] | None = [] if offered else None
        self._size, self._start = 0, ""

    def feed(self, text: str) -> str:
        """What to say now: nothing while the reply may still be calls."""
        if self._held is None:
            return text
        self._held.append(text)
        self._size += len(text)
        if len(start := self._start) < len(OPEN_TAG):  # only the start decides: kept that long
            start = self._start = (start + text).lstrip()[: len(OPEN_TAG)]
        if self._size <= MAX_ARGUMENT_CHARS and start.startswith(("{", OPEN_TAG[: len(start)])):
            return ""
        said, self._held = "".join(self._held), None
        return said

    def finish(self) -> list[ReplyEvent]:  # the calls read from the held text, else the text
        text, self._held = "".join(self._held or ()), None
        if not text.strip():
            return []
        calls = _read_calls(text, self._offered)
        return [text] if calls is None else list(calls)


def _read_calls(text: str, offered: set[str]) -> list[ToolCall] | None:
    body = text.replace(OPEN_TAG, " ").replace(CLOSE_TAG, " ").strip()
    decoder, calls, at = json.JSONDecoder(), list[ToolCall](), 0
    while at < len(body) and len(calls) <= MAX_TOOL_CALLS:
        try:
            value, at = decoder.raw_decode(body, at)
        except ValueError:
            return None
        arguments = value.get("arguments", {}) if isinstance(value, dict) else None
        if not isinstance(arguments, dict | str) or value.get("name") not in offered:
            return None
        arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
        call_id = WRITTEN_CALL_ID + uuid.uuid4().hex[:24]
        calls.append(ToolCall(call_id=call_id, name=value["name"], arguments=arguments))
        at = len(body) - len(body[at:].lstrip())
    return calls if 0 < len(calls) <= MAX_TOOL_CALLS else None


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


def _message_params(
    messages: Sequence[ChatMessage], compatible: bool
) -> list[ChatCompletionMessageParam]:
    """The conversation as the server reads it; a round of calls read from text goes back as
    text (with the chat template's tool messages the model echoed JSON: the docs' figures)."""
    params: list[ChatCompletionMessageParam] = []
    results: list[str] = []
    for message in messages:
        if message.role == "tool" and _written(message.tool_call_id):
            results.append(message.content)
            continue
        if results:
            params.append(_results_note(results))
            results = []
        params.append(_message_param(message, compatible))
    if results:
        params.append(_results_note(results))
    return params


def _written(call_id: str | None) -> bool:
    return bool(call_id and call_id.startswith(WRITTEN_CALL_ID))


def _results_note(results: list[str]) -> ChatCompletionMessageParam:
    one = len(results) == 1
    said = f"{'It' if one else 'They'} returned {'; '.join(results)}."
    return {"role": "user", "content": f"{said} Answer my question with {'it' if one else 'them'}."}


def _message_param(message: ChatMessage, compatible: bool = False) -> ChatCompletionMessageParam:
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
    if all(_written(call.call_id) for call in message.tool_calls):
        said = ", ".join(f"{call.name}({call.arguments})" for call in message.tool_calls)
        return {"role": "assistant", "content": f"{message.content} I called {said}.".strip()}
    calls: list[ChatCompletionMessageFunctionToolCallParam] = [
        {
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in message.tool_calls
    ]
    if compatible and not message.content:  # llama-cpp-python's server refuses null
        return {"role": "assistant", "tool_calls": calls}
    # OpenAI's own replies carry null content when the model wrote nothing before its calls.
    return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
