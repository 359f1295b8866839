"""The Realtime events sent and received many times a turn, without the SDK's generic work.

A reply's audio comes as dozens of ``response.output_audio.delta`` events (and its
transcript as many ``response.output_audio_transcript.delta``), and a live
transcription sends ten ``input_audio_buffer.append`` events a second. The SDK builds each
received event by walking the whole union of server events and transforms each sent one
through its typed-dict machinery: about 100 and 150 µs of CPU each, most of a session's cost
under load (make loadtest). These two are handled directly, their fields checked here; every
other event still goes through the SDK."""

from __future__ import annotations

import json
from typing import Any

from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    RealtimeServerEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioTranscriptDeltaEvent,
)

AUDIO_DELTA = "response.output_audio.delta"
TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
_DELTAS: dict[str, type[ResponseAudioDeltaEvent | ResponseAudioTranscriptDeltaEvent]] = {
    AUDIO_DELTA: ResponseAudioDeltaEvent,
    TRANSCRIPT_DELTA: ResponseAudioTranscriptDeltaEvent,
}
_DELTA_FIELDS: dict[str, type] = {
    "content_index": int,
    "delta": str,
    "event_id": str,
    "item_id": str,
    "output_index": int,
    "response_id": str,
}


def parse_event(connection: AsyncRealtimeConnection, raw: bytes | str) -> RealtimeServerEvent:
    """The event in `raw`: a delta of a reply's audio or of its transcript whose fields have
    their types, built directly; anything else (or a delta not well formed) as the SDK builds it."""
    data: Any = json.loads(raw)
    model = _DELTAS.get(str(data.get("type"))) if isinstance(data, dict) else None
    if model is not None and all(isinstance(data.get(n), t) for n, t in _DELTA_FIELDS.items()):
        fields = {name: data[name] for name in _DELTA_FIELDS}
        return model.model_construct(type=data["type"], **fields)
    return connection.parse_event(raw)


async def recv_event(connection: AsyncRealtimeConnection) -> RealtimeServerEvent:
    """The next event from `connection` (as `connection.recv()`, cheaper for audio)."""
    return parse_event(connection, await connection.recv_bytes())


async def send_audio(connection: AsyncRealtimeConnection, audio_b64: str) -> None:
    """``input_audio_buffer.append`` with `audio_b64` (base64 PCM), as the SDK would send it."""
    await connection.send_raw(json.dumps({"type": "input_audio_buffer.append", "audio": audio_b64}))
