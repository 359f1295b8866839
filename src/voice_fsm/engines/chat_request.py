"""The body of ``POST /v1/chat/completions``, checked, and turned into what the language model
adapter takes (`ChatMessage`, `ToolSpec`).

The openai SDK's request types are TypedDicts for building requests, not for checking them,
so the subset the engine serves is declared here: text messages (string content or text
parts) of every role, function tools with their calls and results, ``stream`` with
``stream_options.include_usage``, ``tool_choice`` ``auto`` or ``none``, one choice. Sampling
options (``temperature``, ``max_completion_tokens``, ``reasoning_effort``, ...) are accepted
and left to the engine's settings (`VOICE_FSM_LOCAL__LLM_*`), as other fields it does not
know are ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voice_fsm.adapters.base import ChatMessage, ToolCall, ToolSpec
from voice_fsm.engines.api_errors import invalid

MAX_MESSAGES = 4096
MAX_TOOLS = 128


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class CalledFunction(_Body):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=256_000)


class ToolCallParam(_Body):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: CalledFunction


class MessageParam(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCallParam] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=256)


class FunctionParam(_Body):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolParam(_Body):
    type: Literal["function"]
    function: FunctionParam


class StreamOptions(_Body):
    include_usage: bool = False


class ChatRequest(_Body):
    model: str = Field(min_length=1, max_length=256)
    messages: list[MessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    tools: list[ToolParam] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none"] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)

    def chat_messages(self) -> list[ChatMessage]:
        return [_message(m, i) for i, m in enumerate(self.messages)]

    def tool_specs(self) -> list[ToolSpec]:
        if self.tool_choice == "none" or not self.tools:
            return []
        return [
            ToolSpec(t.function.name, t.function.description, t.function.parameters)
            for t in self.tools
        ]

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def _message(message: MessageParam, index: int) -> ChatMessage:
    content = message.content
    text = content if isinstance(content, str) else "".join(p.text for p in content or ())
    role = message.role
    if role == "tool":
        if not message.tool_call_id:
            raise invalid(
                f"messages[{index}].tool_call_id",
                f"Missing required parameter: 'messages[{index}].tool_call_id'.",
                code="missing_required_parameter",
            )
        return ChatMessage("tool", text, tool_call_id=message.tool_call_id)
    if role == "assistant":
        calls = tuple(
            ToolCall(call.id, call.function.name, call.function.arguments)
            for call in message.tool_calls or ()
        )
        return ChatMessage("assistant", text, tool_calls=calls)
    if content is None:
        raise invalid(
            f"messages[{index}].content",
            f"Missing required parameter: 'messages[{index}].content'.",
            code="missing_required_parameter",
        )
    return ChatMessage("system" if role == "developer" else role, text)
