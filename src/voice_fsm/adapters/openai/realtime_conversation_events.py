"""What a speech-to-speech turn yields (`RealtimeConversation.respond`), and the session and
history items it is configured with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voice_fsm.adapters.base import ChatMessage, ToolCall, ToolSpec

PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}


@dataclass(frozen=True, slots=True)
class UserTranscript:
    """What the user said in the turn's audio, by the session's input transcription (a separate
    model: a rough guide to what the Realtime model heard). None: the transcription failed."""

    item_id: str
    text: str | None


@dataclass(frozen=True, slots=True)
class ReplyTranscriptDelta:
    """A piece of the reply's output transcript, alongside its audio."""

    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ReplyAudio:
    """PCM16 24 kHz mono of the reply; `item_id` is what `truncate` cuts after a barge-in."""

    item_id: str
    pcm: bytes


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The response is over: ``completed``, ``cancelled`` (`reason` ``client_cancelled`` or
    ``turn_detected``) or ``incomplete`` (``max_output_tokens``, ``content_filter``). A failed
    response raises instead. `transcript` is the whole output transcript, if there was one."""

    response_id: str
    status: str
    reason: str | None
    transcript: str | None


ConversationEvent = UserTranscript | ReplyTranscriptDelta | ReplyAudio | ToolCall | ReplyDone


def conversation_session(
    *,
    instructions: str,
    voice: str,
    tools: Sequence[ToolSpec],
    turn_detection: dict[str, Any] | None,
    transcription_model: str | None,
) -> dict[str, Any]:
    """The ``session`` of the ``session.update`` that configures a speech-to-speech session.

    With turn detection on, the server commits the user's speech but neither answers nor
    cancels by itself: each response is asked for, so the caller's state machine decides.
    """
    detection = turn_detection
    if detection is not None:
        detection = {**detection, "create_response": False, "interrupt_response": False}
    transcription = {"model": transcription_model} if transcription_model else None
    return {
        "type": "realtime",
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": PCM_FORMAT,
                "transcription": transcription,
                "turn_detection": detection,
            },
            "output": {"format": PCM_FORMAT, "voice": voice},
        },
        "tools": [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            }
            for tool in tools
        ],
        "tool_choice": "auto",
    }


def history_items(history: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Earlier exchanges as conversation items: user and assistant text (the Realtime API
    cannot be given assistant audio); system messages, tool calls and results are left out."""
    items: list[dict[str, Any]] = []
    for message in history:
        if message.role == "user" and message.content:
            part = {"type": "input_text", "text": message.content}
        elif message.role == "assistant" and message.content:
            part = {"type": "output_text", "text": message.content}
        else:
            continue
        items.append({"type": "message", "role": message.role, "content": [part]})
    return items
