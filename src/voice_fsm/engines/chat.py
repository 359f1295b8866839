"""``POST /v1/chat/completions`` on the embedded llama.cpp model: streamed as OpenAI streams
(``chat.completion.chunk`` events: the role, text deltas, each tool call as ``tool_calls``
deltas, the finish reason, the usage chunk when asked for, ``[DONE]``) or whole.

Every body is built from the openai SDK's own response types, so the wire format is theirs.
The adapter yields a tool call once its arguments are complete: it is streamed as OpenAI
streams a call's first piece (id, type, name, empty arguments) and then its arguments."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
)
from openai.types.chat import chat_completion as whole
from openai.types.chat import chat_completion_chunk as piece
from openai.types.chat.chat_completion_message_function_tool_call import Function
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from voice_fsm.adapters.base import ChatMessage, LanguageModel, ReplyEvent, ToolCall
from voice_fsm.engines.api_errors import sse_data
from voice_fsm.engines.bodies import read_json
from voice_fsm.engines.chat_request import ChatRequest
from voice_fsm.engines.loading import loaded
from voice_fsm.engines.streaming import collect, open_stream, server_sent

FinishReason = Literal["stop", "tool_calls"]


async def chat_completions(request: Request) -> Response:
    engines = loaded(request.app.state)
    body = await read_json(request, ChatRequest)
    engines.check_model("llm", body.model)
    messages = body.chat_messages()
    usage = not body.stream or body.include_usage
    # In a thread: a long conversation takes the tokenizer a while.
    prompt_tokens = await asyncio.to_thread(_count_tokens, engines.llm, messages) if usage else 0
    admission = request.app.state.metrics.admit("llm")
    events = engines.llm.reply(messages, tools=body.tool_specs())
    opened = await open_stream(request, admission, events, "language model")
    reply = Reply(body.model, prompt_tokens=prompt_tokens)
    if body.stream:
        return StreamingResponse(
            server_sent(opened, reply.chunks, lambda: reply.end(body.include_usage)),
            media_type="text/event-stream",
        )
    for event in await collect(opened):
        reply.add(event)
    return JSONResponse(reply.completion().model_dump(mode="json", exclude_unset=True))


@dataclass
class Reply:
    """One reply being built: its chunks as they stream, or the whole completion."""

    model: str
    prompt_tokens: int
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    pieces: int = 0
    started: bool = False

    def add(self, event: ReplyEvent) -> None:
        self.pieces += 1
        if isinstance(event, ToolCall):
            self.calls.append(event)
        else:
            self.text.append(event)

    @property
    def finish_reason(self) -> FinishReason:
        return "tool_calls" if self.calls else "stop"

    def chunks(self, event: ReplyEvent) -> Iterable[bytes]:
        """The chunks of one event, after the first chunk's role."""
        if not self.started:
            self.started = True
            yield self._chunk(piece.ChoiceDelta(role="assistant", content=""))
        self.add(event)
        if isinstance(event, str):
            if event:
                yield self._chunk(piece.ChoiceDelta(content=event))
            return
        index = len(self.calls) - 1
        opening = piece.ChoiceDeltaToolCall(
            index=index,
            id=event.call_id,
            type="function",
            function=piece.ChoiceDeltaToolCallFunction(name=event.name, arguments=""),
        )
        yield self._chunk(piece.ChoiceDelta(tool_calls=[opening]))
        arguments = piece.ChoiceDeltaToolCall(
            index=index, function=piece.ChoiceDeltaToolCallFunction(arguments=event.arguments)
        )
        yield self._chunk(piece.ChoiceDelta(tool_calls=[arguments]))

    def end(self, include_usage: bool) -> Iterable[bytes]:
        if not self.started:  # a reply of nothing still says who speaks
            self.started = True
            yield self._chunk(piece.ChoiceDelta(role="assistant", content=""))
        yield self._chunk(piece.ChoiceDelta(), finish_reason=self.finish_reason)
        if include_usage:
            usage = ChatCompletionChunk(
                id=self.id,
                object="chat.completion.chunk",
                created=self.created,
                model=self.model,
                choices=[],
                usage=self.usage(),
            )
            yield sse_data(usage.model_dump(mode="json", exclude_unset=True))
        yield sse_data("[DONE]")

    def completion(self) -> ChatCompletion:
        calls = [
            ChatCompletionMessageFunctionToolCall(
                id=call.call_id,
                type="function",
                function=Function(name=call.name, arguments=call.arguments),
            )
            for call in self.calls
        ]
        text = "".join(self.text)
        message = ChatCompletionMessage(
            role="assistant", content=text if text or not calls else None, refusal=None
        )
        if calls:  # left out, not null, when there are none (exclude_unset)
            message.tool_calls = list(calls)
        choice = whole.Choice(
            index=0, message=message, finish_reason=self.finish_reason, logprobs=None
        )
        return ChatCompletion(
            id=self.id,
            object="chat.completion",
            created=self.created,
            model=self.model,
            choices=[choice],
            usage=self.usage(),
        )

    def usage(self) -> CompletionUsage:
        return CompletionUsage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.pieces,
            total_tokens=self.prompt_tokens + self.pieces,
        )

    def _chunk(self, delta: piece.ChoiceDelta, finish_reason: FinishReason | None = None) -> bytes:
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=[
                piece.Choice(index=0, delta=delta, finish_reason=finish_reason, logprobs=None)
            ],
        )
        return sse_data(chunk.model_dump(mode="json", exclude_unset=True))


def _count_tokens(llm: LanguageModel, messages: list[ChatMessage]) -> int:
    """The messages' tokens by the model's own tokenizer (the chat template's few tokens per
    message and the engine's spoken examples not counted); 0 for a model without one."""
    count: Any = getattr(llm, "_count_tokens", None)
    if count is None:
        return 0
    return sum(int(count(message.content)) for message in messages)
