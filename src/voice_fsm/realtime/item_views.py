"""Conversation items between the session's history and the Realtime API's shapes: a history
item as the API shows it, and a created message item as the history's message (refused with an
`EventError` when it is not one voice-fsm can keep)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal, TypedDict

from openai.types.realtime import (
    ConversationItem,
    RealtimeConversationItemAssistantMessage,
    RealtimeConversationItemFunctionCall,
    RealtimeConversationItemFunctionCallOutput,
    RealtimeConversationItemSystemMessage,
    RealtimeConversationItemUserMessage,
)
from openai.types.realtime.realtime_conversation_item_assistant_message import (
    Content as AssistantContent,
)
from openai.types.realtime.realtime_conversation_item_system_message import (
    Content as SystemContent,
)
from openai.types.realtime.realtime_conversation_item_user_message import Content as UserContent

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.conversation import Item
from voice_fsm.realtime.wire import EventError

MAX_TEXT_CHARS = 20_000


class _Ids(TypedDict):
    id: str
    object: Literal["realtime.item"]


def not_found(item_id: str, param: str, event_id: str | None) -> EventError:
    return EventError(
        f"Invalid value: {item_id[:100]!r}. No conversation item with this id.",
        code="invalid_value",
        param=param,
        event_id=event_id,
    )


def realtime_item(item: Item) -> ConversationItem:
    """A history item as the Realtime API shows it."""
    message, common = item.message, _Ids(id=item.id, object="realtime.item")
    text = message.content
    if message.role == "tool":
        return RealtimeConversationItemFunctionCallOutput(
            type="function_call_output",
            call_id=message.tool_call_id or "",
            output=text,
            status="completed",
            **common,
        )
    if message.tool_calls:
        call = message.tool_calls[0]
        return RealtimeConversationItemFunctionCall(
            type="function_call",
            call_id=call.call_id,
            name=call.name,
            arguments=call.arguments,
            status="completed",
            **common,
        )
    if message.role == "user":
        audio = item.audio_ms is not None
        user = UserContent(type="input_audio", transcript=text) if audio else None
        return RealtimeConversationItemUserMessage(
            type="message",
            role="user",
            status="completed",
            content=[user or UserContent(type="input_text", text=text)],
            **common,
        )
    if message.role == "system":
        return RealtimeConversationItemSystemMessage(
            type="message",
            role="system",
            status="completed",
            content=[SystemContent(type="input_text", text=text)],
            **common,
        )
    spoken = AssistantContent(type="output_audio", transcript=text) if item.spoken else None
    return RealtimeConversationItemAssistantMessage(
        type="message",
        role="assistant",
        status="completed",
        content=[spoken or AssistantContent(type="output_text", text=text)],
        **common,
    )


def is_audio(item: RealtimeConversationItemUserMessage) -> bool:
    return any(part.type == "input_audio" for part in item.content)


def audio_of(item: RealtimeConversationItemUserMessage, event_id: str | None) -> bytes:
    if len(item.content) != 1 or not item.content[0].audio:
        raise EventError(
            "An input_audio item has one content part, with its audio.",
            code="invalid_value",
            param="item.content",
            event_id=event_id,
        )
    try:
        pcm = base64.b64decode(item.content[0].audio, validate=True)
    except (binascii.Error, ValueError):
        pcm = b"\0"
    if len(pcm) % 2:
        raise EventError(
            "The audio is not base64 of whole PCM16 samples.",
            code="invalid_value",
            param="item.content[0].audio",
            event_id=event_id,
        )
    return pcm


def message_of(item: Any, event_id: str | None) -> ChatMessage:
    """A message item as the history's message; raises EventError for what is not one."""
    role = getattr(item, "role", None)
    if item.type != "message" or role not in ("user", "system", "assistant"):
        raise EventError(
            f"Items of type {item.type!r} cannot be created here"
            + (
                " (a function_call_output answers a call the model made)."
                if "function" in item.type
                else "."
            ),
            code="unsupported_item_type",
            param="item.type",
            event_id=event_id,
        )
    wanted = ("output_text", "output_audio") if role == "assistant" else ("input_text",)
    parts = []
    for position, part in enumerate(item.content):
        if part.type not in wanted:
            raise EventError(
                f"A {role} message's content here is {' or '.join(wanted)}, not {part.type}.",
                code="unsupported_content_type",
                param=f"item.content[{position}].type",
                event_id=event_id,
            )
        parts.append(part.text or getattr(part, "transcript", None) or "")
    text = "\n".join(part for part in parts if part)
    if not text.strip() or len(text) > MAX_TEXT_CHARS:
        raise EventError(
            f"A message needs text, at most {MAX_TEXT_CHARS} characters.",
            code="invalid_value",
            param="item.content",
            event_id=event_id,
        )
    return ChatMessage(role, text)
