"""The Realtime events handled without the SDK's generic parsing: the same events as the SDK
builds, and a malformed one still left to the SDK."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any, cast

from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    InputAudioBufferAppendEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioTranscriptDeltaEvent,
)

from voice_fsm.adapters.openai.realtime_wire import parse_event, send_audio

DELTA = {
    "type": "response.output_audio.delta",
    "event_id": "event_1",
    "response_id": "resp_1",
    "item_id": "item_1",
    "output_index": 0,
    "content_index": 0,
    "delta": base64.b64encode(b"\x01\x00" * 8).decode(),
}


def sdk_connection() -> Any:
    """What `parse_event` needs of a connection: the SDK's own parsing."""
    return SimpleNamespace(
        parse_event=lambda raw: AsyncRealtimeConnection.parse_event(cast(Any, None), raw)
    )


def test_an_audio_delta_is_the_event_the_sdk_builds() -> None:
    raw = json.dumps(DELTA).encode()
    event = parse_event(sdk_connection(), raw)
    assert isinstance(event, ResponseAudioDeltaEvent)
    assert event == AsyncRealtimeConnection.parse_event(cast(Any, None), raw)
    assert event.model_dump() == ResponseAudioDeltaEvent.model_validate(DELTA).model_dump()


def test_a_transcript_delta_is_the_event_the_sdk_builds() -> None:
    said = {**DELTA, "type": "response.output_audio_transcript.delta", "delta": "Paris "}
    raw = json.dumps(said).encode()
    event = parse_event(sdk_connection(), raw)
    assert isinstance(event, ResponseAudioTranscriptDeltaEvent)
    assert event == AsyncRealtimeConnection.parse_event(cast(Any, None), raw)


def test_other_events_and_malformed_deltas_are_left_to_the_sdk() -> None:
    seen: list[bytes] = []
    connection = SimpleNamespace(parse_event=lambda raw: seen.append(raw) or "by the sdk")
    done = json.dumps({"type": "response.done", "event_id": "e", "response": {}}).encode()
    bad = json.dumps({**DELTA, "delta": 5}).encode()
    short = json.dumps({k: v for k, v in DELTA.items() if k != "response_id"}).encode()
    assert [parse_event(connection, raw) for raw in (done, bad, short)] == ["by the sdk"] * 3
    assert seen == [done, bad, short]


async def test_appended_audio_is_the_event_the_sdk_sends() -> None:
    sent: list[str] = []

    async def send_raw(data: str) -> None:
        sent.append(data)

    audio = base64.b64encode(b"\x00\x01" * 480).decode()
    await send_audio(cast(Any, SimpleNamespace(send_raw=send_raw)), audio)
    event = InputAudioBufferAppendEvent.model_validate_json(sent[0])
    assert (event.type, event.audio) == ("input_audio_buffer.append", audio)
